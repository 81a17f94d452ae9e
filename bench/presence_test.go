package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/presence"
)

// Presence system benchmarks: a whole internal/server (poller + presence
// hub) runs in this process; clients speaking protocol v1 run in load
// processes (the presence-* modes of presence_load_test.go), each with its
// own source address 127.0.0.x so that no (source, destination) pair runs
// out of ephemeral ports. One call is one whole experiment: b.N is not
// used, and ns/op is suppressed.

const (
	envPresenceRooms = "PRESENCED_BENCH_PRESENCE_ROOMS" // BenchmarkIdlePresence: rooms; default 1000
	envPerProc       = "PRESENCED_BENCH_PER_PROC"       // connections per load process; default 5000
	envFanoutConns   = "PRESENCED_BENCH_FANOUT_CONNS"   // BenchmarkFanout: listeners; default 10000
	envFanoutTime    = "PRESENCED_BENCH_FANOUT_TIME"    // BenchmarkFanout: how long the changer runs; default 10s
	envSlowDuration  = "PRESENCED_BENCH_SLOW_DURATION"  // BenchmarkSlowConsumer: default 60s (5s with -short)
	envCPUProf       = "PRESENCED_BENCH_CPUPROFILE"     // BenchmarkFanout: path prefix of a CPU profile of the window
)

// BenchmarkIdlePresence measures what an idle presence connection costs the
// server: N connections (envConns, default 15000) from several load
// processes, each hello'd and joined to one of 1,000 rooms (15 a room) with
// a small state. Heap, RSS and goroutines of this process are compared,
// after garbage collection, before the connections and once they have
// settled.
//
//	go test ./bench -run '^$' -bench IdlePresence -benchtime 1x
func BenchmarkIdlePresence(b *testing.B) {
	n := benchConns()
	rooms := envInt(os.Getenv, envPresenceRooms, 1000)
	for _, engine := range engines {
		b.Run(engine, func(b *testing.B) {
			r := runIdlePresence(b, idlePresenceConfig(engine, ""), n, rooms, envDurationOr(envSettle, 2*time.Second))
			r.report(b)
			b.ReportMetric(float64(rooms), "rooms")
		})
	}
}

// idlePresenceConfig is the server of the idle experiment: a single node,
// or with redisAddr a node of a cluster over that Redis.
func idlePresenceConfig(engine, redisAddr string) server.Config {
	cfg := server.Config{Engine: engine, Presence: presence.Config{Insecure: true}}
	if redisAddr != "" {
		cfg.Redis = &redisbus.Config{Redis: redisbus.ClientOptions{Addrs: []string{redisAddr}}}
	}
	return cfg
}

// runIdlePresence runs one idle experiment and checks that the server
// releases every session and, once stopped, every goroutine.
func runIdlePresence(tb testing.TB, cfg server.Config, n, rooms int, settle time.Duration) idleResult {
	tb.Helper()
	checkFDRoom(tb, n)
	warnIfBusy(tb)
	verifyNoLeak := leakCheck()
	s := startPresenceServer(tb, cfg)
	if cfg.Redis != nil { // the bus's connections are made before the baseline
		eventually(tb, 30*time.Second, "the node registered", func() bool {
			return s.value(tb, "presenced_cluster_nodes") == 1 && s.value(tb, "presenced_redis_up") == 1
		})
	}

	rss0, err := residentBytes() // as an operator reads it: no forced GC
	if err != nil {
		tb.Fatal(err)
	}
	before := measure(tb)
	var procs []*loadProc
	for k, part := range splitConns(n) {
		procs = append(procs, startLoad(tb, modeIdlePresence,
			envAddr+"="+s.Addr().String(),
			envLocalIP+"="+localIP(k),
			envFirst+"="+strconv.Itoa(part.first),
			envConns+"="+strconv.Itoa(part.n),
			envRooms+"="+strconv.Itoa(rooms),
			envInflight+"=32"))
	}
	for _, p := range procs {
		if _, err := p.waitLine("ready", 5*time.Minute); err != nil {
			tb.Fatalf("load process: %v", err)
		}
	}
	eventually(tb, time.Minute, fmt.Sprintf("%d sessions, %d members, %d rooms", n, n, rooms), func() bool {
		return s.value(tb, "presenced_sessions") == float64(n) &&
			s.value(tb, "presenced_members") == float64(n) &&
			s.value(tb, "presenced_rooms") == float64(rooms)
	})
	s.waitQuiet(tb)
	cpu0, t0 := cpuTime(tb), time.Now()
	time.Sleep(settle)
	cpu := float64(cpuTime(tb)-cpu0) / float64(time.Since(t0))
	rss1, err := residentBytes()
	if err != nil {
		tb.Fatal(err)
	}
	after := measure(tb)
	if got := s.value(tb, "presenced_sessions"); got != float64(n) {
		tb.Fatalf("%v sessions after settling, want %d", got, n)
	}
	if prefix := os.Getenv(envHeapProf); prefix != "" {
		kind := "presence-idle"
		if cfg.Redis != nil {
			kind += "-redis"
		}
		writeHeapProfile(tb, fmt.Sprintf("%s-%s-%s.pprof", prefix, cfg.Engine, kind))
	}

	for _, p := range procs {
		p.kill()
	}
	eventually(tb, time.Minute, "server ends every session after the load processes died", func() bool {
		return s.value(tb, "presenced_sessions") == 0 && s.value(tb, "presenced_connections_active") == 0
	})
	s.stop(tb)
	verifyNoLeak(tb)
	return idleResult{
		conns:      n,
		heap:       perConn(after.heapAlloc, before.heapAlloc, n),
		heapInuse:  perConn(after.heapInuse, before.heapInuse, n),
		objects:    perConn(after.heapObjects, before.heapObjects, n),
		rss:        perConn(after.rss, before.rss, n),
		rssNoGC:    perConn(rss1, rss0, n),
		goroutines: perConn(after.goroutines, before.goroutines, n),
		cpu:        cpu,
	}
}

// BenchmarkFanout measures the fan-out of one busy room: N listeners
// (envFanoutConns, default 10000) joined to one room, each its own user,
// reading everything, while one more client (the changer) sets its state
// 100 times a second for envFanoutTime (default 10 s). Every listener must
// see at most one diff per tick, an unbroken cursor chain and, at the end,
// the changer's last status. Reported: deliveries/s (diffs received by all
// listeners), server CPU per million deliveries, allocations per delivery
// (every allocation of this process in the window, over deliveries), and
// the latency from the changer's send to a listener's receipt (see
// fanoutResult). The listeners share the machine's cores with the server,
// unless envPin pins them apart:
//
//	go test ./bench -run '^$' -bench Fanout -benchtime 1x
//	GOMAXPROCS=1 PRESENCED_BENCH_PIN=0,1 go test ./bench -run '^$' -bench Fanout -benchtime 1x
func BenchmarkFanout(b *testing.B) {
	n := envInt(os.Getenv, envFanoutConns, 10000)
	d := envDurationOr(envFanoutTime, 10*time.Second)
	for _, engine := range engines {
		b.Run(engine, func(b *testing.B) {
			r := runFanout(b, engine, n, d, 100*time.Millisecond)
			r.report(b)
		})
	}
}

// fanoutResult is one fan-out experiment, as the server and the
// listeners saw it.
type fanoutResult struct {
	conns      int
	d, tick    time.Duration
	counts     fanoutCounts  // summed over the listener processes
	bound      int           // most diffs one listener may see: d/tick + 2
	serverCPU  time.Duration // this process (the server) in the window
	clientCPU  time.Duration // the load processes in the window
	machine    machineTimes  // the whole machine in the window
	mallocs    uint64
	published  float64 // diffs the server published in the window
	framesSent float64 // frames the server queued in the window (diffs, acks to the changer, pings)
	bytesSent  float64 // bytes of those frames
	// newest (p50-ms, p99-ms): from the send of the set a diff shows (its
	// meta's ts; the last set of the tick) to the diff's receipt by a
	// listener. first (first-p50-ms, first-p99-ms): from the send of the
	// first set the diff coalesces (estimated from the changer's fixed
	// schedule) to receipt: also counts the wait for the tick. Both
	// histograms in latencyBucket steps, over every delivery.
	first, newest []uint64
	serverFanout  float64 // p99 of presenced_fanout_latency_seconds in the window (bucket bound), seconds
	changer       map[string]string
	gcs           uint32        // GC cycles in the window
	gcCPU         time.Duration // the runtime's estimate of the CPU its GC and scavenger used in the window (runtime/metrics /cpu/classes)
}

func (r fanoutResult) report(b *testing.B) {
	dels := float64(r.counts.diffs)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.conns), "conns")
	b.ReportMetric(dels/r.d.Seconds(), "deliveries/s")
	b.ReportMetric(float64(r.serverCPU.Microseconds())/1e3/dels*1e6, "cpu-ms/Mdeliveries")
	b.ReportMetric(float64(r.clientCPU.Microseconds())/1e3/dels*1e6, "client-cpu-ms/Mdeliveries")
	b.ReportMetric(dels/r.serverCPU.Seconds(), "deliveries/cpu-s") // compare with bench/writefloor's writes/cpu-s
	b.ReportMetric(r.bytesSent/max(r.framesSent, 1), "frame-B")
	b.ReportMetric(float64(r.published)/r.d.Seconds(), "diffs/s")
	b.ReportMetric(100*r.machine.busyShare(), "machine-busy-%")
	b.ReportMetric(float64(r.machine.softirq.Microseconds())/1e3/dels*1e6, "softirq-ms/Mdeliveries")
	b.ReportMetric(float64(r.mallocs)/dels, "allocs/delivery")
	b.ReportMetric(float64(r.gcs), "gcs")
	b.ReportMetric(float64(r.gcCPU.Microseconds())/1e3/dels*1e6, "gc-cpu-ms/Mdeliveries")
	b.ReportMetric(ms(quantileHist(r.newest, 0.50)), "p50-ms")
	b.ReportMetric(ms(quantileHist(r.newest, 0.99)), "p99-ms")
	b.ReportMetric(ms(quantileHist(r.first, 0.50)), "first-p50-ms")
	b.ReportMetric(ms(quantileHist(r.first, 0.99)), "first-p99-ms")
	b.ReportMetric(1e3*r.serverFanout, "server-p99-ms")
	b.ReportMetric(float64(r.counts.maxDiffs), "max-diffs/conn")
	b.ReportMetric(float64(r.bound), "bound-diffs/conn")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runFanout runs one fan-out experiment: n listeners, the changer running
// for d, the default tick (tick must be the server's).
func runFanout(tb testing.TB, engine string, n int, d, tick time.Duration) fanoutResult {
	tb.Helper()
	checkFDRoom(tb, n)
	warnIfBusy(tb)
	if cpu, _, ok := pinCPUs(os.Getenv); ok {
		// One CPU: one loop. The server's loops are sized from
		// GOMAXPROCS when it starts, before the runtime would notice the
		// new affinity.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		restore, err := pinProcess(cpu)
		if err != nil {
			tb.Fatal(err)
		}
		defer restore()
	}
	const (
		room    = "fan"
		changer = "changer"
		rate    = 100 // sets a second
	)
	s := startPresenceServer(tb, server.Config{Engine: engine, Presence: presence.Config{
		Insecure:  true,
		Tick:      tick,
		Rate:      10 * rate, // the changer's 100 sets a second are not limited
		Burst:     10 * rate,
		ListLimit: 2*n + 10, // diffs of a room over list_limit carry no member state
	}})
	addr := s.Addr().String()
	ch := startLineProc(tb, "changer", modeChanger,
		envAddr+"="+addr, envLocalIP+"="+localIP(0), envRoom+"="+room, envChanger+"="+changer,
		envRate+"="+strconv.Itoa(rate))
	ch.expect(tb, "ready", 30*time.Second)

	parts := splitConns(n)
	// About 2,000 joins a second in all: each tick's diff lists ~200 joins
	// (8 KB) for every listener already in; faster makes diffs larger than
	// the sync budget and everyone resyncs.
	joinRate := max(1, 2000/len(parts))
	var ls []*lineProc
	for k, part := range parts {
		ls = append(ls, startLineProc(tb, fmt.Sprintf("listeners-%d", k), modeFanout,
			envAddr+"="+addr, envLocalIP+"="+localIP(k+1), envRoom+"="+room, envChanger+"="+changer,
			envFirst+"="+strconv.Itoa(part.first), envConns+"="+strconv.Itoa(part.n),
			envJoinRate+"="+strconv.Itoa(joinRate), envInflight+"=16",
			envPeriod+"="+(time.Second/rate).String()))
	}
	for _, p := range ls {
		p.expect(tb, "ready", 5*time.Minute)
	}
	eventually(tb, time.Minute, fmt.Sprintf("%d members in the room", n+1), func() bool {
		return s.value(tb, "presenced_members") == float64(n+1) && s.value(tb, "presenced_sessions") == float64(n+1)
	})
	s.waitQuiet(tb)

	for _, p := range ls {
		p.send(tb, "go")
	}
	for _, p := range ls {
		p.expect(tb, "going", 30*time.Second)
	}
	diffs0, frames0 := s.value(tb, "presenced_diffs_total"), s.value(tb, "presenced_frames_sent_total")
	bytes0 := s.value(tb, "presenced_bytes_sent_total")
	hist0 := s.histogram(tb, "presenced_fanout_latency_seconds")
	prof := os.Getenv(envHeapProf)
	if prof != "" {
		runtime.GC() // a heap profile shows the allocations up to the last GC
		writeHeapProfile(tb, fmt.Sprintf("%s-%s-fanout-start.pprof", prof, engine))
	}
	stopCPUProfile := func() {}
	if path := os.Getenv(envCPUProf); path != "" {
		stopCPUProfile = startCPUProfile(tb, fmt.Sprintf("%s-%s-fanout.pprof", path, engine))
		defer stopCPUProfile()
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	gc0 := gcCPU()
	clients := append([]*lineProc{ch}, ls...)
	ccpu0 := procsCPU(tb, clients)
	mach0 := machineCPU(tb)
	cpu0 := cpuTime(tb)

	ch.send(tb, "go "+d.String())
	done := kv(ch.expect(tb, "done", d+time.Minute))
	time.Sleep(3*tick + 200*time.Millisecond) // the last diff reaches every listener

	cpu1 := cpuTime(tb)
	ccpu1 := procsCPU(tb, clients)
	mach1 := machineCPU(tb)
	runtime.ReadMemStats(&ms1)
	gcCPU := gcCPU() - gc0
	stopCPUProfile()
	if prof != "" {
		// go tool pprof -sample_index=alloc_objects -base <start> <end>:
		// what the window allocated.
		runtime.GC()
		writeHeapProfile(tb, fmt.Sprintf("%s-%s-fanout-end.pprof", prof, engine))
	}
	r := fanoutResult{
		conns:      n,
		d:          d,
		tick:       tick,
		serverCPU:  cpu1 - cpu0,
		clientCPU:  ccpu1 - ccpu0,
		machine:    mach1.sub(mach0),
		mallocs:    ms1.Mallocs - ms0.Mallocs,
		gcs:        ms1.NumGC - ms0.NumGC,
		gcCPU:      gcCPU,
		published:  s.value(tb, "presenced_diffs_total") - diffs0,
		framesSent: s.value(tb, "presenced_frames_sent_total") - frames0,
		bytesSent:  s.value(tb, "presenced_bytes_sent_total") - bytes0,
		first:      make([]uint64, latencyBuckets),
		newest:     make([]uint64, latencyBuckets),
		changer:    done,
		bound:      int(math.Ceil(float64(d)/float64(tick))) + 2,
	}
	r.serverFanout = histQuantile(hist0, s.histogram(tb, "presenced_fanout_latency_seconds"), 0.99)
	r.counts.minDiffs = -1
	for _, p := range ls {
		p.send(tb, "stop "+done["final"])
	}
	for _, p := range ls {
		res := kv(p.expect(tb, "result", time.Minute))
		var c fanoutCounts
		for key, dst := range map[string]*int{
			"conns": &c.conns, "diffs": &c.diffs, "cdiffs": &c.cdiffs, "maxd": &c.maxDiffs, "mind": &c.minDiffs,
			"breaks": &c.breaks, "syncs": &c.syncs, "final_ok": &c.finalOK, "final_bad": &c.finalBad,
			"errs": &c.errs, "closed": &c.closed,
		} {
			*dst = atoiOr(res[key], -1)
		}
		mergeHist(tb, r.first, res["first"])
		mergeHist(tb, r.newest, res["last"])
		sum := &r.counts
		sum.conns += c.conns
		sum.diffs += c.diffs
		sum.cdiffs += c.cdiffs
		sum.maxDiffs = max(sum.maxDiffs, c.maxDiffs)
		if sum.minDiffs < 0 || c.minDiffs < sum.minDiffs {
			sum.minDiffs = c.minDiffs
		}
		sum.breaks += c.breaks
		sum.syncs += c.syncs
		sum.finalOK += c.finalOK
		sum.finalBad += c.finalBad
		sum.errs += c.errs
		sum.closed += c.closed
	}
	tb.Logf("changer: %v", done)
	tb.Logf("listeners: %+v; server: %.0f diffs published, %.0f frames queued in the window; server CPU %v, clients' CPU %v, %d mallocs; machine: %v",
		r.counts, r.published, r.framesSent, r.serverCPU, r.clientCPU, r.mallocs, r.machine)

	// The acceptance criteria.
	c := r.counts
	if c.conns != n || c.diffs == 0 {
		tb.Errorf("%d listeners reported %d diffs; want %d listeners and some diffs", c.conns, c.diffs, n)
	}
	if c.maxDiffs > r.bound {
		tb.Errorf("a listener received %d diffs in %v: more than one per %v tick (bound %d)", c.maxDiffs, d, tick, r.bound)
	}
	if c.breaks != 0 {
		tb.Errorf("%d diffs broke the cursor chain (from != previous cur)", c.breaks)
	}
	if c.finalOK != n {
		tb.Errorf("%d of %d listeners ended with the changer's final status %s (%d did not)", c.finalOK, n, done["final"], c.finalBad)
	}
	if c.errs != 0 || c.closed != 0 || done["errs"] != "0" {
		tb.Errorf("errors: listeners %d err messages, %d closed; changer %s errs (last %s)", c.errs, c.closed, done["errs"], done["last_err"])
	}

	ch.kill()
	for _, p := range ls {
		p.kill()
	}
	eventually(tb, time.Minute, "server ends every session", func() bool { return s.value(tb, "presenced_sessions") == 0 })
	s.stop(tb)
	return r
}

// BenchmarkSlowConsumer measures what a client that stops reading costs
// the server: the changer sets its state 100 times a second in a room
// (with a 400-byte meta, so that the outbox fills within seconds) and,
// once the room's history is full, a client with a small SO_RCVBUF joins
// and never reads again. For envSlowDuration (default 60 s; 5 s with
// -short, which also sets SlowTimeout 2 s and a 10 ms tick) this process's
// live heap is sampled; reported: its peak growth over the baseline, when
// the server closed the client with 4002, and the growth left at the end.
//
//	go test ./bench -run '^$' -bench SlowConsumer -benchtime 1x
//	go test ./bench -run '^$' -bench SlowConsumer -benchtime 1x -short
func BenchmarkSlowConsumer(b *testing.B) {
	cfg := slowConfig{d: envDurationOr(envSlowDuration, 60*time.Second), pad: 400, rcvbuf: 2048}
	if testing.Short() {
		cfg = slowConfig{d: envDurationOr(envSlowDuration, 5*time.Second), slowTimeout: 2 * time.Second,
			tick: 10 * time.Millisecond, history: 32, pad: 400, rcvbuf: 2048}
	}
	for _, engine := range engines {
		b.Run(engine, func(b *testing.B) {
			r := runSlowConsumer(b, engine, cfg)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.peak, "peak-heap-growth-B")
			b.ReportMetric(r.peakAt.Seconds(), "peak-at-s")
			b.ReportMetric(r.closedAt.Seconds(), "closed-at-s")
			b.ReportMetric(r.closes, "slow-closes")
			b.ReportMetric(r.end, "end-heap-growth-B")
			b.ReportMetric(r.dropped, "diffs-dropped")
			b.ReportMetric(float64(r.outbox), "outbox-B")
		})
	}
}

// slowConfig configures runSlowConsumer. Zero durations and sizes are the
// server's defaults.
type slowConfig struct {
	d           time.Duration // how long the slow client stalls
	untilClosed bool          // stall only until the 4002 close (at most d)
	slowTimeout time.Duration
	tick        time.Duration
	history     int
	outbox      int
	pad         int // bytes of padding in the changer's meta
	rcvbuf      int // SO_RCVBUF of the slow client
}

// slowResult is what runSlowConsumer measured.
type slowResult struct {
	outbox   int           // the outbox bound in force
	peak     float64       // most live heap above the baseline, bytes
	peakAt   time.Duration // when (since the slow client's join)
	first    float64       // live heap above the baseline at the first sample
	closedAt time.Duration // when presenced_slow_consumer_closes_total became 1; -1 if never
	closes   float64       // presenced_slow_consumer_closes_total at the end
	dropped  float64       // presenced_diffs_dropped_total at the end
	end      float64       // live heap above the baseline at the end
	client   map[string]string
}

// runSlowConsumer runs one slow-consumer experiment.
func runSlowConsumer(tb testing.TB, engine string, cfg slowConfig) slowResult {
	tb.Helper()
	warnIfBusy(tb)
	const (
		room = "slow"
		rate = 100
	)
	pc := presence.Config{
		Insecure:    true,
		Rate:        10 * rate,
		Burst:       10 * rate,
		SlowTimeout: cfg.slowTimeout,
		Tick:        cfg.tick,
		History:     cfg.history,
	}
	s := startPresenceServer(tb, server.Config{Engine: engine, Outbox: cfg.outbox, Presence: pc})
	tick, history, outbox := cmp(cfg.tick, 100*time.Millisecond), cmp(cfg.history, 256), cmp(cfg.outbox, 64<<10)
	// The room's history grows to History versions (one a tick): the
	// baseline is taken once it has.
	warmup := time.Duration(history+10) * tick
	addr := s.Addr().String()
	ch := startLineProc(tb, "changer", modeChanger,
		envAddr+"="+addr, envLocalIP+"="+localIP(0), envRoom+"="+room, envChanger+"=changer",
		envRate+"="+strconv.Itoa(rate), envPad+"="+strconv.Itoa(cfg.pad))
	ch.expect(tb, "ready", 30*time.Second)
	ch.send(tb, "go "+(warmup+cfg.d+5*time.Second).String())
	slow := startLineProc(tb, "slow", modeSlow,
		envAddr+"="+addr, envLocalIP+"="+localIP(1), envRoom+"="+room, envRcvBuf+"="+strconv.Itoa(cfg.rcvbuf))
	slow.expect(tb, "started", 30*time.Second)
	time.Sleep(warmup)
	base := measure(tb)
	slow.send(tb, "join")
	ready := slow.expect(tb, "ready", 30*time.Second)
	t0 := time.Now()
	r := slowResult{outbox: outbox, closedAt: -1}
	sample := max(min(cfg.d/20, time.Second), 50*time.Millisecond)
	for time.Since(t0) < cfg.d {
		time.Sleep(sample)
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		g := float64(m.HeapAlloc) - float64(base.heapAlloc)
		if r.peakAt == 0 {
			r.first = g
		}
		if g > r.peak || r.peakAt == 0 {
			r.peak, r.peakAt = g, time.Since(t0)
		}
		if r.closedAt < 0 && s.value(tb, "presenced_slow_consumer_closes_total") > 0 {
			r.closedAt = time.Since(t0)
			if cfg.untilClosed {
				break
			}
		}
	}
	r.closes = s.value(tb, "presenced_slow_consumer_closes_total")
	r.dropped = s.value(tb, "presenced_diffs_dropped_total")
	r.end = float64(measure(tb).heapAlloc) - float64(base.heapAlloc)
	slow.send(tb, "read 5s")
	r.client = kv(slow.expect(tb, "result", time.Minute))
	tb.Logf("slow client %v; after reading: %v", ready, r.client)
	tb.Logf("outbox %d B: heap +%.0f B at the first sample, peak +%.0f B at %v, +%.0f B at the end; closed with 4002 at %v (%v closes); %v diffs dropped",
		outbox, r.first, r.peak, r.peakAt.Round(time.Millisecond), r.end, r.closedAt.Round(time.Millisecond), r.closes, r.dropped)
	if r.closes != 1 {
		tb.Errorf("presenced_slow_consumer_closes_total = %v, want 1", r.closes)
	}
	ch.kill()
	slow.kill()
	eventually(tb, time.Minute, "server ends every session", func() bool { return s.value(tb, "presenced_sessions") == 0 })
	s.stop(tb)
	return r
}

// startCPUProfile profiles this process into path until the returned
// function is called.
func startCPUProfile(tb testing.TB, path string) (stop func()) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		tb.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
			tb.Logf("CPU profile of the fan-out window: %s", path)
		})
	}
}

// procsCPU is the user and system CPU time the processes have used, from
// /proc/<pid>/stat.
func procsCPU(tb testing.TB, ps []*lineProc) time.Duration {
	tb.Helper()
	var ticks int64
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			tb.Fatal(err)
		}
		// Fields after the command name (in parentheses, which may hold
		// spaces): state is field 3, utime 14, stime 15.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		for _, v := range f[11:13] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatalf("/proc/%d/stat: %v", p.cmd.Process.Pid, err)
			}
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// machineTimes is CPU time of the whole machine, summed over CPUs, from
// /proc/stat. Time the kernel spends in softirq (on loopback: the TCP
// receive path of every write, and its wake-ups) is counted there, not in
// any process's time.
type machineTimes struct {
	user, system, softirq, steal, idle, total time.Duration
}

func machineCPU(tb testing.TB) machineTimes {
	tb.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		tb.Fatalf("/proc/stat: %q", line)
	}
	var v [8]time.Duration
	var m machineTimes
	for i := range v {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			tb.Fatalf("/proc/stat: %v", err)
		}
		v[i] = time.Duration(n) * time.Second / clockTicks
		m.total += v[i]
	}
	m.user, m.system, m.idle, m.softirq, m.steal = v[0]+v[1], v[2]+v[5], v[3]+v[4], v[6], v[7]
	return m
}

func (m machineTimes) String() string {
	return fmt.Sprintf("user %v, system %v, softirq %v, steal %v, idle %v of %v (%.0f%% busy)",
		m.user, m.system, m.softirq, m.steal, m.idle, m.total, 100*m.busyShare())
}

func (m machineTimes) sub(o machineTimes) machineTimes {
	return machineTimes{m.user - o.user, m.system - o.system, m.softirq - o.softirq, m.steal - o.steal, m.idle - o.idle, m.total - o.total}
}

// busyShare is the share of the CPUs' time not idle (steal included).
func (m machineTimes) busyShare() float64 {
	if m.total == 0 {
		return 0
	}
	return 1 - float64(m.idle)/float64(m.total)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// cmp is v, or def when v is zero.
func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// presenceServer is an internal/server running in this process.
type presenceServer struct {
	*server.Server
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error // receives Run's result
	once   sync.Once  // guards stop
}

// startPresenceServer starts cfg on 127.0.0.1:0 (admin too) with a
// registry of its own, and stops it when tb ends.
func startPresenceServer(tb testing.TB, cfg server.Config) *presenceServer {
	tb.Helper()
	cfg.Addr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Registry = prometheus.NewRegistry()
	srv, err := server.New(cfg)
	if err != nil {
		tb.Fatalf("server.New(%s): %v", cfg.Engine, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &presenceServer{Server: srv, reg: cfg.Registry, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Run(ctx) }()
	tb.Cleanup(func() { s.stop(tb) })
	return s
}

// stop drains and stops the server and waits for Run. Safe to call twice.
func (s *presenceServer) stop(tb testing.TB) {
	s.once.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				tb.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("Run did not return 30s after cancel")
		}
	})
}

// value is the sum of the counter or gauge name over its label sets.
func (s *presenceServer) value(tb testing.TB, name string) float64 {
	tb.Helper()
	fams, err := s.reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	v := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return v
}

// histBucket is one cumulative bucket of a Prometheus histogram.
type histBucket struct {
	upper float64
	count uint64
}

func (s *presenceServer) histogram(tb testing.TB, name string) []histBucket {
	tb.Helper()
	fams, err := s.reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	var bs []histBucket
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			for _, b := range h.GetBucket() {
				bs = append(bs, histBucket{b.GetUpperBound(), b.GetCumulativeCount()})
			}
			bs = append(bs, histBucket{math.Inf(1), h.GetSampleCount()})
		}
	}
	return bs
}

// histQuantile is the upper bound of the bucket holding quantile q of the
// observations made between two snapshots; NaN when there were none.
func histQuantile(before, after []histBucket, q float64) float64 {
	if len(before) != len(after) || len(after) == 0 {
		return math.NaN()
	}
	total := after[len(after)-1].count - before[len(before)-1].count
	if total == 0 {
		return math.NaN()
	}
	for i := range after {
		if float64(after[i].count-before[i].count) >= q*float64(total) {
			return after[i].upper
		}
	}
	return math.Inf(1)
}

// waitQuiet waits until the server has published no diff for a while:
// the joins have been flushed. (Frames never stop: each session is pinged
// every HeartbeatInterval.)
func (s *presenceServer) waitQuiet(tb testing.TB) {
	tb.Helper()
	key := func() float64 { return s.value(tb, "presenced_diffs_total") }
	prev := key()
	deadline := time.Now().Add(2 * time.Minute)
	for quiet := 0; quiet < 3; {
		time.Sleep(200 * time.Millisecond)
		k := key()
		if k == prev {
			quiet++
		} else {
			quiet = 0
		}
		prev = k
		if time.Now().After(deadline) {
			tb.Fatalf("the server kept sending for 2 minutes after the joins")
		}
	}
}

// connRange is the connections of one load process.
type connRange struct{ first, n int }

// splitConns splits n connections over load processes of at most
// envPerProc (default 5000) each.
func splitConns(n int) []connRange {
	per := envInt(os.Getenv, envPerProc, 5000)
	procs := (n + per - 1) / per
	var rs []connRange
	first := 0
	for k := range procs {
		m := n / procs
		if k < n%procs {
			m++
		}
		rs = append(rs, connRange{first, m})
		first += m
	}
	return rs
}

// localIP is the source address of load process k: 127.0.0.10 + k.
func localIP(k int) string { return "127.0.0." + strconv.Itoa(10+k) }

// lineProc is a load process that answers commands with lines.
type lineProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // closed when its stdout ends
	once  sync.Once
}

// startLineProc runs the test binary again in mode with env added; it is
// killed when tb ends.
func startLineProc(tb testing.TB, name, mode string, env ...string) *lineProc {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), envLoad+"="+mode), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &lineProc{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	tb.Cleanup(p.kill)
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20) // result lines carry histograms
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p
}

// send writes one command line.
func (p *lineProc) send(tb testing.TB, line string) {
	tb.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		tb.Fatalf("%s: send %q: %v", p.name, line, err)
	}
}

// expect waits for the next line, whose first word must be word, and
// returns the other words.
func (p *lineProc) expect(tb testing.TB, word string, timeout time.Duration) []string {
	tb.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			tb.Fatalf("%s: exited before saying %q", p.name, word)
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != word {
			tb.Fatalf("%s: said %.200q, want %q", p.name, line, word)
		}
		return f[1:]
	case <-time.After(timeout):
		tb.Fatalf("%s: silent for %v, want %q", p.name, timeout, word)
	}
	return nil
}

// kill ends the process and reaps it. Safe to call twice.
func (p *lineProc) kill() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		p.stdin.Close()
		p.cmd.Wait()
	})
}

// kv parses key=value words.
func kv(words []string) map[string]string {
	m := make(map[string]string, len(words))
	for _, w := range words {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}

func atoiOr(s string, def int) int {
	if v, err := strconv.Atoi(s); err == nil {
		return v
	}
	return def
}

// mergeHist adds an encoded latencyHist ("i:count,...", "-" when empty)
// to h.
func mergeHist(tb testing.TB, h []uint64, enc string) {
	tb.Helper()
	if enc == "-" || enc == "" {
		return
	}
	for _, pair := range strings.Split(enc, ",") {
		i, c, ok := strings.Cut(pair, ":")
		bi, err1 := strconv.Atoi(i)
		cv, err2 := strconv.ParseUint(c, 10, 64)
		if !ok || err1 != nil || err2 != nil || bi < 0 || bi >= len(h) {
			tb.Fatalf("bad histogram pair %q", pair)
		}
		h[bi] += cv
	}
}

// quantileHist is the upper edge of the bucket holding quantile q.
func quantileHist(h []uint64, q float64) time.Duration {
	var total uint64
	for _, c := range h {
		total += c
	}
	if total == 0 {
		return -1
	}
	target := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range h {
		seen += c
		if seen >= target {
			return time.Duration(i+1) * latencyBucket
		}
	}
	return time.Duration(len(h)) * latencyBucket
}
