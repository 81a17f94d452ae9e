package main

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// defaultGCPercent is -gc-percent's default: the heap may grow 10 % over
// the live heap before the next collection, instead of the runtime's 100 %
// (GOGC). Measured with bench's BenchmarkIdlePresenceRSS (15,000 joined
// idle connections, RSS read from outside after 60 s) and BenchmarkFanout
// (its CPU cost): see bench/RESULTS.md, "Memory an operator sees".
//
// Why it fits presenced: its live heap is large and changes slowly (a
// Session, a poller connection and a membership per client) while it
// allocates little (heartbeats; each diff is encoded once per room). The
// heap goal is live × (1 + GOGC/100), so with GOGC=100 an operator sees
// about twice the live heap. The CPU the GC costs grows with the
// allocation rate over GOGC, not with the size of the live heap, and that
// rate is small here.
const defaultGCPercent = 10

// Environment variables of the runtime that the GC policy defers to.
const (
	gcPercentEnv   = "GOGC"       // set and -gc-percent not given: the runtime's value stays
	memoryLimitEnv = "GOMEMLIMIT" // set: no memory limit is derived (see gcTuner)
)

// setGCPercent applies pct as the process's GC percent and returns a
// function that restores the previous one (run is also called by tests).
func setGCPercent(pct int) (restore func()) {
	old := debug.SetGCPercent(pct)
	return func() { debug.SetGCPercent(old) }
}

// gcTunePeriod is how often gcTuner recomputes the memory limit.
const gcTunePeriod = 250 * time.Millisecond

// gcTuner returns freed heap pages to the OS soon after a collection. The
// runtime's background scavenger keeps up to 10 % more than the heap goal
// resident, and lags behind: after a burst (a join storm) the pages its
// garbage used stay in RSS. With a soft memory limit the scavenger instead
// works to keep the process's memory at 95 % of the limit. So once a
// period the tuner sets the limit to what the heap may use under GOGC
// (the goal computed from the live heap of the last cycle, as the pacer
// does: live + (live + stacks + globals) × percent/100), plus the memory
// the runtime holds outside the heap's objects, over 0.95, plus 1 MiB.
// The scavenger then releases free pages beyond the goal, and collections
// still start when GOGC says: the limit is derived from the live heap, not
// from the goal the runtime reports (which the limit itself lowers: a
// limit taken from it ratchets down and the GC runs back to back).
//
// The limit binds only while the live heap holds steady. While it grows
// (a join or reconnect storm, the first minutes after start) a limit
// computed from the last cycle's live heap would lag behind it and make
// the GC collect before GOGC says, back to back until the next period
// (measured by review: 2.3 times the cycles at 30 % growth a second). So a
// period in which the live heap grew by more than growthSlack, or in which
// the runtime's heap goal fell below the one GOGC gives (the limit binds:
// the heap grew within the period, before a cycle could report it), lifts
// the limit, and the next steady period sets it again: the pages of a
// burst are returned once it is over, which is what the limit is for. A
// lagging limit costs at most one period (250 ms) of early cycles.
type gcTuner struct {
	percent  uint64
	samples  []metrics.Sample
	lastLive uint64 // the live heap read in the previous period; owned by run
}

// growthSlack: a live heap that grew by more than 1/growthSlack in a
// period counts as growing.
const growthSlack = 64

// The samples gcTuner reads, in this order.
var gcTunerMetrics = []string{
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/live:bytes",
	"/gc/scan/stack:bytes",
	"/gc/scan/globals:bytes",
	"/gc/heap/goal:bytes",
}

func newGCTuner(percent int) *gcTuner {
	t := &gcTuner{percent: uint64(max(percent, 0)), samples: make([]metrics.Sample, len(gcTunerMetrics))}
	for i, n := range gcTunerMetrics {
		t.samples[i].Name = n
	}
	return t
}

// limit is the memory limit for the runtime's current state: none
// (math.MaxInt64) while the live heap grows.
func (t *gcTuner) limit() int64 {
	metrics.Read(t.samples)
	v := func(i int) uint64 {
		if t.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return t.samples[i].Value.Uint64()
	}
	total, released, free, objects := v(0), v(1), v(2), v(3)
	live, stacks, globals, runtimeGoal := v(4), v(5), v(6), v(7)
	goal := live + (live+stacks+globals)*t.percent/100 // GOGC's
	growing := live > t.lastLive+t.lastLive/growthSlack
	binding := runtimeGoal < goal-goal/growthSlack
	t.lastLive = live
	if growing || binding || live == 0 { // 0: no cycle has run yet
		return math.MaxInt64
	}
	outside := total - released - free - objects // metadata, stacks, fragmentation in spans
	l := (outside+goal)/95*100 + 1<<20
	if l > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(l)
}

// run updates the limit every gcTunePeriod until ctx is done, then
// removes it. The first period sets none: it has no earlier live heap to
// tell growth from.
func (t *gcTuner) run(ctx context.Context) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	tick := time.NewTicker(gcTunePeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			debug.SetMemoryLimit(t.limit())
		}
	}
}

// startGCPolicy applies -gc-percent (unless GOGC rules) and, with it, the
// tuner (unless GOMEMLIMIT is set). stop undoes both and waits for the
// tuner.
func startGCPolicy(ctx context.Context, o options, lookupEnv func(string) (string, bool)) (stop func()) {
	if !o.setGC {
		return func() {}
	}
	restore := setGCPercent(o.gcPercent)
	if _, ok := lookupEnv(memoryLimitEnv); ok {
		return restore
	}
	t := newGCTuner(o.gcPercent)
	t.limit() // the first reading of the live heap
	// The tuner lives as long as run, through the drain: the caller's ctx
	// ends at the signal that starts it.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { t.run(ctx) })
	return func() {
		cancel()
		wg.Wait()
		restore()
	}
}
