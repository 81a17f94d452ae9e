package check

import (
	"fmt"
	"sort"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// What the API server or the cluster would refuse or silently break, for
// every object of every file of deploy/k8s (not only presenced's): a
// Deployment whose selector does not match its pod template (rejected),
// a Service that selects no pod or points at a port no selected
// container has (no endpoints), a PodDisruptionBudget that selects no
// pod or allows no disruption (every kubectl drain of a node blocks).

// podSelector converts a LabelSelector; nil or empty selects nothing here.
func podSelector(t *testing.T, where string, s *metav1.LabelSelector) labels.Selector {
	t.Helper()
	if s == nil || len(s.MatchLabels)+len(s.MatchExpressions) == 0 {
		t.Errorf("%s: no selector", where)
		return labels.Nothing()
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Errorf("%s: selector: %v", where, err)
		return labels.Nothing()
	}
	return sel
}

func TestEveryDeploymentSelectsItsPods(t *testing.T) {
	m := loadManifests(t)
	for _, name := range sortedKeys(m.deployments) {
		d := m.deployments[name]
		sel := podSelector(t, "Deployment "+name, d.Spec.Selector)
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Deployment %s: selector %v does not match its template's labels %v (the API server rejects it)",
				name, sel, d.Spec.Template.Labels)
		}
	}
}

// selected is the Deployments whose pods sel matches.
func selected(m manifests, sel labels.Selector) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, name := range sortedKeys(m.deployments) {
		if d := m.deployments[name]; sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

func TestEveryServiceReachesAPod(t *testing.T) {
	m := loadManifests(t)
	for _, name := range sortedKeys(m.services) {
		s := m.services[name]
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s: no selector", name)
			continue
		}
		ds := selected(m, labels.SelectorFromSet(s.Spec.Selector))
		if len(ds) == 0 {
			t.Errorf("Service %s: selector %v matches the pods of no Deployment in deploy/k8s", name, s.Spec.Selector)
			continue
		}
		if len(s.Spec.Ports) == 0 {
			t.Errorf("Service %s: no ports", name)
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port) // the default: the same number
			}
			for _, d := range ds {
				if !hasPort(d.Spec.Template.Spec.Containers, target, p.Protocol) {
					t.Errorf("Service %s port %s: targetPort %s is no container port of Deployment %s",
						name, p.Name, target.String(), d.Name)
				}
			}
		}
	}
}

// hasPort says whether a container exposes target (a name or a number)
// with protocol (TCP when empty).
func hasPort(cs []corev1.Container, target intstr.IntOrString, protocol corev1.Protocol) bool {
	if protocol == "" {
		protocol = corev1.ProtocolTCP
	}
	for _, c := range cs {
		for _, cp := range c.Ports {
			proto := cp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			if proto != protocol {
				continue
			}
			if target.Type == intstr.String && cp.Name == target.StrVal ||
				target.Type == intstr.Int && cp.ContainerPort == target.IntVal {
				return true
			}
		}
	}
	return false
}

func TestEveryPodDisruptionBudgetAllowsADisruption(t *testing.T) {
	m := loadManifests(t)
	for _, name := range sortedKeys(m.pdbs) {
		p := m.pdbs[name]
		where := "PodDisruptionBudget " + name
		ds := selected(m, podSelector(t, where, p.Spec.Selector))
		if len(ds) == 0 {
			t.Errorf("%s: selects the pods of no Deployment in deploy/k8s", where)
			continue
		}
		replicas := 0
		for _, d := range ds {
			r := int32(1)
			if d.Spec.Replicas != nil {
				r = *d.Spec.Replicas
			}
			replicas += int(r)
		}
		allowed, err := disruptionsAllowed(p.Spec.MaxUnavailable, p.Spec.MinAvailable, replicas)
		if err != nil {
			t.Errorf("%s: %v", where, err)
		} else if allowed < 1 {
			t.Errorf("%s: allows %d disruptions of %d pods: every kubectl drain of a node with one blocks", where, allowed, replicas)
		}
	}
}

// disruptionsAllowed is how many of replicas healthy pods a budget lets go
// at once, as the disruption controller computes it (maxUnavailable
// percentages round up, minAvailable ones up too).
func disruptionsAllowed(maxUnavailable, minAvailable *intstr.IntOrString, replicas int) (int, error) {
	switch {
	case maxUnavailable != nil && minAvailable != nil:
		return 0, fmt.Errorf("both maxUnavailable and minAvailable (the API server rejects it)")
	case maxUnavailable != nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(maxUnavailable, replicas, true)
		return min(v, replicas), err
	case minAvailable != nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(minAvailable, replicas, true)
		return max(replicas-v, 0), err
	}
	return 0, fmt.Errorf("neither maxUnavailable nor minAvailable")
}

// The arithmetic is the controller's: the check is not vacuous.
func TestDisruptionsAllowed(t *testing.T) {
	p := func(s string) *intstr.IntOrString { v := intstr.Parse(s); return &v }
	for _, c := range []struct {
		max, min *intstr.IntOrString
		want     int
	}{
		{p("1"), nil, 1}, {p("0"), nil, 0}, {p("34%"), nil, 2}, {p("0%"), nil, 0},
		{nil, p("2"), 1}, {nil, p("3"), 0}, {nil, p("100%"), 0}, {nil, p("50%"), 1},
	} {
		got, err := disruptionsAllowed(c.max, c.min, 3)
		if err != nil || got != c.want {
			t.Errorf("maxUnavailable %v minAvailable %v of 3: %d %v, want %d", c.max, c.min, got, err, c.want)
		}
	}
	if _, err := disruptionsAllowed(nil, nil, 3); err == nil {
		t.Error("a budget with neither field passed")
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
