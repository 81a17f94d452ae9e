package redisbus

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestErrorOpsPrecreated: every op the package counts in
// presenced_redis_errors_total{op} is exported at 0 from the start, so
// that an alert on its rate sees 0, not "no data" (review6-final-b #10).
func TestErrorOpsPrecreated(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`errors\.WithLabelValues\("([a-z]+)"\)`)
	used := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			used[m[1]] = true
		}
	}
	if len(used) == 0 {
		t.Fatal("no op found in the sources")
	}
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "presenced_redis_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" {
					have[l.GetValue()] = true
				}
			}
		}
	}
	for op := range used {
		if !have[op] {
			t.Errorf("presenced_redis_errors_total{op=%q} not pre-created", op)
		}
	}
	for op := range have {
		if !used[op] {
			t.Errorf("presenced_redis_errors_total{op=%q} pre-created but never counted", op)
		}
	}
}
