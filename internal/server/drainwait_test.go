package server

import (
	"os"
	"regexp"
	"testing"
	"time"
)

// TestDrainCloseWaitCopy: deploy/check (a separate module) bounds the
// stop time with its own copy of drainCloseWait; it must stay equal.
func TestDrainCloseWaitCopy(t *testing.T) {
	b, err := os.ReadFile("../../deploy/check/k8s_test.go")
	if err != nil {
		t.Skipf("deploy/check not here: %v", err)
	}
	m := regexp.MustCompile(`const drainCloseWait = (\d+) \* time\.Second`).FindSubmatch(b)
	if m == nil {
		t.Fatal("deploy/check/k8s_test.go defines no `const drainCloseWait = N * time.Second`")
	}
	if got := string(m[1]); got+"s" != drainCloseWait.String() || drainCloseWait%time.Second != 0 {
		t.Errorf("deploy/check's drainCloseWait is %s s, internal/server's %v: change both", got, drainCloseWait)
	}
}
