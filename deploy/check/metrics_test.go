package check

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// synthetic are series Prometheus itself adds to every target.
var synthetic = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

// uses is what the alerts or the dashboard select: metric names, with
// where, and the label matchers on them.
type uses struct {
	names    map[string][]string
	matchers []matcherUse
}

// matcherUse is one label matcher of a selector of metric, at where.
type matcherUse struct {
	metric, where string
	m             *labels.Matcher
}

func newUses() *uses { return &uses{names: map[string][]string{}} }

// exprMetrics adds the metric names that expr selects, and their label
// matchers, to used, under where.
func exprMetrics(t *testing.T, used *uses, where, expr string) {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			t.Errorf("%s: %q selects no metric by name", where, expr)
			return nil
		}
		used.names[name] = append(used.names[name], where)
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName {
				used.matchers = append(used.matchers, matcherUse{name, where, m})
			}
		}
		return nil
	})
}

// alertMetrics is every metric the alert rules select, with the alerts.
func alertMetrics(t *testing.T) *uses {
	t.Helper()
	groups, errs := loadRules()
	if len(errs) > 0 {
		t.Fatalf("alerts.yml: %v", errs)
	}
	used := newUses()
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			exprMetrics(t, used, "alerts.yml "+r.Alert+r.Record, r.Expr)
		}
	}
	return used
}

// grafanaVars are the dashboard's variables, replaced by a value of
// the same kind so that its queries parse as PromQL.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// dashboardMetrics is every metric the dashboard's panels and variables
// query, with the panel titles.
func dashboardMetrics(t *testing.T) *uses {
	t.Helper()
	data, err := os.ReadFile("../grafana/presenced.json")
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("presenced.json: %v", err)
	}
	used := newUses()
	labelValues := regexp.MustCompile(`^label_values\((.+), *\w+\)$`)
	var walk func(v any, title string)
	walk = func(v any, title string) {
		switch v := v.(type) {
		case map[string]any:
			if s, ok := v["title"].(string); ok {
				title = s
			}
			if s, ok := v["name"].(string); ok && v["type"] == "query" {
				title = "variable " + s
			}
			for k, x := range v {
				q, isString := x.(string)
				switch {
				case isString && k == "expr":
					exprMetrics(t, used, "presenced.json "+title, grafanaVars.Replace(q))
				case isString && k == "query" && strings.HasPrefix(q, "label_values("):
					m := labelValues.FindStringSubmatch(q)
					if m == nil {
						t.Errorf("presenced.json %s: %q", title, q)
						continue
					}
					exprMetrics(t, used, "presenced.json "+title, m[1])
				default:
					walk(x, title)
				}
			}
		case []any:
			for _, x := range v {
				walk(x, title)
			}
		}
	}
	walk(d, "")
	if len(used.names) == 0 {
		t.Fatal("presenced.json queries no metric")
	}
	return used
}

// A node with -redis, against a redis-server of its own, and webhooks
// (-webhook-url to a receiver that answers 204) exports every metric that
// the alerts and the dashboard use, with the label values they match.
// Redis is stopped before the second scrape, so the node's Redis errors
// (created on the first failure) and presenced_redis_up 0 show up, as
// PresencedRedisDown needs.
func TestUsedMetricsAreExported(t *testing.T) {
	used := alertMetrics(t)
	dash := dashboardMetrics(t)
	for name, where := range dash.names {
		used.names[name] = append(used.names[name], where...)
	}
	used.matchers = append(used.matchers, dash.matchers...)

	redisURL, stopRedis := startRedis(t)
	base := startPresenced(t, append([]string{"-redis", redisURL, "-node", "check0",
		"-node-ttl", "1s", "-ready-needs-redis"}, webhookFlags(t)...)...)
	samples := scrape(t, base)
	exported := metricNames(samples)
	stopRedis()
	waitFor(t, 20*time.Second, "presenced_redis_up 0 and presenced_redis_errors_total after Redis stopped", func() bool {
		s := scrape(t, base)
		if s["presenced_redis_up"] != "0" {
			return false
		}
		for k, v := range s {
			samples[k] = v
		}
		for k := range metricNames(s) {
			exported[k] = true
		}
		return exported["presenced_redis_errors_total"]
	})

	var missing []string
	for name, where := range used.names {
		if !exported[name] && !synthetic[name] {
			missing = append(missing, fmt.Sprintf("%s (used by %s)", name, strings.Join(dedup(where), ", ")))
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("not exported by presenced: %s", m)
	}
	checkLabelValues(t, used.matchers, samples)
	var unused []string
	for name := range exported {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "presenced_") && used.names[name] == nil && used.names[base+"_bucket"] == nil {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	if len(missing) == 0 {
		t.Logf("%d metrics used, all exported; presenced metrics on no panel and in no alert: %v", len(used.names), unused)
	}
}

// A single node (no -redis, no webhooks) exports the node-local metrics
// the alerts use, without the bus's and the webhook sender's.
func TestSingleNodeExportsLocalMetrics(t *testing.T) {
	used := alertMetrics(t)
	exported := metricNames(scrape(t, startPresenced(t)))
	for name := range used.names {
		if synthetic[name] || strings.HasPrefix(name, "presenced_bus_") || strings.HasPrefix(name, "presenced_webhook_") ||
			strings.HasPrefix(name, "presenced_redis_") || strings.HasPrefix(name, "presenced_cluster_") {
			continue
		}
		if !exported[name] {
			t.Errorf("a single node does not export %s", name)
		}
	}
}

func dedup(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}
