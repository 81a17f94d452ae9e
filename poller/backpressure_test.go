package poller

import (
	"bytes"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// openFakeConn is an upgraded Conn on a fakeEngine whose socket is full:
// nothing written leaves the outbox.
func openFakeConn(t *testing.T, cfg Config) *fakeConn {
	fc := newFakeConn(t, cfg)
	fc.c.state, fc.c.opened, fc.c.rd.upgraded, fc.h.opened = stateOpen, true, true, 1
	fc.eng.full = true
	return fc
}

// A peer that pings and never reads gets pongs only while they fit: the
// outbox stays within its bound.
func TestPingFloodKeepsOutboxBound(t *testing.T) {
	const outbox = 4096
	fc := openFakeConn(t, Config{Outbox: outbox})
	ping := maskedFrame(ws.OpPing, bytes.Repeat([]byte("p"), 125))
	for range 1000 {
		fc.feed(bytes.Clone(ping), nil)
		if n := fc.c.OutboxLen(); n > outbox {
			t.Fatalf("OutboxLen %d > Outbox %d", n, outbox)
		}
	}
	if fc.finished {
		t.Fatal("connection finished; want it open with pongs dropped")
	}
}

// Close racing with the sweep: the sweep read the application's deadline,
// then Close replaced it with the close timeout. The stale deadline must
// neither fire OnDeadline nor finish the connection.
func TestCloseRacingDeadline(t *testing.T) {
	fc := openFakeConn(t, Config{})
	fc.c.SetDeadline(time.Now().Add(-time.Second))
	stale := fc.eng.deadline.Load()
	fc.c.Close(4001, "heartbeat timeout")
	if done, info := fc.c.onDeadline(&fc.eng.deadline, stale); done {
		t.Fatalf("stale deadline finished the connection: %+v", info)
	}
	if d := fc.eng.deadline.Load(); d == 0 || d == stale {
		t.Fatalf("close deadline %d lost (stale %d)", d, stale)
	}
	done, info := fc.c.onDeadline(&fc.eng.deadline, fc.eng.deadline.Load())
	if !done || info.Reason != CloseTimeout {
		t.Fatalf("close timeout: done=%v info=%+v", done, info)
	}
}

// Empty frames queue nothing, so they cannot grow the outbox's frame list.
func TestSendEmptyFrame(t *testing.T) {
	fc := openFakeConn(t, Config{})
	if err := fc.c.Send(AppendTextFrame(nil, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if err := fc.c.Send(nil); err != nil {
			t.Fatal(err)
		}
	}
	fc.c.mu.Lock()
	defer fc.c.mu.Unlock()
	if len(fc.c.out) != 1 {
		t.Fatalf("%d frames queued, want 1", len(fc.c.out))
	}
}
