package check

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The unit gives a drain time to finish: systemd waits TimeoutStopSec
// after SIGTERM before SIGKILL, which must exceed the node's -drain (the
// unit's, else presenced's default, read from presenced -h) plus the wait
// for the clients' closes. The process does not wait out -drain (its bye
// tells clients when to come back, and it exits within about 10 s): the
// bound is conservative, so that a longer close wait stays covered.
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
	if unit["KillSignal"] != "SIGTERM" {
		t.Errorf("KillSignal=%q: presenced drains on SIGTERM", unit["KillSignal"])
	}
	for _, k := range []string{"LimitNOFILE", "NoNewPrivileges", "ProtectSystem"} {
		if unit[k] == "" {
			t.Errorf("no %s", k)
		}
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
	if need := d + drainCloseWait + 5*time.Second; stop < need {
		t.Errorf("TimeoutStopSec %v < drain %v + close wait %v + 5 s to leave Redis", stop, d, drainCloseWait)
	}
}
