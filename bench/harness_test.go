package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/presenced/presenced/poller"
	"go.uber.org/goleak"
)

// TestMain turns the test binary into a load process when envLoad is set,
// before the testing package parses flags or starts anything.
func TestMain(m *testing.M) {
	if mode := os.Getenv(envLoad); mode != "" {
		os.Exit(runLoad(mode, os.Getenv, os.Stdin, os.Stdout, os.Stderr))
	}
	if os.Getenv(envHeapProf) != "" {
		runtime.MemProfileRate = 1 // sample every allocation: per-connection objects show exactly
	}
	os.Exit(m.Run())
}

// engines are the poller engines measured, in report order.
var engines = []string{poller.EngineEpoll, poller.EngineNetpoll}

// countingHandler does nothing but count: the memory measured is the
// poller's own.
type countingHandler struct {
	opens, closes atomic.Int64
}

func (h *countingHandler) OnOpen(*poller.Conn)                       { h.opens.Add(1) }
func (h *countingHandler) OnMessage(*poller.Conn, ws.OpCode, []byte) {}
func (h *countingHandler) OnDeadline(*poller.Conn)                   {}
func (h *countingHandler) OnClose(*poller.Conn, poller.CloseInfo)    { h.closes.Add(1) }

// benchServer is a poller.Server running in this process.
type benchServer struct {
	srv    *poller.Server
	h      *countingHandler
	cancel context.CancelFunc
	done   chan error // receives Run's result
	once   sync.Once  // guards stop
}

// startServer starts a server with engine on 127.0.0.1:0 and checks that it
// upgrades one connection. It skips when the engine is not built yet.
func startServer(tb testing.TB, engine string, handshakeTimeout time.Duration) *benchServer {
	tb.Helper()
	h := &countingHandler{}
	srv, err := poller.New(poller.Config{
		Addr:             "127.0.0.1:0",
		Engine:           engine,
		HandshakeTimeout: handshakeTimeout,
	}, h)
	if err != nil {
		if strings.Contains(err.Error(), "not built yet") {
			tb.Skipf("engine %s: %v", engine, err)
		}
		tb.Fatalf("poller.New(%s): %v", engine, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &benchServer{srv: srv, h: h, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Run(ctx) }()
	tb.Cleanup(func() { s.stop(tb) })

	c, err := dialUpgraded(s.addr())
	if err != nil {
		tb.Fatalf("probe connection: %v", err)
	}
	c.Close()
	eventually(tb, 5*time.Second, "probe connection opened, closed and released", func() bool {
		return s.h.opens.Load() == 1 && s.h.closes.Load() == 1 && srv.Conns() == 0
	})
	s.h.opens.Store(0)
	s.h.closes.Store(0)
	return s
}

func (s *benchServer) addr() string { return s.srv.Addr().String() }

// stop stops the server and waits for Run to return. Safe to call twice.
func (s *benchServer) stop(tb testing.TB) {
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

// snapshot is the benchmark process's memory and goroutines at one moment.
type snapshot struct {
	heapAlloc   uint64 // bytes of live heap objects
	heapInuse   uint64 // bytes in in-use spans
	heapObjects uint64
	rss         uint64 // resident set size, bytes
	goroutines  int
}

// measure collects garbage, returns freed memory to the kernel and takes a
// snapshot.
func measure(tb testing.TB) snapshot {
	runtime.GC()
	runtime.GC()         // the second cycle also empties the sync.Pool victim caches
	debug.FreeOSMemory() // release freed spans so RSS counts what is live
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := residentBytes()
	if err != nil {
		tb.Fatal(err)
	}
	return snapshot{
		heapAlloc:   ms.HeapAlloc,
		heapInuse:   ms.HeapInuse,
		heapObjects: ms.HeapObjects,
		rss:         rss,
		goroutines:  runtime.NumGoroutine(),
	}
}

// residentBytes reads the resident set size from /proc/self/statm.
func residentBytes() (uint64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: %w", err)
	}
	return pages * uint64(os.Getpagesize()), nil
}

// perConn is (after - before) / n, negative when memory shrank.
func perConn[T uint64 | int](after, before T, n int) float64 {
	return (float64(after) - float64(before)) / float64(n)
}

// eventually polls cond until it holds, failing tb after timeout.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkFDRoom fails tb when n connections cannot fit under the open-file
// limit of this process (the load process has the same limit).
func checkFDRoom(tb testing.TB, n int) {
	tb.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		tb.Fatal(err)
	}
	if uint64(n)+200 > rl.Cur {
		tb.Fatalf("%s=%d does not fit under the open-file limit %d of one process", envConns, n, rl.Cur)
	}
}

// leakCheck records the goroutines running now; its verify fails tb if
// others are still running once the server has stopped. netpoll's poller
// goroutines are ignored: the library starts them on first use and keeps
// them for the life of the process (documented in poller/netpoll.go).
func leakCheck() func(tb testing.TB) {
	current := goleak.IgnoreCurrent()
	return func(tb testing.TB) {
		tb.Helper()
		if err := goleak.Find(current, goleak.IgnoreAnyFunction(netpollPollerFunc)); err != nil {
			tb.Errorf("goroutines left after the server stopped: %v", err)
		}
	}
}

// netpollPollerFunc is where netpoll's poller goroutines wait for events.
const netpollPollerFunc = "github.com/cloudwego/netpoll.(*defaultPoll).Wait"

// warnIfBusy logs when other processes keep the CPUs busy just before a
// run: the timings (handshakes/s, idle-cpu-%) then say little. The memory
// figures do not depend on it. Tests, which report no timings, skip it.
func warnIfBusy(tb testing.TB) {
	tb.Helper()
	if _, ok := tb.(*testing.B); !ok {
		return
	}
	const window = 500 * time.Millisecond
	busy0, total0, err := cpuJiffies()
	if err != nil {
		return
	}
	time.Sleep(window)
	busy1, total1, err := cpuJiffies()
	if err != nil || total1 == total0 {
		return
	}
	if frac := float64(busy1-busy0) / float64(total1-total0); frac > 0.1 {
		tb.Logf("the CPUs were %.0f%% busy in the %v before the run: timings are unreliable", 100*frac, window)
	}
}

// cpuJiffies reads the machine's busy and total CPU time from /proc/stat.
func cpuJiffies() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: %q", line)
	}
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchConns is N for the idle benchmarks: envConns, default 15000.
func benchConns() int { return envInt(os.Getenv, envConns, 15000) }

// envDurationOr parses a duration from the environment.
func envDurationOr(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil && d > 0 {
		return d
	}
	return def
}
