package bench

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"
)

// BenchmarkIdle measures what an idle, upgraded WebSocket connection costs
// the server: N connections (envConns, default 15000) are opened by a load
// process and held; heap, RSS and goroutines of this process are compared,
// after garbage collection, before and after. One call is one whole
// experiment: b.N is not used, and ns/op is suppressed.
//
//	go test ./bench -run '^$' -bench Idle -benchtime 1x
func BenchmarkIdle(b *testing.B) {
	for _, engine := range engines {
		b.Run(engine, func(b *testing.B) {
			runIdle(b, engine, modeIdle, benchConns(), envDurationOr(envSettle, 2*time.Second)).report(b)
		})
	}
}

// BenchmarkIdleSlowloris is BenchmarkIdle with connections that sent only
// part of their upgrade request and stall: the cost of a slowloris attack
// held for up to slowlorisTimeout.
func BenchmarkIdleSlowloris(b *testing.B) {
	for _, engine := range engines {
		b.Run(engine, func(b *testing.B) {
			runIdle(b, engine, modeSlowloris, benchConns(), envDurationOr(envSettle, 2*time.Second)).report(b)
		})
	}
}

// slowlorisTimeout is Config.HandshakeTimeout in the idle experiments: long
// enough that no stalled handshake expires while N connections are opened
// and measured.
const slowlorisTimeout = 2 * time.Minute

// idleResult is the per-connection cost measured by runIdle.
type idleResult struct {
	conns      int
	heap       float64 // HeapAlloc bytes
	heapInuse  float64 // HeapInuse bytes
	objects    float64 // live heap objects
	rss        float64 // resident bytes
	rssNoGC    float64 // resident bytes as an operator reads them: no forced GC before either reading (0: not measured)
	goroutines float64
	cpu        float64 // share of one core used by this process while the connections sat idle
}

func (r idleResult) report(b *testing.B) {
	b.ReportMetric(0, "ns/op") // the experiment's length means nothing
	b.ReportMetric(float64(r.conns), "conns")
	b.ReportMetric(r.heap, "heap-B/conn")
	b.ReportMetric(r.heapInuse, "heapinuse-B/conn")
	b.ReportMetric(r.objects, "objects/conn")
	b.ReportMetric(r.rss, "rss-B/conn")
	if r.rssNoGC != 0 {
		b.ReportMetric(r.rssNoGC, "rss-nogc-B/conn")
	}
	b.ReportMetric(r.goroutines, "goroutines/conn")
	b.ReportMetric(100*r.cpu, "idle-cpu-%")
}

// runIdle runs one experiment: start a server with engine, measure, have a
// load process open n connections in mode (modeIdle or modeSlowloris),
// wait settle, measure again, kill the load process and check that the
// server releases every connection and, once stopped, every goroutine.
func runIdle(tb testing.TB, engine, mode string, n int, settle time.Duration) idleResult {
	tb.Helper()
	checkFDRoom(tb, n)
	warnIfBusy(tb)
	verifyNoLeak := leakCheck()
	s := startServer(tb, engine, slowlorisTimeout)

	before := measure(tb)
	p := startLoad(tb, mode,
		envAddr+"="+s.addr(),
		envConns+"="+strconv.Itoa(n),
		envInflight+"=64")
	if _, err := p.waitLine("ready", 5*time.Minute); err != nil {
		tb.Fatalf("load process: %v", err)
	}
	eventually(tb, time.Minute, fmt.Sprintf("server holds %d connections", n), func() bool { return s.srv.Conns() == n })
	wantOpens := int64(n)
	if mode == modeSlowloris {
		wantOpens = 0
	}
	if got := s.h.opens.Load(); got != wantOpens {
		tb.Fatalf("OnOpen called %d times, want %d", got, wantOpens)
	}
	cpu0, t0 := cpuTime(tb), time.Now()
	time.Sleep(settle)
	cpu := float64(cpuTime(tb)-cpu0) / float64(time.Since(t0))
	after := measure(tb)
	if got := s.srv.Conns(); got != n {
		tb.Fatalf("server holds %d connections after settling, want %d", got, n)
	}
	if prefix := os.Getenv(envHeapProf); prefix != "" {
		writeHeapProfile(tb, fmt.Sprintf("%s-%s-%s.pprof", prefix, engine, mode))
	}

	p.kill()
	eventually(tb, time.Minute, "server releases every connection after the load process died", func() bool { return s.srv.Conns() == 0 })
	if mode == modeIdle {
		eventually(tb, 10*time.Second, "OnClose for every connection", func() bool { return s.h.closes.Load() == int64(n) })
	}
	s.stop(tb)
	verifyNoLeak(tb)

	return idleResult{
		conns:      n,
		heap:       perConn(after.heapAlloc, before.heapAlloc, n),
		heapInuse:  perConn(after.heapInuse, before.heapInuse, n),
		objects:    perConn(after.heapObjects, before.heapObjects, n),
		rss:        perConn(after.rss, before.rss, n),
		goroutines: perConn(after.goroutines, before.goroutines, n),
		cpu:        cpu,
	}
}

func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("heap profile with the connections open: %s", path)
}
