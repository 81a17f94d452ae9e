package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// packageDefaults is, for every flag, its default as the package owning the
// setting defines it: what server.New does with the zero value of the field.
func packageDefaults() map[string]string {
	d := func(v time.Duration) string { return v.String() }
	return map[string]string{
		"addr":                         poller.DefaultAddr,
		"admin-addr":                   server.DefaultAdminAddr,
		"admin-token-file":             "", // the API answers 403
		"engine":                       poller.DefaultEngine,
		"allowed-origins":              "", // every origin
		"max-message":                  strconv.Itoa(poller.DefaultMaxMessage),
		"max-conns":                    "0", // no cap
		"max-conns-per-ip":             "0", // no cap
		"outbox":                       strconv.Itoa(poller.DefaultOutbox),
		"handshake-timeout":            d(poller.DefaultHandshakeTimeout),
		"demo":                         "false",
		"log-level":                    slog.LevelInfo.String(),        // the binary's own
		"gc-percent":                   strconv.Itoa(defaultGCPercent), // the binary's own: the process owns the runtime
		"node":                         "",                             // random
		"hb-interval":                  d(presence.DefaultHeartbeatInterval),
		"hb-timeout":                   d(presence.DefaultHeartbeatTimeout),
		"hello-timeout":                d(presence.DefaultHelloTimeout),
		"tick":                         d(presence.DefaultTick),
		"leave-grace":                  d(presence.DefaultLeaveGrace),
		"typing-ttl":                   d(presence.DefaultTypingTTL),
		"list-limit":                   strconv.Itoa(presence.DefaultListLimit),
		"max-rooms":                    strconv.Itoa(presence.DefaultMaxRooms),
		"slow-timeout":                 d(presence.DefaultSlowTimeout),
		"auth-grace":                   d(presence.DefaultAuthGrace),
		"drain":                        d(server.DefaultDrain),
		"insecure":                     "false",
		"jwt-secret":                   "",
		"jwt-secret-file":              "",
		"jwt-public-key":               "",
		"jwt-issuer":                   "", // not checked
		"jwt-audience":                 "", // not checked
		"jwt-leeway":                   d(auth.DefaultLeeway),
		"redis":                        "", // a single node
		"redis-cluster":                "false",
		"redis-sentinel-master":        "",
		"redis-password-file":          "",
		"redis-sentinel-password-file": "",
		"redis-prefix":                 redisbus.DefaultPrefix,
		"node-ttl":                     d(redisbus.DefaultNodeTTL),
		"redis-no-keyspace-events":     "false",
		"ready-needs-redis":            "false",
		"webhook-url":                  "", // no webhooks
		"webhook-secret-file":          "",
	}
}

// TestRegressFlagDefaultsArePackageDefaults: every flag's default is the
// one of the package that owns the setting, so that the binary and a
// library user of server.New with a zero Config get the same server.
func TestRegressFlagDefaultsArePackageDefaults(t *testing.T) {
	want := packageDefaults()
	var o options
	var seen []string
	newFlagSet(&o).VisitAll(func(f *flag.Flag) {
		seen = append(seen, f.Name)
		def, ok := want[f.Name]
		switch {
		case !ok:
			t.Errorf("-%s: no package default known to this test: add it to packageDefaults", f.Name)
		case f.DefValue != def:
			t.Errorf("-%s: default %q, want the package's %q", f.Name, f.DefValue, def)
		}
	})
	for name := range want {
		if !slices.Contains(seen, name) {
			t.Errorf("packageDefaults has -%s, which is not a flag", name)
		}
	}
}

// notInProtocol are the flags that docs/protocol.md's settings table leaves
// out: they change nothing a client sees (the Redis ones: README.md and
// docs/cluster.md have them).
var notInProtocol = []string{"admin-addr", "admin-token-file", "engine", "demo", "log-level", "gc-percent", "jwt-secret", "jwt-secret-file", "jwt-public-key",
	"redis", "redis-cluster", "redis-sentinel-master", "redis-password-file", "redis-sentinel-password-file", "redis-prefix", "node-ttl", "redis-no-keyspace-events", "ready-needs-redis",
	"webhook-url", "webhook-secret-file"}

// TestDocsDefaults: the tables of defaults in README.md and
// docs/protocol.md say what the code does. The flag set's DefValue is the
// truth for the flags (TestRegressFlagDefaultsArePackageDefaults ties it to
// the packages); the fixed values without a flag are checked against the
// packages' constants.
func TestDocsDefaults(t *testing.T) {
	var o options
	fs := newFlagSet(&o)

	t.Run("README.md", func(t *testing.T) {
		tbl := findTable(t, readDoc(t, "../../README.md"), "flag", "default")
		checkFlagTable(t, fs, tbl, nil)
	})
	protocol := readDoc(t, "../../docs/protocol.md")
	t.Run("docs/protocol.md/settings", func(t *testing.T) {
		tbl := findTable(t, protocol, "flag", "environment", "default")
		checkFlagTable(t, fs, tbl, notInProtocol)
	})
	t.Run("docs/protocol.md/fixed", func(t *testing.T) {
		tbl := findTable(t, protocol, "what", "value")
		spell := func(d time.Duration) string { // "60 s", "100 ms"
			if d%time.Second == 0 {
				return fmt.Sprintf("%d s", d/time.Second)
			}
			return fmt.Sprintf("%d ms", d/time.Millisecond)
		}
		outbox, err := strconv.Atoi(fs.Lookup("outbox").DefValue)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"`refresh` lead time (`RefreshBefore`)": spell(presence.DefaultRefreshBefore) + " before `exp`",
			"rate limit": fmt.Sprintf("%d commands/s, burst %d; 4029 after about %d s at more than %d/s",
				presence.DefaultRate, presence.DefaultBurst, presence.DefaultFloodSeconds, 2*presence.DefaultRate),
			// internal/server's syncBudget: half the outbox.
			"sync budget": fmt.Sprintf("half of `-outbox` (%d KiB by default)", outbox/2>>10),
			"resume history": fmt.Sprintf("%d versions per room; versions older than %s dropped when the room next changes, or within %g s in an idle room",
				presence.DefaultHistory, spell(presence.DefaultHistoryAge), (presence.DefaultHistoryAge / 8).Seconds()),
			"upgrade request size":   fmt.Sprintf("%d KiB (then 431)", poller.DefaultMaxHeaderBytes>>10),
			"closing handshake wait": spell(poller.DefaultCloseTimeout),
			"timer resolution":       "about " + spell(poller.DefaultTick),
			// Not a setting: a limit of the protocol (presence's maxTyping).
			"typing list": "at most 10 users",
		}
		for _, row := range tbl.rows {
			what, value := row[tbl.col("what")], row[tbl.col("value")]
			w, ok := want[what]
			switch {
			case !ok:
				t.Errorf("row %q: no check for it here: add one", what)
			case value != w:
				t.Errorf("row %q: %q, want %q", what, value, w)
			}
			delete(want, what)
		}
		for what := range want {
			t.Errorf("no row %q", what)
		}
	})
}

// table is a markdown table: its header cells and rows of cells, trimmed.
type table struct {
	header []string
	rows   [][]string
}

func (tb table) col(name string) int { return slices.Index(tb.header, name) }

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// findTable returns the one table of doc whose header has every column of
// cols.
func findTable(t *testing.T, doc string, cols ...string) table {
	t.Helper()
	var found []table
	var cur *table
	for line := range strings.Lines(doc) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			cur = nil
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case cur == nil:
			found = append(found, table{header: cells})
			cur = &found[len(found)-1]
		case strings.Trim(line, "|-: ") == "": // the separator row
		default:
			if len(cells) != len(cur.header) {
				t.Fatalf("row %q has %d cells, its table %d", line, len(cells), len(cur.header))
			}
			cur.rows = append(cur.rows, cells)
		}
	}
	var match []table
	for _, tb := range found {
		if !slices.ContainsFunc(cols, func(c string) bool { return tb.col(c) < 0 }) {
			match = append(match, tb)
		}
	}
	if len(match) != 1 {
		t.Fatalf("%d tables with the columns %q, want 1", len(match), cols)
	}
	return match[0]
}

var (
	codeSpan = regexp.MustCompile("`([^`]*)`")
	atLeast  = regexp.MustCompile(`at least (\d+)`)
)

// codeSpans lists the `code` spans of a cell.
func codeSpans(cell string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// checkFlagTable checks a table with a flag and a default column (and
// maybe an environment column) against fs: every flag but those in skip
// has exactly one row; the defaults of a row's flags are, in order, its
// default cell's code spans, or, without any, empty or false ("none",
// "off", "random"); the environment cell names each flag's variable; an
// "at least N" is the flag's floor.
func checkFlagTable(t *testing.T, fs *flag.FlagSet, tbl table, skip []string) {
	t.Helper()
	floors := map[string]int{"max-message": minMaxMessage, "outbox": minOutbox, "node-ttl": int(minNodeTTL / time.Millisecond)}
	rows := map[string]int{}
	for _, row := range tbl.rows {
		var names []string
		for _, s := range codeSpans(row[tbl.col("flag")]) {
			names = append(names, strings.TrimPrefix(s, "-"))
		}
		defs := codeSpans(row[tbl.col("default")])
		if len(defs) > 0 && len(defs) != len(names) {
			t.Errorf("row %v: %d flags and %d defaults", names, len(names), len(defs))
			continue
		}
		if e := tbl.col("environment"); e >= 0 {
			var want []string
			for _, n := range names {
				want = append(want, envName(n))
			}
			if got := codeSpans(row[e]); !slices.Equal(got, want) {
				t.Errorf("row %v: environment %q, want %q", names, got, want)
			}
		}
		for i, name := range names {
			rows[name]++
			f := fs.Lookup(name)
			if f == nil {
				t.Errorf("row -%s: no such flag", name)
				continue
			}
			if len(defs) == 0 {
				if f.DefValue != "" && f.DefValue != "false" {
					t.Errorf("-%s: documented as %q, with no `code` value, but its default is %q", name, row[tbl.col("default")], f.DefValue)
				}
				continue
			}
			// The documented value, set on a flag set of its own, must read
			// back as the default: 65536 and 64KiB, 1m and 60s compare by value.
			var o options
			doc := newFlagSet(&o)
			if err := doc.Set(name, defs[i]); err != nil {
				t.Errorf("-%s: documented default %q: %v", name, defs[i], err)
			} else if got := doc.Lookup(name).Value.String(); got != f.DefValue {
				t.Errorf("-%s: documented default %q, but it is %q", name, defs[i], f.DefValue)
			}
		}
		if m := atLeast.FindStringSubmatch(strings.Join(row, " ")); m != nil {
			for _, name := range names {
				if floor, ok := floors[name]; !ok || strconv.Itoa(floor) != m[1] {
					t.Errorf("-%s: documented floor %s, want %d (0: none)", name, m[1], floor)
				}
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		switch n := rows[f.Name]; {
		case slices.Contains(skip, f.Name):
			if n != 0 {
				t.Errorf("-%s is documented, yet this test skips it", f.Name)
			}
		case n != 1:
			t.Errorf("-%s: %d rows, want 1", f.Name, n)
		}
	})
}
