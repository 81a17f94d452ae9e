package main

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// argValue returns the value after flag in args.
func argValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("%s missing in %q", flag, args)
	}
	return args[i+1]
}

// TestReadyTimeoutPassed checks that presence-load is told to wait for
// ready at least as long as the harness does: its own default (2 min)
// would end the long fills first.
func TestReadyTimeoutPassed(t *testing.T) {
	h := &harness{fanoutRate: 100, fanoutDuration: 20 * time.Second, changers: 10}
	check := func(name string, args []string, harness time.Duration) {
		t.Helper()
		got, err := time.ParseDuration(argValue(t, args, "-ready-timeout"))
		if err != nil {
			t.Fatal(err)
		}
		if got != harness+readyMargin {
			t.Errorf("%s: -ready-timeout %v, want the harness's %v + %v", name, got, harness, readyMargin)
		}
	}
	for _, n := range []int{1000, 19000} {
		s := &server{name: presencedEpoll, url: "ws://x/ws"}
		check("idle "+strconv.Itoa(n), h.loadArgs(s, "idle", n, n/15, readyTimeout(n)), readyTimeout(n))
	}
	cases := []struct {
		server string
		ramp   int
		want   time.Duration
	}{
		{presencedEpoll, 0, readyTimeout(5000)},
		{centrifugoName, 0, readyTimeout(5000) + 250*time.Second},
		{baselineName, 0, readyTimeout(5000) + 250*time.Second},
		{baselineName, 20, 2*time.Minute + 250*time.Second}, // RESULTS.md's -baseline-ramp 20
	}
	for _, c := range cases {
		h.baselineRamp = c.ramp
		args, timeout := h.fanoutArgs(&server{name: c.server, url: "ws://x/ws"}, 5000)
		if timeout != c.want {
			t.Errorf("%s ramp %d: harness timeout %v, want %v", c.server, c.ramp, timeout, c.want)
		}
		check(c.server+" fanout", args, timeout)
		if c.ramp > 0 && argValue(t, args, "-ramp") != strconv.Itoa(c.ramp) {
			t.Errorf("%s: -ramp missing in %q", c.server, args)
		}
	}
}
