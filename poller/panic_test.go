package poller

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"
)

// logCapture is a slog.Handler that keeps every record.
type logCapture struct {
	mu   sync.Mutex
	recs []slog.Record // guarded by mu
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logCapture) WithGroup(string) slog.Handler            { return h }
func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}

// panicLogs returns the stacks of the Error records that carry one.
func (h *logCapture) panicLogs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var stacks []string
	for _, r := range h.recs {
		r.Attrs(func(a slog.Attr) bool {
			if r.Level == slog.LevelError && a.Key == "stack" {
				stacks = append(stacks, a.Value.String())
			}
			return true
		})
	}
	return stacks
}

// panicky is a recorder whose callbacks panic at one place: OnOpen of the
// second connection, OnMessage of the message "panic", OnDeadline or
// OnClose of a connection that sent "mark" (which also arms its deadline).
type panicky struct {
	*recorder
	at    string // the callback that panics
	opens atomic.Int32
}

type panicValue string

func (h *panicky) OnOpen(c *Conn) {
	h.recorder.OnOpen(c)
	if h.opens.Add(1) == 2 && h.at == "OnOpen" {
		panic(panicValue("boom in OnOpen"))
	}
}

func (h *panicky) OnMessage(c *Conn, op ws.OpCode, msg []byte) {
	switch string(msg) {
	case "panic":
		if h.at == "OnMessage" {
			panic(panicValue("boom in OnMessage"))
		}
	case "mark":
		c.SetValue(true)
		if h.at == "OnDeadline" {
			c.SetDeadline(time.Now())
		}
	}
	h.recorder.OnMessage(c, op, msg)
}

func (h *panicky) OnDeadline(c *Conn) {
	h.recorder.OnDeadline(c)
	if c.Value() == true && h.at == "OnDeadline" {
		panic(panicValue("boom in OnDeadline"))
	}
}

func (h *panicky) OnClose(c *Conn, info CloseInfo) {
	h.recorder.OnClose(c, info)
	if c.Value() == true && h.at == "OnClose" {
		panic(panicValue("boom in OnClose"))
	}
}

// TestHandlerPanic: a panic in a callback of one connection closes that
// connection with 1011 (frames queued before it in the same batch still go
// out), is logged once with its stack and reported to OnPanic once, while
// another connection on the same loop keeps being served. A panic in
// OnClose is logged and counted; the connection is already gone.
func TestHandlerPanic(t *testing.T) {
	cases := []struct {
		at string
		// trigger makes the victim's callback panic; it returns the text
		// frames the victim must get before the close frame.
		trigger func(t *testing.T, victim *rawClient) []string
	}{
		{"OnOpen", func(t *testing.T, victim *rawClient) []string {
			victim.upgrade()
			return nil
		}},
		{"OnMessage", func(t *testing.T, victim *rawClient) []string {
			victim.upgrade()
			victim.mustWrite(cat(clientText("before"), clientText("panic"), clientText("after")))
			return []string{"before"} // queued in the batch the panic ended
		}},
		{"OnDeadline", func(t *testing.T, victim *rawClient) []string {
			victim.upgrade()
			victim.mustWrite(clientText("mark"))
			return []string{"mark"}
		}},
		{"OnClose", func(t *testing.T, victim *rawClient) []string {
			victim.upgrade()
			echoRoundTrip(t, victim, "mark")
			victim.closeHandshake(1000, "")
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.at, func(t *testing.T) {
			forEachEngine(t, func(t *testing.T, engine string) {
				t.Parallel()
				logs := &logCapture{}
				var panics atomic.Int32
				var lastPanic atomic.Value
				h := &panicky{recorder: newRecorder(), at: tc.at}
				srv := startServer(t, engine, Config{
					Loops: 1, Tick: 10 * time.Millisecond, Logger: slog.New(logs),
					OnPanic: func(v any) { panics.Add(1); lastPanic.Store(v) },
				}, h)

				bystander := dialRaw(t, srv.Addr())
				bystander.upgrade()
				echoRoundTrip(t, bystander, "first")

				victim := dialRaw(t, srv.Addr())
				wantBefore := tc.trigger(t, victim)
				if tc.at != "OnClose" {
					code, _, before, err := victim.readClose()
					if err != nil {
						t.Fatalf("victim: %v (frames before: %v)", err, before)
					}
					if code != ws.StatusInternalServerError {
						t.Fatalf("victim closed with %d, want 1011", code)
					}
					var got []string
					for _, f := range before {
						got = append(got, string(f.payload))
					}
					if strings.Join(got, ",") != strings.Join(wantBefore, ",") {
						t.Fatalf("victim got %q before the close, want %q", got, wantBefore)
					}
					victim.mustWrite(clientClose(1011, ""))
					victim.expectEOF()
				}

				eventually(t, ioTimeout, func() error {
					if n := panics.Load(); n != 1 {
						return fmt.Errorf("OnPanic called %d times", n)
					}
					return nil
				})
				if v := lastPanic.Load(); v != panicValue("boom in "+tc.at) {
					t.Errorf("OnPanic(%v)", v)
				}
				info := h.closeInfo(t, victim.localAddr())
				switch {
				case tc.at == "OnClose":
					if info.Reason != ClosePeer || info.Code != 1000 {
						t.Errorf("victim OnClose %v/%d, want peer/1000", info.Reason, info.Code)
					}
				case info.Reason != ClosePanic || info.Code != ws.StatusInternalServerError || info.Err == nil:
					t.Errorf("victim OnClose %v/%d (%v), want panic/1011", info.Reason, info.Code, info.Err)
				}

				// The other connection, on the same loop, is still served.
				for i := range 5 {
					echoRoundTrip(t, bystander, fmt.Sprintf("still here %d", i))
				}
				if n := panics.Load(); n != 1 {
					t.Errorf("OnPanic called %d times, want 1", n)
				}
				stacks := logs.panicLogs()
				if len(stacks) != 1 {
					t.Fatalf("%d panic records logged, want 1", len(stacks))
				}
				if !strings.Contains(stacks[0], "(*panicky)."+tc.at) {
					t.Errorf("logged stack does not show the panicking callback:\n%s", stacks[0])
				}
				bystander.closeHandshake(1000, "")
				if info := h.closeInfo(t, bystander.localAddr()); info.Reason != ClosePeer {
					t.Errorf("bystander OnClose %v", info.Reason)
				}
				h.check(t)
			})
		})
	}
}

// Panics are counted one by one, but logged at most once per
// panicLogEvery: a handler bug that clients can trigger must not flood the
// log.
func TestPanicLogRateLimited(t *testing.T) {
	// In a synctest bubble the clock stands still: the three panics are
	// within panicLogEvery however slow the machine.
	synctest.Test(t, func(t *testing.T) {
		logs := &logCapture{}
		var panics int
		cfg, err := Config{Logger: slog.New(logs), OnPanic: func(any) { panics++ }}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		h := &panicky{recorder: newRecorder(), at: "OnMessage"}
		sh := newShared(cfg, h)
		for i := range 3 {
			c := sh.newConn(7, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i)), &fakeEngine{t: t})
			c.state, c.opened, c.rd.upgraded = stateOpen, true, true
			h.recorder.conns[c.RemoteAddr()] = &connLog{conn: c}
			if c.feed(maskedText("panic")) {
				t.Fatal("connection finished at once")
			}
			if c.closeReason != ClosePanic || c.state != stateClosing {
				t.Fatalf("conn %d: state %v, close reason %v; want closing with panic", i, c.state, c.closeReason)
			}
		}
		if panics != 3 {
			t.Errorf("OnPanic called %d times, want 3", panics)
		}
		if n := len(logs.panicLogs()); n != 1 {
			t.Errorf("%d records for 3 panics within %v, want 1", n, panicLogEvery)
		}
	})
}
