package check

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The Grafana dashboard's parts that decide what a query shows.
type dashboard struct {
	Templating struct {
		List []struct {
			Name, Query, AllValue string
		}
	}
	Panels []struct {
		ID          int
		Title, Type string
		FieldConfig struct {
			Defaults struct {
				Unit string
			}
			Overrides []struct {
				Matcher struct {
					ID      string
					Options any
				}
				Properties []struct {
					ID    string
					Value any
				}
			}
		}
		Targets []struct {
			RefID string
			Expr  string
		}
	}
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("../grafana/presenced.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("presenced.json: %v", err)
	}
	return d
}

// A node down for the whole time range exported no presenced metric in
// it, so the instance variable (label_values of a presenced metric) does
// not list it: "All" must mean every instance (.*), not the listed ones,
// and a panel must count the targets that do not answer (up == 0).
func TestDashboardSeesNodesDownAllRange(t *testing.T) {
	d := loadDashboard(t)
	found := false
	for _, v := range d.Templating.List {
		if strings.HasPrefix(v.Query, "label_values(") && strings.Contains(v.Query, ", instance)") {
			found = true
			if v.AllValue != ".*" {
				t.Errorf(`variable %s: allValue %q: "All" then lists only instances that exported %s in the range, not nodes down all of it; want ".*"`, v.Name, v.AllValue, v.Query)
			}
		}
	}
	if !found {
		t.Error("no instance variable (label_values(..., instance)) found")
	}
	down := regexp.MustCompile(`\bup\{[^}]*\}\s*==\s*0\b`)
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			if down.MatchString(q.Expr) {
				return
			}
		}
	}
	t.Error("no panel counts the nodes that are down (up == 0): sum(up) cannot show a node down")
}

// A panel shows one unit per query: a query of bytes under a unit that
// is not bytes (or the reverse) needs an override of its own, by refId.
// Bytes are told by the metric names: a _bytes part (heap_inuse_bytes,
// bytes_sent_total, outbox_depth_bytes_bucket).
func TestDashboardUnits(t *testing.T) {
	isBytes := func(unit string) bool {
		switch unit {
		case "bytes", "decbytes", "Bps", "binBps", "decBps":
			return true
		}
		return false
	}
	bytesMetric := regexp.MustCompile(`\b[a-z_]*_bytes(_[a-z_]+)?\b`)
	for _, p := range loadDashboard(t).Panels {
		for _, q := range p.Targets {
			unit := p.FieldConfig.Defaults.Unit
			for _, o := range p.FieldConfig.Overrides {
				if o.Matcher.ID != "byFrameRefID" || o.Matcher.Options != q.RefID {
					continue
				}
				for _, prop := range o.Properties {
					if u, ok := prop.Value.(string); ok && prop.ID == "unit" {
						unit = u
					}
				}
			}
			if bytesMetric.MatchString(q.Expr) != isBytes(unit) {
				t.Errorf("panel %q query %s (%s) shown in unit %q: give it an override with a unit of its own", p.Title, q.RefID, q.Expr, unit)
			}
		}
	}
}
