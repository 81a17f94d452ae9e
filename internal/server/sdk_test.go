package server_test

// Integration tests of the Go SDK (package client) against a whole
// in-process server: presence views, resume after a dropped connection,
// reconnect across a server restart, no reconnect after 4101, full-jitter
// backoff of a fleet, token refresh.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/client"
	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// sdkTick is the coalescing window of the servers of these tests.
const sdkTick = 20 * time.Millisecond

// sdkWait bounds every wait for something the server or the SDK does
// within a few ticks (generous for -race on a loaded machine).
const sdkWait = 5 * time.Second

// sdkInsecure is the configuration of an insecure server with a short tick.
func sdkInsecure() server.Config {
	return server.Config{Presence: presence.Config{Insecure: true, Tick: sdkTick}}
}

// sdkURL is the WebSocket endpoint of a server listening on addr.
func sdkURL(addr netip.AddrPort) string { return "ws://" + addr.String() + "/ws" }

// sdkEvent is an event of a client with the time it was received.
type sdkEvent struct {
	client.Event
	at time.Time
}

// sdkRec records the events of one client.
type sdkRec struct {
	done chan struct{} // closed when the client's Events channel is closed

	mu  sync.Mutex
	evs []sdkEvent // guarded by mu
}

// sdkDial dials with cfg (within sdkWait), records the client's events,
// and closes the client when the test ends.
func sdkDial(t *testing.T, cfg client.Config) (*client.Client, *sdkRec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sdkWait)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial %s (user %q): %v", cfg.URL, cfg.User, err)
	}
	r := &sdkRec{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.evs = append(r.evs, sdkEvent{Event: ev, at: time.Now()})
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-r.done
	})
	return c, r
}

// all returns the events received so far.
func (r *sdkRec) all() []sdkEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

// wait returns the first event for which ok holds, waiting up to sdkWait.
func (r *sdkRec) wait(t *testing.T, what string, ok func(ev client.Event) bool) sdkEvent {
	t.Helper()
	var found sdkEvent
	eventually(t, sdkWait, func() error {
		for _, ev := range r.all() {
			if ok(ev.Event) {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("no %s event among %s", what, sdkKinds(r.all()))
	})
	return found
}

func sdkKinds(evs []sdkEvent) string {
	var b strings.Builder
	for i, ev := range evs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(ev.Kind.String())
		if ev.Room != "" {
			b.WriteString("(" + ev.Room + ")")
		}
	}
	return "[" + b.String() + "]"
}

// sdkMembers checks that the view of room holds exactly the users of want,
// each with its status.
func sdkMembers(c *client.Client, room string, want map[string]string) error {
	v, ok := c.Room(room)
	if !ok {
		return fmt.Errorf("room %s is not joined", room)
	}
	got := make(map[string]string, len(v.Members))
	for u, m := range v.Members {
		got[u] = m.Status
	}
	if !v.Synced || !maps.Equal(got, want) || v.Count != len(want) {
		return fmt.Errorf("view of %s: synced %v, members %v, count %d; want %v", room, v.Synced, got, v.Count, want)
	}
	return nil
}

// sdkMeta checks the meta of user in the view of room.
func sdkMeta(c *client.Client, room, user, want string) error {
	v, _ := c.Room(room)
	m, ok := v.Members[user]
	if !ok {
		return fmt.Errorf("view of %s has no %s", room, user)
	}
	if !sdkJSONEqual(m.Meta, []byte(want)) {
		return fmt.Errorf("view of %s: meta of %s is %s, want %s", room, user, m.Meta, want)
	}
	return nil
}

func sdkJSONEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func sdkJoin(t *testing.T, c *client.Client, room string, st *client.State) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sdkWait)
	defer cancel()
	if err := c.Join(ctx, room, st); err != nil {
		t.Fatalf("Join %s: %v", room, err)
	}
}

// sdkMetric waits until the counter or gauge name (with labels) equals want.
func sdkMetric(t *testing.T, reg prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	eventually(t, sdkWait, func() error {
		if got := metric(t, reg, name, labels...); got != want {
			return fmt.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
		return nil
	})
}

// sdkProxy is a TCP proxy between SDK clients and a server, which can cut
// every connection it carries (a reset on both sides) and hold new ones.
type sdkProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // guarded by mu: both sides of every proxied connection
	gate   chan struct{}         // guarded by mu: non-nil: new connections wait until it is closed
	closed bool                  // guarded by mu
}

// sdkNewProxy starts a proxy to target; the test's cleanup stops it.
func sdkNewProxy(t *testing.T, target string) *sdkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &sdkProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *sdkProxy) url() string { return "ws://" + p.ln.Addr().String() + "/ws" }

func (p *sdkProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *sdkProxy) serve(down net.Conn) {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if !p.track(down) {
		down.Close()
		return
	}
	defer p.untrack(down)
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		down.Close()
		return
	}
	if !p.track(up) {
		up.Close()
		down.Close()
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(up, down)
		up.Close()
		down.Close()
	})
	io.Copy(down, up)
	down.Close()
	up.Close()
	wg.Wait()
}

func (p *sdkProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *sdkProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// cut resets every proxied connection, both towards the client and towards
// the server.
func (p *sdkProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutLocked()
}

func (p *sdkProxy) cutLocked() {
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // close sends RST
		}
		c.Close()
		delete(p.conns, c)
	}
}

// hold makes new connections wait (accepted, not forwarded) until release.
func (p *sdkProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

func (p *sdkProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

func (p *sdkProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
	p.cutLocked()
	p.mu.Unlock()
	p.wg.Wait()
}

// TestSDKPresence: two SDK clients in one room see each other, and each
// Set, Typing and Leave of one in the other's view, through Synced and
// Changed events.
func TestSDKPresence(t *testing.T) {
	for _, engine := range []string{poller.EngineEpoll, poller.EngineNetpoll} {
		t.Run(engine, func(t *testing.T) {
			cfg := sdkInsecure()
			cfg.Engine = engine
			n := startServer(t, cfg)
			const room = "chat:42"

			alice, aliceEv := sdkDial(t, client.Config{URL: sdkURL(n.Addr()), User: "alice"})
			bob, bobEv := sdkDial(t, client.Config{URL: sdkURL(n.Addr()), User: "bob"})
			if _, _, user := alice.Conn(); user != "alice" {
				t.Fatalf("alice's welcome names user %q", user)
			}
			sdkJoin(t, alice, room, &client.State{Status: "online", Meta: json.RawMessage(`{"name":"Alice"}`)})
			// A joiner sees itself in its sync.
			eventually(t, sdkWait, func() error { return sdkMembers(alice, room, map[string]string{"alice": "online"}) })
			sdkJoin(t, bob, room, &client.State{Status: "busy"})

			both := map[string]string{"alice": "online", "bob": "busy"}
			for _, c := range []*client.Client{alice, bob} {
				eventually(t, sdkWait, func() error { return sdkMembers(c, room, both) })
			}
			if err := sdkMeta(bob, room, "alice", `{"name":"Alice"}`); err != nil {
				t.Error(err)
			}
			aliceEv.wait(t, "alice: Synced", func(ev client.Event) bool { return ev.Kind == client.EventSynced && ev.Room == room })
			bobEv.wait(t, "bob: Synced", func(ev client.Event) bool { return ev.Kind == client.EventSynced && ev.Room == room })
			// Alice joined first: bob's join reaches her as a diff.
			aliceEv.wait(t, "alice: Changed with bob's join", func(ev client.Event) bool {
				return ev.Kind == client.EventChanged && ev.Room == room &&
					slices.ContainsFunc(ev.Diff.Join, func(m client.Member) bool { return m.User == "bob" })
			})

			// Set merges: the meta Alice did not send is kept.
			ctx, cancel := context.WithTimeout(context.Background(), sdkWait)
			defer cancel()
			if err := alice.Set(ctx, room, client.State{Status: "away"}); err != nil {
				t.Fatalf("Set: %v", err)
			}
			away := map[string]string{"alice": "away", "bob": "busy"}
			eventually(t, sdkWait, func() error { return sdkMembers(bob, room, away) })
			if err := sdkMeta(bob, room, "alice", `{"name":"Alice"}`); err != nil {
				t.Error(err)
			}
			bobEv.wait(t, "bob: Changed with alice's update", func(ev client.Event) bool {
				return ev.Kind == client.EventChanged && ev.Room == room &&
					slices.ContainsFunc(ev.Diff.Update, func(m client.Member) bool { return m.User == "alice" && m.Status == "away" })
			})

			typing := func(want ...string) func() error {
				return func() error {
					v, _ := bob.Room(room)
					if !slices.Equal(v.Typing, want) && !(len(want) == 0 && len(v.Typing) == 0) {
						return fmt.Errorf("bob's view: typing %q, want %q", v.Typing, want)
					}
					return nil
				}
			}
			if err := alice.Typing(room, true); err != nil {
				t.Fatalf("Typing on: %v", err)
			}
			eventually(t, sdkWait, typing("alice"))
			if err := alice.Typing(room, false); err != nil {
				t.Fatalf("Typing off: %v", err)
			}
			eventually(t, sdkWait, typing())

			if err := alice.Leave(ctx, room); err != nil {
				t.Fatalf("Leave: %v", err)
			}
			if _, ok := alice.Room(room); ok {
				t.Error("alice still has a view of the room she left")
			}
			eventually(t, sdkWait, func() error { return sdkMembers(bob, room, map[string]string{"bob": "busy"}) })
			bobEv.wait(t, "bob: Changed with alice's leave", func(ev client.Event) bool {
				return ev.Kind == client.EventChanged && ev.Room == room && slices.Contains(ev.Diff.Leave, "alice")
			})

			for name, c := range map[string]*client.Client{"alice": alice, "bob": bob} {
				if st := c.Stats(); st.Gaps != 0 || st.CommandErrors != 0 || st.Reconnects != 0 {
					t.Errorf("%s: stats %+v: want no gap, no command error, no reconnect", name, st)
				}
			}
		})
	}
}

// TestSDKResumeAfterDrop: a client whose connection is reset reconnects
// through the same proxy and resumes its room with a diff carrying what it
// missed; the leave grace hides the drop from the other members.
func TestSDKResumeAfterDrop(t *testing.T) {
	cfg := sdkInsecure()
	cfg.Presence.LeaveGrace = time.Minute // never expires within the test
	n := startServer(t, cfg)
	p := sdkNewProxy(t, n.Addr().String())
	const room = "r"

	carol, carolEv := sdkDial(t, client.Config{URL: sdkURL(n.Addr()), User: "carol"})
	sdkJoin(t, carol, room, nil)
	alice, aliceEv := sdkDial(t, client.Config{URL: p.url(), User: "alice", MinBackoff: 20 * time.Millisecond})
	sdkJoin(t, alice, room, &client.State{Status: "busy", Meta: json.RawMessage(`{"name":"Alice"}`)})
	two := map[string]string{"alice": "busy", "carol": "online"}
	eventually(t, sdkWait, func() error { return sdkMembers(alice, room, two) })
	eventually(t, sdkWait, func() error { return sdkMembers(carol, room, two) })
	before := alice.Stats()

	// Cut alice off, and hold her reconnect until bob has joined.
	p.hold()
	p.cut()
	sdkMetric(t, n.reg, 1, "presenced_connections_active") // the server saw the loss: carol only
	sdkMetric(t, n.reg, 1, "presenced_connections_closed_total", "reason", "reset")
	aliceEv.wait(t, "alice: Disconnected", func(ev client.Event) bool {
		return ev.Kind == client.EventDisconnected && !ev.Terminal
	})
	bob, _ := sdkDial(t, client.Config{URL: sdkURL(n.Addr()), User: "bob"})
	sdkJoin(t, bob, room, nil)
	three := map[string]string{"alice": "busy", "bob": "online", "carol": "online"}
	eventually(t, sdkWait, func() error { return sdkMembers(carol, room, three) }) // alice kept by the grace
	p.release()

	eventually(t, sdkWait, func() error { return sdkMembers(alice, room, three) })
	aliceEv.wait(t, "alice: Connected (resumed)", func(ev client.Event) bool {
		return ev.Kind == client.EventConnected && ev.Resumed
	})
	sdkMetric(t, n.reg, 1, "presenced_resume_attempts_total")
	sdkMetric(t, n.reg, 1, "presenced_resume_successes_total")
	after := alice.Stats()
	if after.Gaps != 0 || after.Syncs != before.Syncs || after.Diffs <= before.Diffs || after.Reconnects != 1 {
		t.Errorf("alice's stats before the drop %+v, after the resume %+v: want no gap, no new sync, new diffs, one reconnect",
			before, after)
	}
	if err := sdkMeta(alice, room, "alice", `{"name":"Alice"}`); err != nil {
		t.Error(err)
	}

	// Carol never saw alice leave, nor join again.
	joins, leaves := 0, 0
	for _, ev := range carolEv.all() {
		if ev.Diff == nil {
			continue
		}
		if ev.Kind == client.EventChanged && slices.ContainsFunc(ev.Diff.Join, func(m client.Member) bool { return m.User == "alice" }) {
			joins++
		}
		if slices.Contains(ev.Diff.Leave, "alice") {
			leaves++
		}
	}
	if joins > 1 || leaves != 0 {
		t.Errorf("carol saw alice join %d times and leave %d times; want at most one join (the first) and no leave", joins, leaves)
	}
	if got := metric(t, n.reg, "presenced_leaves_total"); got != 0 {
		t.Errorf("presenced_leaves_total = %v, want 0", got)
	}
}

// sdkFreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func sdkFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestSDKServerRestart: a drained server's client comes back, after the
// bye's retry_ms, to the new server on the same address; its resume falls
// back to a sync (the new node knows no cursor of the old one) and its
// state is restored there.
func TestSDKServerRestart(t *testing.T) {
	addr := sdkFreeAddr(t)
	url := "ws://" + addr + "/ws"
	const room = "r"
	cfg := sdkInsecure()
	cfg.Addr = addr
	cfg.Drain = 500 * time.Millisecond
	cfg.Presence.Node = "n1"
	_, stop1 := startServerStop(t, cfg)

	alice, aliceEv := sdkDial(t, client.Config{URL: url, User: "alice", MinBackoff: 50 * time.Millisecond})
	sdkJoin(t, alice, room, &client.State{Status: "online", Meta: json.RawMessage(`{"name":"Alice"}`)})
	ctx, cancel := context.WithTimeout(context.Background(), sdkWait)
	defer cancel()
	if err := alice.Set(ctx, room, client.State{Status: "away"}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	eventually(t, sdkWait, func() error { return sdkMembers(alice, room, map[string]string{"alice": "away"}) })
	if err := sdkMeta(alice, room, "alice", `{"name":"Alice"}`); err != nil {
		t.Fatal(err)
	}
	syncs := alice.Stats().Syncs

	if err := stop1(); err != nil {
		t.Fatalf("Run of the first server: %v", err)
	}
	bye := aliceEv.wait(t, "alice: Bye", func(ev client.Event) bool { return ev.Kind == client.EventBye })
	if bye.RetryIn < 0 || bye.RetryIn >= cfg.Drain {
		t.Errorf("bye retry_ms %v, want within [0, %v)", bye.RetryIn, cfg.Drain)
	}

	cfg.Presence.Node = "n2"
	n2, _ := startServerStop(t, cfg)
	eventually(t, sdkWait, func() error {
		if node, _, _ := alice.Conn(); node != "n2" || alice.ConnState() != client.StateConnected {
			return fmt.Errorf("alice: node %q, state %v; want connected to n2", node, alice.ConnState())
		}
		return nil
	})
	bob, _ := sdkDial(t, client.Config{URL: url, User: "bob"})
	sdkJoin(t, bob, room, nil)
	both := map[string]string{"alice": "away", "bob": "online"}
	for _, c := range []*client.Client{alice, bob} {
		eventually(t, sdkWait, func() error { return sdkMembers(c, room, both) })
	}
	sdkMetric(t, n2.reg, 1, "presenced_resume_attempts_total")
	sdkMetric(t, n2.reg, 0, "presenced_resume_successes_total")
	if st := alice.Stats(); st.Syncs <= syncs || st.Reconnects != 1 {
		t.Errorf("alice: stats %+v: want a new sync (was %d) and one reconnect", st, syncs)
	}
	t.Run("meta kept", func(t *testing.T) {
		// The server's set merges (a missing meta keeps the old one), so
		// the meta alice joined with is still hers after Set{away}; the
		// SDK must restore that on the new node.
		eventually(t, sdkWait, func() error { return sdkMeta(bob, room, "alice", `{"name":"Alice"}`) })
	})
}

// sdkSecret is the HS256 secret of the JWT servers of these tests.
var sdkSecret = []byte("sdk-test-secret-0123456789abcdef")

// sdkToken signs a token for user valid for ttl; n makes it unique.
func sdkToken(user string, ttl time.Duration, n int64) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
		"jti": fmt.Sprint(n),
	}).SignedString(sdkSecret)
}

// TestSDKNoReconnectOn4101: a refused token ends Dial with close 4101; a
// TokenFunc gets one more attempt, only with a different token.
func TestSDKNoReconnectOn4101(t *testing.T) {
	tests := []struct {
		name      string
		token     string                           // static token
		tokens    func(call int64) (string, error) // TokenFunc, when set
		wantErr   bool
		wantConns float64 // connections the server saw
		wantCalls int64   // TokenFunc calls
	}{
		{name: "static token", token: "not-a-jwt", wantErr: true, wantConns: 1},
		{
			name:      "token func, same token",
			tokens:    func(int64) (string, error) { return "not-a-jwt", nil },
			wantErr:   true,
			wantConns: 1,
			wantCalls: 2,
		},
		{
			name:      "token func, another bad token",
			tokens:    func(call int64) (string, error) { return fmt.Sprintf("not-a-jwt-%d", call), nil },
			wantErr:   true,
			wantConns: 2,
			wantCalls: 2,
		},
		{
			name: "token func, expired then valid",
			tokens: func(call int64) (string, error) {
				if call == 1 {
					return sdkToken("alice", -time.Hour, call)
				}
				return sdkToken("alice", time.Hour, call)
			},
			wantConns: 2,
			wantCalls: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := startServer(t, server.Config{JWT: auth.Config{HS256Secret: sdkSecret}, Presence: presence.Config{Tick: sdkTick}})
			cfg := client.Config{URL: sdkURL(n.Addr()), Token: tt.token, MinBackoff: 20 * time.Millisecond}
			var calls atomic.Int64
			if tt.tokens != nil {
				cfg.TokenFunc = func(context.Context) (string, error) { return tt.tokens(calls.Add(1)) }
			}
			ctx, cancel := context.WithTimeout(context.Background(), sdkWait)
			defer cancel()
			c, err := client.Dial(ctx, cfg)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				c.Close()
			} else {
				if err == nil {
					c.Close()
					t.Fatal("Dial succeeded")
				}
				ce, ok := errors.AsType[*client.CloseError](err)
				if !ok || ce.Code != client.CloseUnauthorized {
					t.Fatalf("Dial: %v (%T), want a *client.CloseError with code 4101", err, err)
				}
			}
			unauthorized := tt.wantConns
			if !tt.wantErr {
				unauthorized--
			}
			sdkMetric(t, n.reg, unauthorized, "presenced_hello_failures_total", "reason", "unauthorized")
			// Nothing else may come: leave room for a (wrong) retry
			// after several backoffs.
			time.Sleep(10 * cfg.MinBackoff)
			if got := metric(t, n.reg, "presenced_connections_opened_total"); got != tt.wantConns {
				t.Errorf("presenced_connections_opened_total = %v, want %v", got, tt.wantConns)
			}
			if got := metric(t, n.reg, "presenced_hello_failures_total", "reason", "unauthorized"); got != unauthorized {
				t.Errorf("presenced_hello_failures_total{reason=unauthorized} = %v, want %v", got, unauthorized)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("TokenFunc called %d times, want %d", got, tt.wantCalls)
			}
		})
	}
}

// TestSDKBackoffSpread: a fleet cut off at once comes back spread over the
// first backoff window (full jitter), not all at once.
func TestSDKBackoffSpread(t *testing.T) {
	const (
		clients    = 100
		minBackoff = 200 * time.Millisecond
	)
	n := startServer(t, sdkInsecure())
	p := sdkNewProxy(t, n.Addr().String())
	cs := make([]*client.Client, clients)
	recs := make([]*sdkRec, clients)
	for i := range clients {
		cs[i], recs[i] = sdkDial(t, client.Config{URL: p.url(), User: fmt.Sprintf("u%d", i), MinBackoff: minBackoff})
	}
	sdkMetric(t, n.reg, clients, "presenced_connections_active")

	cut := time.Now()
	p.cut()
	eventually(t, sdkWait, func() error {
		back := 0
		for _, c := range cs {
			if c.Stats().Reconnects == 1 {
				back++
			}
		}
		if back < clients {
			return fmt.Errorf("%d of %d clients reconnected", back, clients)
		}
		return nil
	})
	sdkMetric(t, n.reg, 2*clients, "presenced_connections_opened_total")

	// The SDK sleeps exactly the delay it reports as RetryIn (client/run.go
	// emits Disconnected with the delay it then sleeps), so the spread is
	// judged on the drawn delays, which depend only on the SDK's random
	// source. The observed reconnect times are that delay plus scheduling
	// noise: each must come no earlier than its drawn delay, but how
	// densely they bunch measures the machine (one stall of the test
	// process under -race releases every timer due during it at once), so
	// no bound is put on it.
	chosen := make([]time.Duration, 0, clients)
	for i, r := range recs {
		evs := r.all()
		d := slices.IndexFunc(evs, func(ev sdkEvent) bool { return ev.Kind == client.EventDisconnected })
		c := slices.IndexFunc(evs, func(ev sdkEvent) bool { return ev.Kind == client.EventConnected && !ev.at.Before(cut) })
		if d < 0 || c < 0 {
			t.Fatalf("client %d: events %s: want Disconnected then Connected", i, sdkKinds(evs))
		}
		if rd := evs[d].RetryIn; rd < 0 || rd > minBackoff {
			t.Errorf("client %d: first retry in %v, want within [0, %v]", i, rd, minBackoff)
		}
		if back := evs[c].at.Sub(cut); back < evs[d].RetryIn {
			t.Errorf("client %d: reconnected %v after the cut, before its drawn delay %v", i, back, evs[d].RetryIn)
		}
		chosen = append(chosen, evs[d].RetryIn)
	}
	// Uniform over [0, 200 ms]: stddev 58 ms, about 5 per 10 ms window,
	// 160 ms between the 10th and the 90th percentile. Without jitter:
	// all equal (stddev 0, all 100 in one window). The bounds are far
	// from both: a sample of 100 uniform delays misses them with a
	// probability below 1e-9.
	sd, densest := sdkStddev(chosen), sdkDensest(chosen, 10*time.Millisecond)
	t.Logf("drawn first-retry delays: min %v, max %v, stddev %v, densest 10 ms window %d",
		slices.Min(chosen), slices.Max(chosen), sd, densest)
	if sd < 30*time.Millisecond || densest > clients/4 {
		t.Errorf("drawn first-retry delays: stddev %v (want > 30ms), %d of %d within 10 ms (want at most %d): not full jitter over %v",
			sd, densest, clients, clients/4, minBackoff)
	}
}

func sdkStddev(ds []time.Duration) time.Duration {
	var sum, sq float64
	for _, d := range ds {
		sum += float64(d)
	}
	mean := sum / float64(len(ds))
	for _, d := range ds {
		sq += (float64(d) - mean) * (float64(d) - mean)
	}
	return time.Duration(math.Sqrt(sq / float64(len(ds))))
}

// sdkDensest is the largest number of ds within one window w.
func sdkDensest(ds []time.Duration, w time.Duration) int {
	s := slices.Sorted(slices.Values(ds))
	best := 0
	for i, j := 0, 0; j < len(s); j++ {
		for s[j]-s[i] > w {
			i++
		}
		best = max(best, j-i+1)
	}
	return best
}

// TestSDKRefresh: the server asks for a token refresh (its RefreshBefore
// exceeds the token's lifetime), the client fetches a new token and renews
// it with auth, once.
func TestSDKRefresh(t *testing.T) {
	tests := []struct {
		name       string
		renewedTTL time.Duration // lifetime of the tokens after the hello's
	}{
		{name: "renewed token outside the refresh window", renewedTTL: 2 * time.Hour},
		{name: "renewed token inside the refresh window", renewedTTL: 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := startServer(t, server.Config{
				JWT:      auth.Config{HS256Secret: sdkSecret},
				Presence: presence.Config{Tick: sdkTick, RefreshBefore: time.Hour},
			})
			var calls atomic.Int64
			c, ev := sdkDial(t, client.Config{
				URL: sdkURL(n.Addr()),
				TokenFunc: func(context.Context) (string, error) {
					call := calls.Add(1)
					ttl := 10 * time.Minute // within RefreshBefore: refresh at once
					if call > 1 {
						ttl = tt.renewedTTL
					}
					return sdkToken("alice", ttl, call)
				},
			})
			ev.wait(t, "Refreshed", func(ev client.Event) bool { return ev.Kind == client.EventRefreshed })
			sdkMetric(t, n.reg, 1, "presenced_token_refreshes_total")
			// The connection goes on with the new token.
			sdkJoin(t, c, "r", nil)
			eventually(t, sdkWait, func() error { return sdkMembers(c, "r", map[string]string{"alice": "online"}) })
			// Leave room for further (wrong) refresh rounds: one takes a
			// few milliseconds.
			time.Sleep(500 * time.Millisecond)
			if got := metric(t, n.reg, "presenced_token_refresh_failures_total"); got != 0 {
				t.Errorf("presenced_token_refresh_failures_total = %v, want 0", got)
			}
			refreshes := metric(t, n.reg, "presenced_token_refreshes_total")
			st := c.Stats()
			if refreshes != 1 {
				t.Errorf("presenced_token_refreshes_total = %v, want 1", refreshes)
			}
			if got := calls.Load(); got != 2 {
				t.Errorf("TokenFunc called %d times, want 2 (hello, refresh)", got)
			}
			if st.Refreshes != 1 || st.Reconnects != 0 {
				t.Errorf("stats %+v: want one refresh, no reconnect", st)
			}
		})
	}
}
