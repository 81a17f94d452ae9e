package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/presence"
)

func TestMain(m *testing.M) {
	// -procs re-executes this binary: a child runs the command, not the tests.
	if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], "-child=") {
		os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// testServer is an in-process presenced; restart drains it and starts
// another on the same address (the reconnect scenario's disruption).
type testServer struct {
	t    *testing.T
	addr string

	tweak func(*server.Config)

	mu   sync.Mutex
	stop func() // the running server's
}

func startTestServer(t *testing.T) *testServer {
	return startTestServerWith(t, nil)
}

// startTestServerWith starts a server whose config tweak changes.
func startTestServerWith(t *testing.T, tweak func(*server.Config)) *testServer {
	t.Helper()
	ts := &testServer{t: t, addr: "127.0.0.1:0", tweak: tweak}
	ts.start()
	t.Cleanup(func() {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		ts.stop()
	})
	return ts
}

func (ts *testServer) start() {
	ts.t.Helper()
	cfg := server.Config{
		Addr:      ts.addr,
		AdminAddr: "127.0.0.1:0",
		Registry:  prometheus.NewRegistry(),
		Drain:     300 * time.Millisecond,
		Presence: presence.Config{
			Insecure:   true,
			Tick:       20 * time.Millisecond,
			LeaveGrace: 200 * time.Millisecond,
			ListLimit:  10000,
		},
	}
	if ts.tweak != nil {
		ts.tweak(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.addr = s.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	ts.stop = func() {
		cancel()
		if err := <-done; err != nil {
			ts.t.Errorf("server: %v", err)
		}
	}
}

func (ts *testServer) url() string { return "ws://" + ts.addr + "/ws" }

// restart drains the server and starts a new one on its address.
func (ts *testServer) restart() error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.stop()
	ts.start()
	return nil
}

// runLoad runs the command with args (and cfg changed by tweak) and
// returns its summary, stderr and error.
func runLoad(t *testing.T, args []string, tweak func(*config)) (summary, string, error) {
	t.Helper()
	cfg, err := parseFlags(args, new(bytes.Buffer))
	if err != nil {
		t.Fatalf("parseFlags %q: %v", args, err)
	}
	if tweak != nil {
		tweak(cfg)
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = execute(ctx, cfg, &stdout, &stderr)
	var s summary
	if jerr := json.Unmarshal(stdout.Bytes(), &s); jerr != nil {
		t.Fatalf("summary %q: %v (stderr: %s)", stdout.String(), jerr, stderr.String())
	}
	return s, stderr.String(), err
}

func TestScenarios(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		deliveries bool // deliveries > 0
		latency    bool // p50 > 0
		check      func(t *testing.T, s summary)
	}{
		{name: "idle", args: []string{"-scenario", "idle", "-conns", "40", "-rooms", "4"}},
		{name: "churn", args: []string{"-scenario", "churn", "-conns", "40", "-rooms", "4", "-rate", "100"},
			deliveries: true, latency: true},
		{name: "fanout", args: []string{"-scenario", "fanout", "-conns", "40", "-changers", "3"},
			deliveries: true, latency: true},
		{name: "fanout rooms", args: []string{"-scenario", "fanout", "-conns", "40", "-rooms", "2", "-changers", "4"},
			deliveries: true, latency: true},
		{name: "typing", args: []string{"-scenario", "typing", "-conns", "40", "-changers", "3", "-rate", "30"},
			deliveries: true, latency: true},
		{name: "cluster", args: []string{"-scenario", "cluster", "-conns", "40", "-changers", "3"},
			deliveries: true, latency: true},
		{name: "leave", args: []string{"-scenario", "leave", "-conns", "40", "-rooms", "4", "-rate", "4", "-settle", "1s"},
			deliveries: true, check: func(t *testing.T, s summary) {
				if s.Cuts == 0 || s.LeaveP50MS <= 0 || s.LeaveP99MS < s.LeaveP50MS {
					t.Errorf("cuts %d, leave p50 %v ms p99 %v ms: want cuts timed", s.Cuts, s.LeaveP50MS, s.LeaveP99MS)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := startTestServer(t) // one each: the scenarios' users and rooms have the same names
			args := append([]string{"-url", ts.url(), "-duration", "1s", "-settle", "1s", "-progress", "200ms"}, tt.args...)
			s, stderr, err := runLoad(t, args, nil)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, stderr)
			}
			checkSummary(t, s, stderr, tt.deliveries, tt.latency)
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
	t.Run("reconnect", func(t *testing.T) {
		t.Parallel()
		ts := startTestServer(t)
		args := []string{"-url", ts.url(), "-scenario", "reconnect", "-conns", "40", "-rooms", "4",
			"-duration", "3s", "-disrupt-at", "300ms", "-settle", "500ms", "-progress", "200ms"}
		s, stderr, err := runLoad(t, args, func(cfg *config) { cfg.disruptFn = ts.restart })
		if err != nil {
			t.Fatalf("run: %v\n%s", err, stderr)
		}
		checkSummary(t, s, stderr, true, false)
		if s.Reconnects < int64(s.Conns) || s.ConvergeMS <= 0 {
			t.Errorf("reconnects %d, converge_ms %v: want every connection back and a convergence time", s.Reconnects, s.ConvergeMS)
		}
	})
}

// checkSummary checks what every scenario must show.
func checkSummary(t *testing.T, s summary, stderr string, deliveries, latency bool) {
	t.Helper()
	want := int64(s.Conns + s.Changers)
	if s.Errors != 0 || s.Stale != 0 || s.Joined != want || s.Connected != want {
		t.Errorf("errors %d, stale %d, joined %d, connected %d; want 0, 0, %d, %d\n%s",
			s.Errors, s.Stale, s.Joined, s.Connected, want, want, stderr)
	}
	if strings.Count(stderr, "ready conns=") != 1 || !strings.Contains(stderr, "ready conns="+itoa(want)+"\n") {
		t.Errorf("stderr has no single ready line for %d conns:\n%s", want, stderr)
	}
	if !strings.Contains(stderr, "t=") || !strings.Contains(stderr, " deliveries/s=") {
		t.Errorf("no progress line:\n%s", stderr)
	}
	if s.ConnectPerS <= 0 {
		t.Errorf("connect_per_s %v", s.ConnectPerS)
	}
	if deliveries && s.Deliveries == 0 {
		t.Errorf("no deliveries")
	}
	if latency && (s.P50MS <= 0 || s.P99MS < s.P50MS || s.MaxMS < s.P99MS || s.Latencies == 0) {
		t.Errorf("latency p50 %v p99 %v max %v (%d samples): want 0 < p50 <= p99 <= max", s.P50MS, s.P99MS, s.MaxMS, s.Latencies)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestProcs runs two children (this test binary re-executed) and checks
// that the parent merges their reports.
func TestProcs(t *testing.T) {
	t.Parallel()
	ts := startTestServer(t)
	args := []string{"-url", ts.url(), "-scenario", "fanout", "-conns", "30", "-changers", "3", "-procs", "2",
		"-duration", "1s", "-settle", "500ms", "-progress", "200ms", "-source", "127.0.0.1,127.0.0.2"}
	s, stderr, err := runLoad(t, args, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}
	if s.Procs != 2 {
		t.Errorf("procs %d", s.Procs)
	}
	checkSummary(t, s, stderr, true, true)
	// Every listener sees every change (3 changers, 100 a second, 1 s; no
	// more than one per change and listener, some coalesced).
	if s.Deliveries > 100*30 || s.Deliveries < 30 {
		t.Errorf("%d deliveries for 30 listeners and 100 changes", s.Deliveries)
	}
	if s.SendLagP99MS <= 0 { // the children's send lag reaches the summary
		t.Errorf("send_lag_p99_ms %v", s.SendLagP99MS)
	}
}

// TestMaxErrors: connections to a closed port are errors, and more errors
// than -max-errors make exit status 1 (the summary still printed).
func TestMaxErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + ln.Addr().String() + "/ws"
	ln.Close()
	for _, tt := range []struct {
		maxErrors string
		status    int
	}{{"0", 1}, {"1000", 0}} {
		t.Run("max-errors="+tt.maxErrors, func(t *testing.T) {
			t.Parallel()
			s, stderr, err := runLoad(t, []string{"-url", url, "-conns", "5", "-duration", "100ms", "-settle", "0s",
				"-max-errors", tt.maxErrors}, nil)
			if s.Errors != 15 || s.Connected != 0 {
				t.Errorf("errors %d, connected %d: want 15 (three attempts each), 0", s.Errors, s.Connected)
			}
			if got := exitStatus(err, new(bytes.Buffer)); got != tt.status {
				t.Errorf("exit status %d (err %v), want %d\n%s", got, err, tt.status, stderr)
			}
			if tt.status == 1 && !errors.Is(err, errTooManyErrors) {
				t.Errorf("err %v, want errTooManyErrors", err)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	if cfg, err := parseFlags([]string{"-h"}, &out); cfg != nil || err != nil {
		t.Fatalf("-h: %v %v", cfg, err)
	}
	for _, name := range []string{"-scenario", "-target", "-url", "-conns", "-rooms", "-rate", "-duration", "-changers",
		"-disrupt", "-disrupt-at", "-procs", "-source", "-ramp", "-token", "-jwt-secret", "-max-errors",
		"-progress", "-settle", "-quiet", "reconnect", "leave"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("-h does not mention %s", name)
		}
	}
	if strings.Contains(out.String(), "-child") {
		t.Errorf("-h shows the internal -child flag")
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-scenario", "nope"}, "-scenario"},
		{[]string{"-target", "x"}, "unknown"},
		{[]string{"-url", "wss://h/ws"}, "ws://"},
		{[]string{"-conns", "0"}, "-conns"},
		{[]string{"-rooms", "5", "-conns", "2"}, "-rooms"},
		{[]string{"-source", "nope"}, "-source"},
		{[]string{"-scenario", "typing", "-changers", "65"}, "64"},
	} {
		_, err := parseFlags(tt.args, io_discard{})
		var uerr usageError
		if !errors.As(err, &uerr) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want a usage error with %q", tt.args, err, tt.want)
		}
	}
	cfg, err := parseFlags([]string{"-scenario", "fanout", "-conns", "30"}, io_discard{})
	if err != nil || cfg.rooms != 1 || cfg.rate != 100 || cfg.changers != 10 || cfg.disruptAt != cfg.duration/3 {
		t.Errorf("fanout defaults: %+v %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"-scenario", "idle", "-conns", "15000"}, io_discard{})
	if err != nil || cfg.rooms != 1000 || cfg.changers != 0 {
		t.Errorf("idle defaults: %+v %v", cfg, err)
	}
}

type io_discard struct{}

func (io_discard) Write(p []byte) (int, error) { return len(p), nil }

// TestTokens: -jwt-secret mints a token per user; a join the token does
// not allow is an error, and does not hold up the ready line.
func TestTokens(t *testing.T) {
	t.Parallel()
	const secret = "0123456789abcdef0123456789abcdef"
	ts := startTestServerWith(t, func(cfg *server.Config) {
		cfg.Presence.Insecure = false
		cfg.JWT = auth.Config{HS256Secret: []byte(secret)}
	})
	t.Run("jwt-secret", func(t *testing.T) {
		s, stderr, err := runLoad(t, []string{"-url", ts.url(), "-conns", "10", "-rooms", "2", "-duration", "200ms",
			"-settle", "0s", "-progress", "50ms", "-jwt-secret", secret}, nil)
		if err != nil {
			t.Fatalf("run: %v\n%s", err, stderr)
		}
		checkSummary(t, s, stderr, false, false)
	})
	t.Run("room refused", func(t *testing.T) {
		enc := base64.RawURLEncoding
		body := enc.EncodeToString(fmt.Appendf(nil, `{"sub":"u0","exp":%d,"rooms":["other"]}`, time.Now().Add(time.Hour).Unix()))
		head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(head + "." + body))
		token := head + "." + body + "." + enc.EncodeToString(mac.Sum(nil))
		s, stderr, err := runLoad(t, []string{"-url", ts.url(), "-conns", "3", "-rooms", "1", "-duration", "200ms",
			"-settle", "0s", "-token", token}, nil)
		if !errors.Is(err, errTooManyErrors) || s.Errors != 3 || s.Joined != 0 || s.Connected != 3 {
			t.Errorf("err %v, errors %d, joined %d, connected %d: want errTooManyErrors, 3, 0, 3", err, s.Errors, s.Joined, s.Connected)
		}
		if !strings.Contains(stderr, "ready conns=0\n") || !strings.Contains(stderr, "forbidden") {
			t.Errorf("stderr:\n%s", stderr)
		}
	})
}

// proxy forwards TCP connections to a server; cut closes every forwarded
// connection (a network failure the server learns of as a reset or EOF).
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn // guarded by mu
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		for _, pair := range [][2]net.Conn{{c, s}, {s, c}} {
			p.wg.Go(func() {
				io.Copy(pair[0], pair[1])
				pair[0].Close()
				pair[1].Close()
			})
		}
	}
}

func (p *proxy) cut() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	p.conns = nil
	return nil
}

// TestResume: connections cut while the server stays up come back and
// resume their rooms from their cursors (within the leave grace, so the
// server still has the history).
func TestResume(t *testing.T) {
	t.Parallel()
	ts := startTestServerWith(t, func(cfg *server.Config) { cfg.Presence.LeaveGrace = 10 * time.Second })
	p := startProxy(t, ts.addr)
	args := []string{"-url", "ws://" + p.ln.Addr().String() + "/ws", "-scenario", "reconnect", "-conns", "20", "-rooms", "2",
		"-duration", "2s", "-disrupt-at", "300ms", "-settle", "300ms", "-progress", "200ms"}
	s, stderr, err := runLoad(t, args, func(cfg *config) { cfg.disruptFn = p.cut })
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}
	checkSummary(t, s, stderr, false, false)
	if s.Reconnects != 20 || s.Resumes != 20 || s.ConvergeMS <= 0 {
		t.Errorf("reconnects %d, resumes %d, converge_ms %v: want 20, 20, > 0", s.Reconnects, s.Resumes, s.ConvergeMS)
	}
}
