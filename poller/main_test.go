package poller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"
)

// helperEnv selects a helper mode of the test binary: the EMFILE test
// re-executes it as a child server process (see emfileHelper).
const helperEnv = "POLLER_TEST_HELPER"

func TestMain(m *testing.M) {
	// A helper child runs its mode and exits before goleak or any test.
	switch mode := os.Getenv(helperEnv); mode {
	case "":
	case "emfile":
		os.Exit(emfileHelper())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, mode)
		os.Exit(2)
	}
	goleak.VerifyTestMain(m,
		// netpoll keeps its poller goroutines for the life of the process.
		goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
	)
}

// testEngines lists the engines every transport test runs against.
var testEngines = []string{EngineEpoll, EngineNetpoll}

// errNotBuilt is the message of New while the netpoll engine is a stub:
// its subtests are skipped, so the suite is ready the day it lands.
const errNotBuilt = "poller: netpoll engine not built yet"

// forEachEngine runs fn as one subtest per engine.
func forEachEngine(t *testing.T, fn func(t *testing.T, engine string)) {
	for _, engine := range testEngines {
		t.Run(engine, func(t *testing.T) { fn(t, engine) })
	}
}

// testServer is a Server running in a goroutine of the test.
type testServer struct {
	*Server
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned
	err    error         // Run's result; read after done
}

// startServer starts a server with engine on 127.0.0.1:0 (unless cfg.Addr
// says otherwise) and stops it in t.Cleanup. It skips the test when the
// engine is not built yet.
func startServer(t testing.TB, engine string, cfg Config, h Handler) *testServer {
	t.Helper()
	cfg.Engine = engine
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg, h)
	if err != nil {
		if err.Error() == errNotBuilt {
			t.Skipf("engine %s: %v", engine, err)
		}
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, cancel: cancel, done: make(chan struct{})}
	go func() {
		ts.err = s.Run(ctx)
		close(ts.done)
	}()
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Error(err)
		}
	})
	return ts
}

// stop cancels Run's context and waits for Run to return. It may be called
// more than once.
func (ts *testServer) stop() error {
	ts.cancel()
	select {
	case <-ts.done:
		if ts.err != nil {
			return fmt.Errorf("Run: %w", ts.err)
		}
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("Run did not return within 30s of its context being cancelled")
	}
}

// startRecorded starts a server whose handler is a fresh recorder (echoing
// messages) that also records OnReject.
func startRecorded(t testing.TB, engine string, cfg Config) (*testServer, *recorder) {
	t.Helper()
	rec := newRecorder()
	cfg.OnReject = rec.onReject
	return startServer(t, engine, cfg, rec), rec
}

// eventually calls fn until it returns nil, failing the test with fn's last
// error once timeout has passed.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// message is one message as the handler received it.
type message struct {
	op      ws.OpCode
	payload string
}

func (m message) String() string {
	p := m.payload
	if len(p) > 40 {
		p = fmt.Sprintf("%.40q...(%d bytes)", p, len(p))
	} else {
		p = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("%v %s", m.op, p)
}

// connLog is what the handler saw of one connection.
type connLog struct {
	conn      *Conn
	msgs      []message
	deadlines []time.Time
	closes    []CloseInfo
	active    int // callbacks running
}

// recorder is a Handler that records every event per connection (keyed by
// the client's address, which the client knows) and checks the callback
// order the Handler contract promises. It echoes messages and calls the
// optional hooks.
type recorder struct {
	onOpenHook func(c *Conn) // static after construction
	onDeadHook func(c *Conn) // static after construction

	mu        sync.Mutex
	conns     map[netip.AddrPort]*connLog // guarded by mu
	rejects   []RejectReason              // guarded by mu
	violation []string                    // guarded by mu: broken Handler contract
}

var _ Handler = (*recorder)(nil)

func newRecorder() *recorder {
	return &recorder{conns: make(map[netip.AddrPort]*connLog)}
}

func (r *recorder) OnOpen(c *Conn) {
	r.mu.Lock()
	// A client port may be reused once its connection has closed (the
	// machine's tcp_tw_reuse, under port pressure): only an open one is a
	// second OnOpen.
	if old, dup := r.conns[c.RemoteAddr()]; dup && len(old.closes) == 0 {
		r.violation = append(r.violation, fmt.Sprintf("%v: second OnOpen", c.RemoteAddr()))
	}
	l := &connLog{conn: c}
	r.conns[c.RemoteAddr()] = l
	r.mu.Unlock()
	defer r.exit(l)
	r.enter(c, "OnOpen")
	if r.onOpenHook != nil {
		r.onOpenHook(c)
	}
}

func (r *recorder) OnMessage(c *Conn, op ws.OpCode, msg []byte) {
	l := r.enter(c, "OnMessage")
	defer r.exit(l)
	r.mu.Lock()
	l.msgs = append(l.msgs, message{op, string(msg)})
	if op != ws.OpText && op != ws.OpBinary {
		r.violation = append(r.violation, fmt.Sprintf("%v: OnMessage with opcode %v", c.RemoteAddr(), op))
	}
	r.mu.Unlock()
	c.Send(AppendFrame(nil, op, msg))
}

func (r *recorder) OnDeadline(c *Conn) {
	l := r.enter(c, "OnDeadline")
	defer r.exit(l)
	r.mu.Lock()
	l.deadlines = append(l.deadlines, time.Now())
	r.mu.Unlock()
	if r.onDeadHook != nil {
		r.onDeadHook(c)
	}
}

func (r *recorder) OnClose(c *Conn, info CloseInfo) {
	l := r.enter(c, "OnClose")
	defer r.exit(l)
	r.mu.Lock()
	l.closes = append(l.closes, info)
	r.mu.Unlock()
}

// enter starts a callback for c: it returns c's log and records a
// violation when c is not between OnOpen and OnClose or when another
// callback for c is running.
func (r *recorder) enter(c *Conn, event string) *connLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.conns[c.RemoteAddr()]
	switch {
	case l == nil || l.conn != c:
		r.violation = append(r.violation, fmt.Sprintf("%v: %s before OnOpen", c.RemoteAddr(), event))
		l = &connLog{conn: c}
	case len(l.closes) > 0:
		r.violation = append(r.violation, fmt.Sprintf("%v: %s after OnClose", c.RemoteAddr(), event))
	}
	if l.active++; l.active > 1 {
		r.violation = append(r.violation, fmt.Sprintf("%v: %s overlaps another callback", c.RemoteAddr(), event))
	}
	return l
}

func (r *recorder) exit(l *connLog) {
	r.mu.Lock()
	l.active--
	r.mu.Unlock()
}

func (r *recorder) onReject(reason RejectReason) {
	r.mu.Lock()
	r.rejects = append(r.rejects, reason)
	r.mu.Unlock()
}

// check fails t if the Handler contract was broken.
func (r *recorder) check(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.violation {
		t.Errorf("handler contract: %s", v)
	}
}

// conn waits for the OnOpen of the connection from client address a.
func (r *recorder) conn(t testing.TB, a netip.AddrPort) *Conn {
	t.Helper()
	var c *Conn
	eventually(t, ioTimeout, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if l := r.conns[a]; l != nil {
			c = l.conn
			return nil
		}
		return fmt.Errorf("no OnOpen for %v", a)
	})
	return c
}

// closeInfo waits for the OnClose of the connection from a and returns it.
// It fails if OnClose came more than once.
func (r *recorder) closeInfo(t testing.TB, a netip.AddrPort) CloseInfo {
	t.Helper()
	var info CloseInfo
	eventually(t, ioTimeout, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		l := r.conns[a]
		switch {
		case l == nil:
			return fmt.Errorf("no OnOpen for %v", a)
		case len(l.closes) == 0:
			return fmt.Errorf("no OnClose for %v", a)
		case len(l.closes) > 1:
			return nil // reported below
		}
		info = l.closes[0]
		return nil
	})
	r.mu.Lock()
	n := len(r.conns[a].closes)
	r.mu.Unlock()
	if n != 1 {
		t.Fatalf("OnClose called %d times", n)
	}
	return info
}

func (r *recorder) messages(a netip.AddrPort) []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.conns[a]; l != nil {
		return slices.Clone(l.msgs)
	}
	return nil
}

func (r *recorder) deadlines(a netip.AddrPort) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.conns[a]; l != nil {
		return slices.Clone(l.deadlines)
	}
	return nil
}

// rejected returns the reject reasons seen so far.
func (r *recorder) rejected() []RejectReason {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.rejects)
}

// countRejects counts the rejects with reason want.
func (r *recorder) countRejects(want RejectReason) int {
	n := 0
	for _, got := range r.rejected() {
		if got == want {
			n++
		}
	}
	return n
}

// waitReject waits until OnReject has reported want at least n times.
func (r *recorder) waitReject(t testing.TB, want RejectReason, n int) {
	t.Helper()
	eventually(t, ioTimeout, func() error {
		if got := r.countRejects(want); got < n {
			return fmt.Errorf("OnReject(%v) seen %d times, want %d (all: %v)", want, got, n, r.rejected())
		}
		return nil
	})
}
