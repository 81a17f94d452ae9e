package check

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The unit gives a drain time to finish: systemd waits TimeoutStopSec
// after SIGTERM before SIGKILL, which must exceed the node's -drain (the
// unit's, else presenced's default, read from presenced -h) plus the wait
// for the clients' closes. The worst case is max(-drain, the close wait)
// (with Redis the node stays in the cluster until -drain has passed, so
// that the members of clients told to come back later stay held), 2 s to
// leave Redis and 5 s to stop the admin listener.
func TestUnitStopsAfterTheDrain(t *testing.T) {
	data, err := os.ReadFile("../presenced.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = v
		}
	}
	// Exact values: systemd ignores a value it cannot parse (a warning,
	// exit 0) and runs with the default, so "set" is not enough.
	for k, want := range map[string]string{
		"KillSignal":      "SIGTERM", // presenced drains on SIGTERM
		"KillMode":        "mixed",   // only the main process gets SIGTERM
		"DynamicUser":     "yes",     // unprivileged, no fixed account
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
	} {
		if unit[k] != want {
			t.Errorf("%s=%q, want %s", k, unit[k], want)
		}
	}
	// One fd per connection: a number (not infinity, which systemd caps at
	// fs.nr_open) holding the 1M-connection host and its other files.
	if n, err := strconv.ParseUint(unit["LimitNOFILE"], 10, 64); err != nil || n < 1_001_000 {
		t.Errorf("LimitNOFILE=%q: want a number of at least 1001000 (1M connections and the rest)", unit["LimitNOFILE"])
	}
	stop, err := time.ParseDuration(unit["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}

	drain := ""
	if m := regexp.MustCompile(`-drain[ =](\S+)`).FindStringSubmatch(unit["ExecStart"]); m != nil {
		drain = m[1]
	} else if m := regexp.MustCompile(`PRESENCED_DRAIN=(\S+)`).FindStringSubmatch(unit["Environment"]); m != nil {
		drain = m[1]
	} else {
		out, err := exec.Command(presencedBinary(t), "-h").CombinedOutput()
		if err != nil {
			t.Fatalf("presenced -h: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`(?m)^  -drain duration\n.*\(default (\S+)\)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("presenced -h names no default for -drain:\n%s", out)
		}
		drain = string(m[1])
	}
	d, err := time.ParseDuration(drain)
	if err != nil {
		t.Fatalf("-drain %q: %v", drain, err)
	}
	if need := max(d, drainCloseWait) + stopAfterDrain; stop < need {
		t.Errorf("TimeoutStopSec %v < max(drain %v, close wait %v) + %v (leave Redis, stop the admin listener)", stop, d, drainCloseWait, stopAfterDrain)
	}
}
