package main

import (
	"context"
	"io"
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

// TestGCPercentFlag: -gc-percent applies unless GOGC is in the
// environment and the flag is not given; below 1 it is a usage error.
func TestGCPercentFlag(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   env
		apply bool
		pct   int
	}{
		{"default", nil, nil, true, defaultGCPercent},
		{"flag", []string{"-gc-percent", "50"}, nil, true, 50},
		{"environment", nil, env{"PRESENCED_GC_PERCENT": "40"}, true, 40},
		{"GOGC rules without the flag", nil, env{"GOGC": "200"}, false, defaultGCPercent},
		{"the flag wins over GOGC", []string{"-gc-percent", "10"}, env{"GOGC": "200"}, true, 10},
		{"PRESENCED_GC_PERCENT wins over GOGC", nil, env{"GOGC": "off", "PRESENCED_GC_PERCENT": "30"}, true, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(append([]string{"-insecure"}, tc.args...), tc.env.lookup, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if o.setGC != tc.apply || o.gcPercent != tc.pct {
				t.Errorf("apply %v, percent %d; want %v, %d", o.setGC, o.gcPercent, tc.apply, tc.pct)
			}
		})
	}
	for _, v := range []string{"0", "-1", "off"} {
		_, err := parseFlags([]string{"-insecure", "-gc-percent", v}, env{}.lookup, io.Discard)
		checkUsageError(t, err, "-gc-percent")
	}
}

// TestGCTunerLimit: a steady live heap gets a limit above what the
// runtime holds; a live heap that grew since the previous period gets none.
func TestGCTunerLimit(t *testing.T) {
	runtime.GC() // a live heap to read
	tu := newGCTuner(7)
	if l := tu.limit(); l != math.MaxInt64 {
		t.Errorf("first period: limit %d, want none", l)
	}
	// A collection between two readings (other tests allocate) can make
	// the live heap grow by more than the slack: try a few periods.
	steady := func() int64 {
		for range 10 {
			if l := tu.limit(); l != math.MaxInt64 {
				return l
			}
		}
		return math.MaxInt64
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	l := steady()
	if l == math.MaxInt64 || l <= 0 || uint64(l) < ms.HeapAlloc/2 {
		t.Errorf("steady live heap: limit %d (heap %d)", l, ms.HeapAlloc)
	}
	tu.lastLive /= 2 // as if the live heap had doubled in the period
	if l := tu.limit(); l != math.MaxInt64 {
		t.Errorf("growing live heap: limit %d, want none", l)
	}
	if l := steady(); l == math.MaxInt64 {
		t.Errorf("steady again: no limit")
	}
	// A limit that binds (the heap outgrew it within a period) is lifted.
	old := debug.SetMemoryLimit(int64(ms.HeapAlloc / 2))
	l = tu.limit()
	debug.SetMemoryLimit(old)
	if l != math.MaxInt64 {
		t.Errorf("binding limit: limit %d, want none", l)
	}
}

// TestGCPolicy: the policy sets the GC percent (the memory limit comes
// from the tuner's periods, TestGCTunerLimit), and puts both back when stopped (no goroutine
// is left: goleak in TestMain); GOMEMLIMIT in the environment leaves the
// limit alone.
func TestGCPolicy(t *testing.T) {
	oldPct := debug.SetGCPercent(100)
	defer debug.SetGCPercent(oldPct)

	stop := startGCPolicy(context.Background(), options{gcPercent: 7, setGC: true}, env{}.lookup)
	pct := debug.SetGCPercent(7)
	limit := debug.SetMemoryLimit(-1)
	stop()
	if pct != 7 {
		t.Errorf("GC percent %d under the policy, want 7", pct)
	}
	if limit != math.MaxInt64 {
		t.Errorf("memory limit %d in the policy's first period, want none (no earlier live heap to tell growth from)", limit)
	}
	if pct := debug.SetGCPercent(100); pct != 100 {
		t.Errorf("GC percent %d after stop, want the previous 100", pct)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("memory limit %d after stop, want none", l)
	}

	stop = startGCPolicy(context.Background(), options{gcPercent: 7, setGC: true}, env{"GOMEMLIMIT": "1GiB"}.lookup)
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("memory limit %d with GOMEMLIMIT set, want the runtime's (none here)", l)
	}
	stop()

	stop = startGCPolicy(context.Background(), options{gcPercent: 7}, env{"GOGC": "100"}.lookup)
	if pct := debug.SetGCPercent(100); pct != 100 {
		t.Errorf("GC percent %d with GOGC ruling, want 100", pct)
	}
	stop()
}
