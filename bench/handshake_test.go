package bench

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkHandshake measures upgrades per second: a load process runs
// envWorkers (default 32) workers that dial, upgrade and abort for
// envDuration (default 5s). Client and server share the machine's cores.
// One call is one whole experiment: b.N is not used, and ns/op is
// suppressed.
//
//	go test ./bench -run '^$' -bench Handshake -benchtime 1x
func BenchmarkHandshake(b *testing.B) {
	workers := envInt(os.Getenv, envWorkers, 32)
	d := envDurationOr(envDuration, 5*time.Second)
	for _, engine := range engines {
		b.Run(engine, func(b *testing.B) {
			r := runHandshakes(b, engine, workers, d)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.perSecond(), "handshakes/s")
			b.ReportMetric(float64(r.serverCPU.Microseconds())/float64(r.count), "server-cpu-µs/handshake")
			b.ReportMetric(float64(r.clientCPU.Microseconds())/float64(r.count), "client-cpu-µs/handshake")
			b.ReportMetric(float64(r.p50)/float64(time.Millisecond), "p50-ms")
			b.ReportMetric(float64(r.p99)/float64(time.Millisecond), "p99-ms")
			b.ReportMetric(float64(r.errors), "errors")
		})
	}
}

// handshakeResult is the tally of a handshake load process.
type handshakeResult struct {
	count, errors int64
	elapsed       time.Duration
	p50, p99      time.Duration // dial + upgrade, as the client saw it
	serverCPU     time.Duration // CPU time of this process (the server) during the run
	clientCPU     time.Duration // CPU time of the load process
}

func (r handshakeResult) perSecond() float64 { return float64(r.count) / r.elapsed.Seconds() }

// runHandshakes starts a server with engine, runs the handshake load
// process against it and checks that the server saw every upgrade and
// released every connection.
func runHandshakes(tb testing.TB, engine string, workers int, d time.Duration) handshakeResult {
	tb.Helper()
	warnIfBusy(tb)
	verifyNoLeak := leakCheck()
	s := startServer(tb, engine, 0)
	cpu0 := cpuTime(tb)
	p := startLoad(tb, modeHandshake,
		envAddr+"="+s.addr(),
		envWorkers+"="+strconv.Itoa(workers),
		envDuration+"="+d.String())
	f, err := p.waitLine("done", d+2*time.Minute)
	if err != nil {
		tb.Fatalf("load process: %v", err)
	}
	serverCPU := cpuTime(tb) - cpu0
	if err := p.wait(30 * time.Second); err != nil {
		tb.Fatalf("load process: %v", err)
	}
	clientCPU := p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
	var v [5]int64
	if len(f) != len(v) {
		tb.Fatalf("load process reported %q", f)
	}
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			tb.Fatalf("load process reported %q: %v", f, err)
		}
	}
	r := handshakeResult{count: v[0], errors: v[1], elapsed: time.Duration(v[2]), p50: time.Duration(v[3]), p99: time.Duration(v[4]),
		serverCPU: serverCPU, clientCPU: clientCPU}
	if r.count == 0 {
		tb.Fatalf("no handshake completed in %v (%d errors)", d, r.errors)
	}
	eventually(tb, time.Minute, "server releases every connection", func() bool { return s.srv.Conns() == 0 })
	if opens := s.h.opens.Load(); opens < r.count {
		tb.Fatalf("server opened %d connections, the client completed %d upgrades", opens, r.count)
	}
	eventually(tb, 10*time.Second, fmt.Sprintf("OnClose for all %d opened connections", s.h.opens.Load()), func() bool {
		return s.h.closes.Load() == s.h.opens.Load()
	})
	s.stop(tb)
	verifyNoLeak(tb)
	return r
}
