package presence

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// closeCounts is a fake CloseCounter.
type closeCounts struct {
	mu sync.Mutex
	n  map[CloseReason]int
}

func (c *closeCounts) Inc(r CloseReason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[CloseReason]int{}
	}
	c.n[r]++
}

func (c *closeCounts) get() map[CloseReason]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[CloseReason]int{}
	for r, n := range c.n {
		m[r] = n
	}
	return m
}

func TestCloseReasonLabels(t *testing.T) {
	want := []string{"peer", "reset", "heartbeat", "hello_timeout", "slow", "token_expired",
		"auth", "rate", "protocol", "drain", "shutdown", "internal", "admin"}
	var got []string
	next := CloseReason(1)
	for r := range CloseReasons() {
		if r != next {
			t.Errorf("CloseReasons yields %d after %d: want consecutive values from 1", r, next-1)
		}
		next = r + 1
		got = append(got, r.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("labels %q, want %q", got, want)
	}
	snake := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for _, l := range got {
		if !snake.MatchString(l) {
			t.Errorf("label %q is not snake_case", l)
		}
	}
	for _, r := range []CloseReason{0, next, 255} {
		if r.String() != "unknown" {
			t.Errorf("CloseReason(%d) = %q, want unknown", r, r)
		}
	}
}

// TestEnding is the decision table of HandleClose: the transport's view and
// the session's own close give the reason and the leave mode.
func TestEnding(t *testing.T) {
	own := recordOf
	const (
		atOnce = false
		grace  = true
	)
	tests := []struct {
		name       string
		end        ConnEnd
		own        closeRecord
		wantReason CloseReason
		wantGrace  bool
	}{
		{"client closes 1000", ConnEnd{EndPeer, wire.CloseNormal}, 0, ClosePeer, atOnce},
		{"client closes 1001 (page navigation)", ConnEnd{EndPeer, wire.CloseGoingAway}, 0, ClosePeer, grace},
		{"client closes without a code", ConnEnd{EndPeer, 1005}, 0, ClosePeer, grace},
		{"client closes 4000", ConnEnd{EndPeer, 4000}, 0, ClosePeer, grace},
		{"client's 1000 came before our 4001", ConnEnd{EndPeer, wire.CloseNormal}, own(wire.CloseHeartbeat, CloseHeartbeat), ClosePeer, atOnce},
		{"connection lost", ConnEnd{}, 0, CloseReset, grace},
		{"connection lost after our 1007", ConnEnd{}, own(wire.CloseInvalidPayload, CloseProtocol), CloseProtocol, atOnce},
		{"connection lost after the drain", ConnEnd{}, own(wire.CloseGoingAway, CloseDrain), CloseDrain, grace},

		{"4001 heartbeat", ConnEnd{EndClosed, wire.CloseHeartbeat}, own(wire.CloseHeartbeat, CloseHeartbeat), CloseHeartbeat, grace},
		{"4002 slow", ConnEnd{EndClosed, wire.CloseSlowConsumer}, own(wire.CloseSlowConsumer, CloseSlow), CloseSlow, grace},
		{"4003 token expired", ConnEnd{EndClosed, wire.CloseTokenExpired}, own(wire.CloseTokenExpired, CloseTokenExpired), CloseTokenExpired, grace},
		{"4004 hello timeout", ConnEnd{EndClosed, wire.CloseHelloTimeout}, own(wire.CloseHelloTimeout, CloseHelloTimeout), CloseHelloTimeout, grace},
		{"4029 flood", ConnEnd{EndClosed, wire.CloseRateLimited}, own(wire.CloseRateLimited, CloseRate), CloseRate, grace},
		{"1001 drain", ConnEnd{EndClosed, wire.CloseGoingAway}, own(wire.CloseGoingAway, CloseDrain), CloseDrain, grace},
		{"1011 verifier failed", ConnEnd{EndClosed, wire.CloseInternalError}, own(wire.CloseInternalError, CloseInternal), CloseInternal, grace},
		{"4101 refused token", ConnEnd{EndClosed, wire.CloseUnauthorized}, own(wire.CloseUnauthorized, CloseAuth), CloseAuth, atOnce},
		{"4103 an operator's disconnect", ConnEnd{EndClosed, wire.CloseForbidden}, own(wire.CloseForbidden, CloseAdmin), CloseAdmin, atOnce},
		{"4000 an operator's disconnect inviting a reconnect", ConnEnd{EndClosed, 4000}, own(4000, CloseAdmin), CloseAdmin, grace},
		{"an operator's disconnect, handshake timed out", ConnEnd{EndTimeout, wire.CloseForbidden}, own(wire.CloseForbidden, CloseAdmin), CloseAdmin, atOnce},
		{"connection lost after an operator's disconnect", ConnEnd{}, own(wire.CloseForbidden, CloseAdmin), CloseAdmin, atOnce},
		{"4103 another user", ConnEnd{EndClosed, wire.CloseForbidden}, own(wire.CloseForbidden, CloseAuth), CloseAuth, atOnce},
		{"1003 binary", ConnEnd{EndClosed, wire.CloseUnsupported}, own(wire.CloseUnsupported, CloseProtocol), CloseProtocol, atOnce},
		{"1007 invalid JSON", ConnEnd{EndClosed, wire.CloseInvalidPayload}, own(wire.CloseInvalidPayload, CloseProtocol), CloseProtocol, atOnce},
		{"4100 bad hello", ConnEnd{EndClosed, wire.CloseBadRequest}, own(wire.CloseBadRequest, CloseProtocol), CloseProtocol, atOnce},
		{"4105 version", ConnEnd{EndClosed, wire.CloseVersion}, own(wire.CloseVersion, CloseProtocol), CloseProtocol, atOnce},
		{"a session close not recorded: by its code", ConnEnd{EndClosed, wire.CloseSlowConsumer}, 0, CloseSlow, grace},
		{"a refused token not recorded: by its code", ConnEnd{EndClosed, wire.CloseUnauthorized}, 0, CloseAuth, atOnce},

		{"transport 1002", ConnEnd{EndProtocol, wire.CloseProtocolError}, 0, CloseProtocol, atOnce},
		{"transport 1007 (UTF-8)", ConnEnd{EndProtocol, wire.CloseInvalidPayload}, 0, CloseProtocol, atOnce},
		{"transport 1008 (unread input beyond the bound)", ConnEnd{EndProtocol, wire.ClosePolicyViolation}, 0, CloseRate, grace},
		{"transport 1008 whose handshake timed out", ConnEnd{EndTimeout, wire.ClosePolicyViolation}, 0, CloseRate, grace},
		{"transport 1009 before our 4029 was sent", ConnEnd{EndProtocol, wire.CloseTooBig}, own(wire.CloseRateLimited, CloseRate), CloseProtocol, atOnce},
		{"transport shutdown", ConnEnd{EndShutdown, wire.CloseGoingAway}, 0, CloseShutdown, grace},
		{"handler panic", ConnEnd{EndFailed, wire.CloseInternalError}, 0, CloseInternal, grace},
		{"handler panic after our 4101 was recorded", ConnEnd{EndFailed, wire.CloseInternalError}, own(wire.CloseUnauthorized, CloseAuth), CloseInternal, grace},

		{"our 4001 handshake timed out", ConnEnd{EndTimeout, wire.CloseHeartbeat}, own(wire.CloseHeartbeat, CloseHeartbeat), CloseHeartbeat, grace},
		{"our 1003 handshake timed out", ConnEnd{EndTimeout, wire.CloseUnsupported}, own(wire.CloseUnsupported, CloseProtocol), CloseProtocol, atOnce},
		{"client's 1000 handshake timed out", ConnEnd{EndTimeout, wire.CloseNormal}, 0, ClosePeer, atOnce},
		{"client's 1000 handshake timed out, our 4001 not sent", ConnEnd{EndTimeout, wire.CloseNormal}, own(wire.CloseHeartbeat, CloseHeartbeat), ClosePeer, atOnce},
		{"client's 4000 handshake timed out", ConnEnd{EndTimeout, 4000}, 0, ClosePeer, grace},
		{"transport's 1009 handshake timed out", ConnEnd{EndTimeout, wire.CloseTooBig}, 0, CloseProtocol, atOnce},
		{"shutdown handshake timed out", ConnEnd{EndTimeout, wire.CloseGoingAway}, 0, CloseShutdown, grace},
		{"unknown cause", ConnEnd{EndCause(200), 0}, 0, CloseReset, grace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The leave mode of the session's own closes follows the
			// contract's reconnect table: a close that invites the client
			// back keeps its members for the grace.
			if tt.end.Cause == EndClosed && tt.own.started() && tt.wantGrace != wire.Reconnect(tt.own.code()) {
				t.Errorf("want grace %v for our close %d, but wire.Reconnect says %v", tt.wantGrace, tt.own.code(), !tt.wantGrace)
			}
			reason, grace := ending(tt.end, tt.own)
			if reason != tt.wantReason || grace != tt.wantGrace {
				t.Errorf("ending(%+v, own %v/%v) = %v, grace %v; want %v, grace %v",
					tt.end, tt.own.code(), tt.own.reason(), reason, grace, tt.wantReason, tt.wantGrace)
			}
		})
	}
}

// TestHandleCloseReason drives sessions to each kind of end, as the
// transport would report it, and checks the close sent, the reason
// returned and counted, and whether the member stays for the grace.
func TestHandleCloseReason(t *testing.T) {
	const leaveGrace = 2 * time.Second
	expiring := authFunc(func(token string) (Identity, error) {
		if token == "bob+exp" {
			return Identity{User: "bob", Expires: time.Now().Add(10 * time.Second)}, nil
		}
		return tokenAuth(token)
	})
	fireUntilClosed := func(c *client) {
		for range 100 {
			if c.lastClose() != 0 {
				return
			}
			c.fire()
		}
		c.t.Fatalf("%s: not closed", c.name)
	}
	tests := []struct {
		name       string
		hello      string                  // bob's hello, then he joins r; "" for none
		act        func(e *env, c *client) // ends bob's session
		end        ConnEnd                 // what the transport reports; Code 0: the code bob's session sent
		wantCode   wire.CloseCode          // the close bob's session sent, 0 if none
		wantReason CloseReason
		wantGrace  bool // bob stays a member for the grace
	}{
		{name: "heartbeat timeout", act: func(_ *env, c *client) { fireUntilClosed(c) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseHeartbeat, wantReason: CloseHeartbeat, wantGrace: true},
		{name: "invalid JSON", act: func(_ *env, c *client) { c.send(`{"t":`) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseInvalidPayload, wantReason: CloseProtocol},
		{name: "binary", act: func(_ *env, c *client) { c.s.HandleBinary() },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseUnsupported, wantReason: CloseProtocol},
		{name: "flood", act: func(e *env, c *client) {
			for i := 0; i < 100 && c.lastClose() == 0; i++ {
				for range 20 {
					c.send(`{"t":"ping","ts":1}`)
				}
				e.sleep(100 * time.Millisecond)
			}
		}, end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseRateLimited, wantReason: CloseRate, wantGrace: true},
		{name: "refused token", act: func(_ *env, c *client) { c.send(`{"t":"auth","id":9,"token":"bad"}`) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseUnauthorized, wantReason: CloseAuth},
		{name: "token for another user", act: func(_ *env, c *client) { c.send(`{"t":"auth","id":9,"token":"carol"}`) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseForbidden, wantReason: CloseAuth},
		{name: "token expired", hello: `{"t":"hello","v":1,"token":"bob+exp"}`, act: func(_ *env, c *client) { fireUntilClosed(c) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseTokenExpired, wantReason: CloseTokenExpired, wantGrace: true},
		{name: "drain", act: func(e *env, _ *client) { e.h.Drain(time.Second) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseGoingAway, wantReason: CloseDrain, wantGrace: true},
		{name: "slow consumer (a flusher's close)", act: func(_ *env, c *client) {
			c.s.closeWith(wire.CloseSlowConsumer, CloseSlow, "slow consumer")
		}, end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseSlowConsumer, wantReason: CloseSlow, wantGrace: true},
		{name: "our close's handshake timed out", act: func(_ *env, c *client) { c.s.HandleBinary() },
			end: ConnEnd{Cause: EndTimeout}, wantCode: wire.CloseUnsupported, wantReason: CloseProtocol},
		{name: "client closes 1000", act: func(*env, *client) {},
			end: ConnEnd{Cause: EndPeer, Code: wire.CloseNormal}, wantReason: ClosePeer},
		{name: "client closes 1001", act: func(*env, *client) {},
			end: ConnEnd{Cause: EndPeer, Code: wire.CloseGoingAway}, wantReason: ClosePeer, wantGrace: true},
		{name: "connection lost", act: func(*env, *client) {},
			end: ConnEnd{Cause: EndLost}, wantReason: CloseReset, wantGrace: true},
		{name: "transport 1009", act: func(*env, *client) {},
			end: ConnEnd{Cause: EndProtocol, Code: wire.CloseTooBig}, wantReason: CloseProtocol},
		{name: "transport shutdown", act: func(*env, *client) {},
			end: ConnEnd{Cause: EndShutdown, Code: wire.CloseGoingAway}, wantReason: CloseShutdown, wantGrace: true},
		{name: "handler panic", act: func(*env, *client) {},
			end: ConnEnd{Cause: EndFailed, Code: wire.CloseInternalError}, wantReason: CloseInternal, wantGrace: true},

		// Before hello: nothing to leave.
		{name: "hello timeout", hello: "-", act: func(_ *env, c *client) { fireUntilClosed(c) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseHelloTimeout, wantReason: CloseHelloTimeout},
		{name: "join before hello", hello: "-", act: func(_ *env, c *client) { c.send(`{"t":"join","id":1,"room":"r"}`) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseBadRequest, wantReason: CloseProtocol},
		{name: "hello version 2", hello: "-", act: func(_ *env, c *client) { c.send(`{"t":"hello","v":2,"user":"bob"}`) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseVersion, wantReason: CloseProtocol},
		{name: "hello with a refused token", hello: "-", act: func(_ *env, c *client) { c.send(`{"t":"hello","v":1,"token":"bad"}`) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseUnauthorized, wantReason: CloseAuth},
		{name: "the verifier fails at hello", hello: "-", act: func(_ *env, c *client) { c.send(`{"t":"hello","v":1,"token":"broken"}`) },
			end: ConnEnd{Cause: EndClosed}, wantCode: wire.CloseInternalError, wantReason: CloseInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				closes := &closeCounts{}
				e := startHub(t, Config{Insecure: true, Auth: expiring, LeaveGrace: leaveGrace, AuthGrace: time.Second,
					Rate: 5, Burst: 5, FloodSeconds: 1, Metrics: Metrics{Closes: closes}})
				obs := dial(t, e.h, "obs")
				obs.join("r", 1, "")
				bob := open(t, e.h, "bob")
				joined := tt.hello != "-"
				if joined {
					hello := tt.hello
					if hello == "" {
						hello = `{"t":"hello","v":1,"user":"bob"}`
					}
					bob.send(hello)
					bob.expect("welcome")
					bob.join("r", 1, "")
				}
				e.tick()

				tt.act(e, bob)
				if got := bob.sink.closeCodes(); tt.wantCode != 0 && !slices.Equal(got, []wire.CloseCode{tt.wantCode}) ||
					tt.wantCode == 0 && len(got) != 0 {
					t.Fatalf("bob's session closed with %v, want %v", got, tt.wantCode)
				}
				end := tt.end
				if end.Code == 0 {
					end.Code = tt.wantCode
				}
				if got := bob.s.HandleClose(end); got != tt.wantReason {
					t.Errorf("HandleClose(%+v) = %v, want %v", end, got, tt.wantReason)
				}
				if got, want := closes.get(), map[CloseReason]int{tt.wantReason: 1}; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("Metrics.Closes = %v, want %v", got, want)
				}
				members, _ := roomState(e.h, "r")
				if _, stays := members["bob"]; joined && stays != tt.wantGrace {
					t.Errorf("bob still a member: %v, want %v (grace)", stays, tt.wantGrace)
				}
			})
		})
	}
}

// TestCloseWithFirstWins races closes from several goroutines, as room
// flushers (4002), the drain (bye) and the connection's own handling do:
// exactly one close reaches the sink, and HandleClose reports its reason.
func TestCloseWithFirstWins(t *testing.T) {
	closes := []struct {
		code   wire.CloseCode
		reason CloseReason
	}{
		{wire.CloseSlowConsumer, CloseSlow},
		{wire.CloseHeartbeat, CloseHeartbeat},
		{wire.CloseRateLimited, CloseRate},
		{wire.CloseUnsupported, CloseProtocol},
		{wire.CloseGoingAway, CloseDrain}, // bye
	}
	h, err := New(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		sink := &fakeSink{}
		s := h.Open(sink)
		var wg sync.WaitGroup
		for _, c := range closes {
			wg.Go(func() {
				if c.reason == CloseDrain {
					s.bye()
					return
				}
				s.closeWith(c.code, c.reason, "test")
			})
		}
		wg.Wait()
		codes := sink.closeCodes()
		if len(codes) != 1 {
			t.Fatalf("sink closed %v, want exactly one close", codes)
		}
		var want CloseReason
		for _, c := range closes {
			if c.code == codes[0] {
				want = c.reason
			}
		}
		byes := 0
		for _, f := range sink.take() {
			var ev wire.Event
			if err := wire.DecodeEvent(f, &ev); err == nil && ev.T == wire.TBye {
				byes++
			}
		}
		wantByes := 0
		if want == CloseDrain {
			wantByes = 1
		}
		if byes != wantByes {
			t.Fatalf("%d byes with close %d, want %d", byes, codes[0], wantByes)
		}
		if got := s.HandleClose(ConnEnd{Cause: EndClosed, Code: codes[0]}); got != want {
			t.Fatalf("HandleClose after close %d = %v, want %v", codes[0], got, want)
		}
	}
}

// TestBadRequestMessage: the err message of a refused command never needs
// the error to be a *wire.Error (an unchecked assertion on the event loop
// would panic on any other type).
func TestBadRequestMessage(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&wire.Error{Code: wire.ErrCodeBadRequest, Msg: "join needs room"}, "join needs room"},
		{fmt.Errorf("wrapped: %w", &wire.Error{Code: wire.ErrCodeBadRequest, Msg: "join needs id"}), "join needs id"},
		{errors.New("some other error"), "bad request"},
		{wire.ErrSyntax, "bad request"},
	}
	for _, tt := range tests {
		if got := badRequest(tt.err); got != tt.want {
			t.Errorf("badRequest(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
