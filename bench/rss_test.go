package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The memory an operator sees: bin/presenced runs as a child process, the
// clients in load processes, and this process reads the server's VmRSS
// from /proc/<pid>/status, as top does. Nothing forces a collection before
// the RSS is read.
const (
	envBinary     = "PRESENCED_BENCH_BINARY"      // presenced binary to run; default: built from ./cmd/presenced
	envServerArgs = "PRESENCED_BENCH_SERVER_ARGS" // extra flags of the server, split on spaces
	envIdle       = "PRESENCED_BENCH_IDLE"        // BenchmarkIdlePresenceRSS: idle time before the RSS is read; default 60s
)

// BenchmarkIdlePresenceRSS measures the resident memory of a presenced
// process holding N joined idle connections (envConns, default 15000, in
// 1,000 rooms: envPresenceRooms), as an operator reads it: VmRSS of the
// process envIdle (default 60 s) after the last join, minus VmRSS of the
// fresh process before the first connection, over N. No forced GC, no
// FreeOSMemory. The server is bin/presenced with -insecure and default
// flags (envServerArgs adds flags; envBinary runs a given build, for A/B
// comparisons). Reported besides: the live heap (after a GC forced through
// /debug/pprof/heap?gc=1, once RSS has been read), the heap before that GC,
// and the GC cycles run while idle.
//
//	go test ./bench -run '^$' -bench IdlePresenceRSS -benchtime 1x -count 3
//	PRESENCED_BENCH_BINARY=/tmp/old PRESENCED_BENCH_SERVER_ARGS='-gc-percent 100' go test ./bench ...
func BenchmarkIdlePresenceRSS(b *testing.B) {
	n := benchConns()
	rooms := envInt(os.Getenv, envPresenceRooms, 1000)
	bin := os.Getenv(envBinary)
	if bin == "" {
		bin = buildPresenced(b)
	}
	r := runIdlePresenceRSS(b, bin, strings.Fields(os.Getenv(envServerArgs)), n, rooms, envDurationOr(envIdle, 60*time.Second))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(n), "conns")
	b.ReportMetric(float64(rooms), "rooms")
	b.ReportMetric(perConn(r.rss1, r.rss0, n), "rss-B/conn")
	b.ReportMetric(perConn(r.live1, r.live0, n), "live-B/conn")
	b.ReportMetric(perConn(r.heap1, r.live0, n), "heap-B/conn")
	b.ReportMetric(float64(r.rss0)/(1<<20), "fresh-rss-MiB")
	b.ReportMetric(r.gcs, "idle-gcs")
}

// rssResult is one BenchmarkIdlePresenceRSS experiment, in bytes.
type rssResult struct {
	rss0, rss1   uint64  // VmRSS: fresh, and after the idle time
	live0, live1 uint64  // heap after a forced GC: fresh (read after rss0), at the end (after rss1)
	heap1        uint64  // heap (go_memstats_heap_alloc_bytes) after the idle time, before the forced GC
	gcs          float64 // GC cycles during the idle time
}

// status reads the kB fields of /proc/<pid>/status (VmRSS, RssAnon,
// RssFile...), in bytes.
func (s *presencedProc) status(tb testing.TB) map[string]uint64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	m := make(map[string]uint64)
	for line := range strings.Lines(string(b)) {
		name, rest, _ := strings.Cut(line, ":")
		f := strings.Fields(rest) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			m[name] = kb << 10
		}
	}
	if m["VmRSS"] == 0 {
		tb.Fatalf("no VmRSS in /proc/%d/status", s.cmd.Process.Pid)
	}
	return m
}

// get fetches path from the admin listener.
func (s *presencedProc) get(tb testing.TB, path string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.admin+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %s %v", path, resp.Status, err)
	}
	return b
}

// metrics scrapes /metrics: the sum of each metric's samples by name
// (histogram and summary series keep their suffixed names).
func (s *presencedProc) metrics(tb testing.TB) map[string]float64 {
	tb.Helper()
	m := make(map[string]float64)
	for line := range strings.Lines(string(s.get(tb, "/metrics"))) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(f[0], "{")
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			m[name] += v
		}
	}
	return m
}

// liveHeap forces a GC (the heap profile endpoint's gc=1) and returns the
// heap left, writing the profile to path unless path is empty.
func (s *presencedProc) liveHeap(tb testing.TB, path string) uint64 {
	tb.Helper()
	prof := s.get(tb, "/debug/pprof/heap?gc=1")
	if path != "" {
		if err := os.WriteFile(path, prof, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return uint64(s.metrics(tb)["go_memstats_heap_alloc_bytes"])
}

// runIdlePresenceRSS runs one experiment against a fresh bin process.
func runIdlePresenceRSS(tb testing.TB, bin string, args []string, n, rooms int, idle time.Duration) rssResult {
	tb.Helper()
	checkFDRoom(tb, n)
	warnIfBusy(tb)
	s := startPresenced(tb, bin, "rss", append([]string{"-insecure"}, args...)...)
	time.Sleep(time.Second) // let the runtime finish starting
	var r rssResult
	st0 := s.status(tb)
	r.rss0 = st0["VmRSS"]
	r.live0 = s.liveHeap(tb, "")
	mFresh := s.metrics(tb)

	var procs []*loadProc
	for k, part := range splitConns(n) {
		procs = append(procs, startLoad(tb, modeIdlePresence,
			envAddr+"="+s.addr,
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
	var m0 map[string]float64
	eventually(tb, time.Minute, fmt.Sprintf("%d sessions, %d members, %d rooms", n, n, rooms), func() bool {
		m0 = s.metrics(tb)
		return m0["presenced_sessions"] == float64(n) && m0["presenced_members"] == float64(n) && m0["presenced_rooms"] == float64(rooms)
	})
	time.Sleep(idle)
	st1 := s.status(tb)
	r.rss1 = st1["VmRSS"]
	m1 := s.metrics(tb)
	r.heap1 = uint64(m1["go_memstats_heap_alloc_bytes"])
	r.gcs = m1["go_gc_duration_seconds_count"] - m0["go_gc_duration_seconds_count"]
	var prof string
	if prefix := os.Getenv(envHeapProf); prefix != "" {
		prof = prefix + "-presenced-rss.pprof"
	}
	r.live1 = s.liveHeap(tb, prof)
	if got := m1["presenced_sessions"]; got != float64(n) {
		tb.Fatalf("%v sessions after idling, want %d", got, n)
	}
	tb.Logf("VmRSS %d -> %d kB; heap %d kB before GC (next_gc %.0f kB, inuse %.0f kB, idle %.0f kB, released %.0f kB), live %d -> %d kB; %v GCs while idle",
		r.rss0>>10, r.rss1>>10, r.heap1>>10, m1["go_memstats_next_gc_bytes"]/1024, m1["go_memstats_heap_inuse_bytes"]/1024,
		m1["go_memstats_heap_idle_bytes"]/1024, m1["go_memstats_heap_released_bytes"]/1024, r.live0>>10, r.live1>>10, r.gcs)
	var grew []string
	for name, v := range m1 {
		if strings.HasPrefix(name, "go_memstats_") && strings.HasSuffix(name, "_bytes") && !strings.Contains(name, "total") {
			grew = append(grew, fmt.Sprintf("%s %+.0f kB", strings.TrimPrefix(name, "go_memstats_"), (v-mFresh[name])/1024))
		}
	}
	slices.Sort(grew)
	tb.Logf("RssAnon %d -> %d kB, RssFile %d -> %d kB", st0["RssAnon"]>>10, st1["RssAnon"]>>10, st0["RssFile"]>>10, st1["RssFile"]>>10)
	tb.Logf("memstats growth from the fresh process (after its GC) to the end (before the GC): %s", strings.Join(grew, ", "))
	for _, p := range procs {
		p.kill()
	}
	s.kill()
	return r
}

// gcCPU is the runtime's estimate of the CPU time this process's garbage
// collector and scavenger have used (runtime/metrics; updated at the end
// of each GC cycle).
func gcCPU() time.Duration {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/cpu/classes/scavenge/total:cpu-seconds"}}
	metrics.Read(s)
	var sec float64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindFloat64 {
			sec += x.Value.Float64()
		}
	}
	return time.Duration(sec * float64(time.Second))
}
