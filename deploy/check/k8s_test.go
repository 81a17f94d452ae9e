package check

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// drainCloseWait is what a drain waits for the clients' closes after the
// -drain window has been announced: a copy of drainCloseWait in
// internal/server/server.go (this module cannot import it), kept equal by
// internal/server's TestDrainCloseWaitCopy.
const drainCloseWait = 3 * time.Second

// stopAfterDrain bounds what a stop takes once the drain window and the
// close wait are over: leaving Redis (internal/server busLeaveTimeout, 2 s)
// and stopping the admin listener (Config.AdminShutdownTimeout, 5 s).
const stopAfterDrain = 7 * time.Second

// perConnBytes is the memory a pod's limit must hold per connection: about
// 1 KB of process and 4 KB of kernel memory (deploy/README.md, sizing),
// twice that for bursts.
const perConnBytes = 2 * 5 * 1024

// manifests is every object of deploy/k8s, strictly decoded: a field the
// k8s.io/api types do not have (a typo, a wrong indentation) fails.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	pdbs        map[string]*policyv1.PodDisruptionBudget
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	m := manifests{
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
	}
	files, err := filepath.Glob("../k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitYAML(data) {
			where := fmt.Sprintf("%s document %d", f, i+1)
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj interface{ GetName() string }
			switch head.APIVersion + " " + head.Kind {
			case "apps/v1 Deployment":
				d := &appsv1.Deployment{}
				m.deployments[strictName(t, where, doc, d)] = d
				obj = d
			case "v1 Service":
				s := &corev1.Service{}
				m.services[strictName(t, where, doc, s)] = s
				obj = s
			case "policy/v1 PodDisruptionBudget":
				p := &policyv1.PodDisruptionBudget{}
				m.pdbs[strictName(t, where, doc, p)] = p
				obj = p
			default:
				t.Fatalf("%s: %s %s is not checked: add it to deploy/check", where, head.APIVersion, head.Kind)
			}
			if obj.GetName() == "" {
				t.Errorf("%s: no metadata.name", where)
			}
		}
	}
	return m
}

// strictName decodes doc into obj, rejecting unknown and duplicate fields.
func strictName(t *testing.T, where string, doc []byte, obj interface{ GetName() string }) string {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return obj.GetName()
}

// splitYAML cuts a multi-document file on its "---" lines.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(s, "")
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	if _, ok := m.deployments["presenced"]; !ok {
		t.Error("no Deployment presenced")
	}
	if _, ok := m.services["presenced"]; !ok {
		t.Error("no Service presenced")
	}
	if _, ok := m.pdbs["presenced"]; !ok {
		t.Error("no PodDisruptionBudget presenced")
	}
	if _, ok := m.deployments["presenced-redis"]; !ok {
		t.Error("no Deployment presenced-redis (the dev Redis)")
	}
}

// A field that is not in the types must fail: the check is not vacuous.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	doc := []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selectr: {}\n")
	if err := yaml.UnmarshalStrict(doc, &corev1.Service{}); err == nil {
		t.Fatal("a misspelt field decoded without error")
	}
}

func TestEveryContainerHasResources(t *testing.T) {
	for name, d := range loadManifests(t).deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			r := c.Resources
			if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() {
				t.Errorf("%s/%s: no cpu and memory requests", name, c.Name)
			}
			if r.Limits.Memory().IsZero() {
				t.Errorf("%s/%s: no memory limit", name, c.Name)
			}
		}
	}
}

func TestPresencedDeployment(t *testing.T) {
	m := loadManifests(t)
	d := m.deployments["presenced"]
	if d == nil {
		t.Fatal("no Deployment presenced")
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	admin := portOf(t, "PRESENCED_ADMIN_ADDR", env["PRESENCED_ADMIN_ADDR"])
	if ports["admin"] != admin {
		t.Errorf("container port admin is %d, PRESENCED_ADMIN_ADDR listens on %d", ports["admin"], admin)
	}
	if ws := portOf(t, "PRESENCED_ADDR", env["PRESENCED_ADDR"]); ports["ws"] != ws {
		t.Errorf("container port ws is %d, PRESENCED_ADDR listens on %d", ports["ws"], ws)
	}

	probe := func(what string, p *corev1.Probe, path string) {
		switch {
		case p == nil || p.HTTPGet == nil:
			t.Errorf("%s: no httpGet probe", what)
		case p.HTTPGet.Path != path:
			t.Errorf("%s: path %q, want %q", what, p.HTTPGet.Path, path)
		case p.HTTPGet.Port != intstr.FromString("admin") && p.HTTPGet.Port != intstr.FromInt32(admin):
			t.Errorf("%s: port %s, want the admin port", what, p.HTTPGet.Port.String())
		}
	}
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	probe("livenessProbe", c.LivenessProbe, "/healthz")

	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		t.Fatal("no preStop hook: connections arrive after SIGTERM closed the listener")
	}
	var preStop time.Duration
	switch h := c.Lifecycle.PreStop; {
	case h.Sleep != nil:
		preStop = time.Duration(h.Sleep.Seconds) * time.Second
	default:
		t.Errorf("preStop is not a sleep (the image has no shell): %+v", h)
	}
	drain, err := time.ParseDuration(env["PRESENCED_DRAIN"])
	if err != nil {
		t.Fatalf("PRESENCED_DRAIN: %v", err)
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds (the default 30 s may be shorter than the drain)")
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if need := preStop + max(drain, drainCloseWait) + stopAfterDrain; grace < need {
		t.Errorf("terminationGracePeriodSeconds %v < preStop %v + max(drain %v, close wait %v) + %v (leave Redis, stop the admin listener)", grace, preStop, drain, drainCloseWait, stopAfterDrain)
	}

	// A rollout waits for the drained clients to reconnect before the
	// next old pod drains.
	if min := time.Duration(d.Spec.MinReadySeconds) * time.Second; min < drain {
		t.Errorf("minReadySeconds %v < PRESENCED_DRAIN %v: the next pod drains while the last one's clients reconnect", min, drain)
	}
	// The pod's memory limit holds PRESENCED_MAX_CONNS connections at
	// 2 x 5 KB each (process and kernel memory, with burst headroom):
	// without the cap the pod is OOM-killed, with no drain.
	maxConns, err := strconv.Atoi(env["PRESENCED_MAX_CONNS"])
	if err != nil || maxConns <= 0 {
		t.Errorf("PRESENCED_MAX_CONNS=%q: want a cap sized to the memory limit", env["PRESENCED_MAX_CONNS"])
	} else if mem := c.Resources.Limits.Memory(); mem.IsZero() || int64(maxConns)*perConnBytes > mem.Value() {
		t.Errorf("PRESENCED_MAX_CONNS %d x %d B > limits.memory %s", maxConns, perConnBytes, mem)
	}

	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("container securityContext: want allowPrivilegeEscalation false, readOnlyRootFilesystem true")
	}
	if ps := spec.SecurityContext; ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
		t.Error("pod securityContext: want runAsNonRoot")
	}

	// The Service and the PodDisruptionBudget: k8s_refs_test.go, for
	// every object.
}

func portOf(t *testing.T, name, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, addr, err)
	}
	return int32(n)
}
