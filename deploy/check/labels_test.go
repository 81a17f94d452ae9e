package check

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// targetLabels are added by Prometheus (the target, service discovery's
// relabelling in scrape.yml), not exported by presenced.
var targetLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true}

// webhookFlags makes a node send webhooks to a receiver that answers 204,
// so that the sender's metrics are registered (only when configured).
func webhookFlags(t *testing.T) []string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	secret := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secret, []byte("deploy-check-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"-webhook-url", srv.URL + "/hook", "-webhook-secret-file", secret}
}

var sampleLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// exportedLabelValues is, per metric and label, the values the samples
// carry (label name → value → true).
func exportedLabelValues(samples map[string]string) map[string]map[string]map[string]bool {
	out := map[string]map[string]map[string]bool{}
	for s := range samples {
		name, rest, _ := strings.Cut(s, "{")
		if out[name] == nil {
			out[name] = map[string]map[string]bool{}
		}
		for _, m := range sampleLabel.FindAllStringSubmatch(rest, -1) {
			if out[name][m[1]] == nil {
				out[name][m[1]] = map[string]bool{}
			}
			out[name][m[1]][m[2]] = true
		}
	}
	return out
}

// checkLabelValues fails for a label matcher that can select no exported
// series: an equality on a value no series has (reason="drained"), a
// regular expression one of whose alternatives matches none
// (how=~"prob|event"), a label the metric does not have. The counters
// presenced exports are pre-initialised for every label value, so a
// scrape shows them all.
func checkLabelValues(t *testing.T, ms []matcherUse, samples map[string]string) {
	t.Helper()
	values := exportedLabelValues(samples)
	var bad []string
	checked := 0
	for _, u := range ms {
		m := u.m
		if targetLabels[m.Name] || strings.Contains(m.Value, "$") || synthetic[u.metric] {
			continue
		}
		have := values[u.metric][m.Name]
		if m.Value == "" && (m.Type == labels.MatchEqual || m.Type == labels.MatchNotEqual) {
			continue // the label's absence or presence
		}
		checked++
		if len(have) == 0 {
			bad = append(bad, fmt.Sprintf("%s: %s{%s}: %s has no label %s", u.where, u.metric, m, u.metric, m.Name))
			continue
		}
		switch m.Type {
		case labels.MatchEqual:
			if !have[m.Value] {
				bad = append(bad, fmt.Sprintf("%s: %s{%s}: no series has %s=%q (exported: %s)", u.where, u.metric, m, m.Name, m.Value, keys(have)))
			}
		case labels.MatchRegexp:
			// Each alternative of the expression matches an exported value.
			for _, alt := range strings.Split(m.Value, "|") {
				re, err := regexp.Compile("^(?:" + alt + ")$")
				if err != nil {
					bad = append(bad, fmt.Sprintf("%s: %s{%s}: %v", u.where, u.metric, m, err))
					continue
				}
				found := false
				for v := range have {
					found = found || re.MatchString(v)
				}
				if !found {
					bad = append(bad, fmt.Sprintf("%s: %s{%s}: %q matches no exported %s (exported: %s)", u.where, u.metric, m, alt, m.Name, keys(have)))
				}
			}
		}
	}
	sort.Strings(bad)
	for _, b := range dedup(bad) {
		t.Error(b)
	}
	t.Logf("%d label matchers checked against the exported label values", checked)
}

func keys(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
