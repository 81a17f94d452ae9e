package poller

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// discardEngine takes every byte at once: the cost measured is the
// poller's own, not the socket's.
type discardEngine struct{}

func (discardEngine) write(c *Conn, p []byte) (int, error) { return len(p), nil }
func (discardEngine) writev(c *Conn, bufs [][]byte) (n int, _ error) {
	for _, b := range bufs {
		n += len(b)
	}
	return n, nil
}
func (discardEngine) wantWrite(*Conn, bool)     {}
func (discardEngine) pauseRead(*Conn, bool)     {}
func (discardEngine) setDeadline(*Conn, int64)  {}
func (discardEngine) shutdownWrite(*Conn) error { return nil }
func (discardEngine) closeSocket(*Conn)         {}

type nopHandler struct{ msgs int }

func (*nopHandler) OnOpen(*Conn)                         {}
func (h *nopHandler) OnMessage(*Conn, ws.OpCode, []byte) { h.msgs++ }
func (*nopHandler) OnDeadline(*Conn)                     {}
func (*nopHandler) OnClose(*Conn, CloseInfo)             {}

// openConn returns an upgraded Conn on a discardEngine.
func openConn(tb testing.TB, h Handler) *Conn {
	cfg, err := Config{}.withDefaults()
	if err != nil {
		tb.Fatal(err)
	}
	c := newShared(cfg, h).newConn(7, netip.MustParseAddrPort("127.0.0.1:1"), discardEngine{})
	c.state, c.opened, c.rd.upgraded = stateOpen, true, true
	return c
}

// maskedText is one masked client text frame.
func maskedText(payload string) []byte { return maskedFrame(ws.OpText, []byte(payload)) }

// maskedFrame is one final, masked client frame.
func maskedFrame(op ws.OpCode, payload []byte) []byte {
	f := ws.NewFrame(op, true, payload)
	f.Header.Masked, f.Header.Mask = true, [4]byte{1, 2, 3, 4}
	f = ws.MaskFrameInPlace(f)
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

// The hot paths allocate nothing: sending a pre-encoded frame to a
// connection that keeps up, and receiving a whole text message.
func TestHotPathsDoNotAllocate(t *testing.T) {
	frame := AppendTextFrame(nil, []byte(`{"t":"diff","room":"chat:42"}`))
	c := openConn(t, &nopHandler{})
	if n := testing.AllocsPerRun(1000, func() {
		if err := c.Send(frame); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Send: %v allocations, want 0", n)
	}

	in := maskedText(`{"t":"typing","room":"chat:42","on":true}`)
	buf := make([]byte, len(in))
	if n := testing.AllocsPerRun(1000, func() {
		copy(buf, in) // feed unmasks in place
		if c.feed(buf) {
			t.Fatal("connection finished")
		}
	}); n != 0 {
		t.Errorf("feed: %v allocations, want 0", n)
	}
}

// replyHandler answers each message and each deadline the way presence
// does: a frame encoded in a scratch buffer it reuses, handed to SendCopy.
type replyHandler struct {
	nopHandler
	scratch []byte
}

func (h *replyHandler) OnMessage(c *Conn, _ ws.OpCode, msg []byte) {
	h.scratch = AppendTextFrame(h.scratch[:0], []byte(`{"t":"ack","id":12345}`))
	if err := c.SendCopy(h.scratch); err != nil {
		panic(err)
	}
}

func (h *replyHandler) OnDeadline(c *Conn) {
	h.scratch = AppendTextFrame(h.scratch[:0], []byte(`{"t":"ping","ts":1700000000123}`))
	if err := c.SendCopy(h.scratch); err != nil {
		panic(err)
	}
}

// stallEngine takes no byte while stalled (EAGAIN), every byte otherwise.
type stallEngine struct {
	discardEngine
	stalled *bool
}

func (e stallEngine) write(c *Conn, p []byte) (int, error) {
	if *e.stalled {
		return 0, unix.EAGAIN
	}
	return len(p), nil
}

func (e stallEngine) writev(c *Conn, bufs [][]byte) (int, error) {
	if *e.stalled {
		return 0, unix.EAGAIN
	}
	return e.discardEngine.writev(c, bufs)
}

// Replies cost no allocation: the poller copies what it must keep into
// outbox storage it takes from a pool while frames are queued and returns
// once they are written (an idle connection holds none).
func TestRepliesDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without -race (make test runs them so)")
	}
	in := maskedText(`{"t":"join","id":12345,"room":"chat:42"}`)
	buf := make([]byte, len(in))
	stalled := false
	var slot atomic.Int64
	tests := []struct {
		name string
		run  func(c *Conn)
	}{
		{"reply to a message, in the reader's batch", func(c *Conn) {
			copy(buf, in)
			if c.feed(buf) {
				t.Fatal("connection finished")
			}
		}},
		{"ping on a deadline, in its batch", func(c *Conn) {
			slot.Store(1)
			if done, _ := c.deadlineBatch(&slot, 1); done {
				t.Fatal("connection finished")
			}
		}},
		{"replies queued while the peer is behind, then written", func(c *Conn) {
			stalled = true
			for range 3 {
				copy(buf, in)
				c.feed(buf)
			}
			stalled = false
			if c.onWritable() || c.OutboxLen() != 0 {
				t.Fatal("outbox not written")
			}
		}},
		{"a shared frame offered while the peer is behind, then written", func(c *Conn) {
			stalled = true
			c.Offer(sharedFrame)
			stalled = false
			c.onWritable()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &replyHandler{}
			c := openConn(t, h)
			c.eng = stallEngine{stalled: &stalled}
			tt.run(c) // warm up the pool
			if n := testing.AllocsPerRun(1000, func() { tt.run(c) }); n != 0 {
				t.Errorf("%v allocations per run, want 0", n)
			}
			if c.ob != nil || c.out != nil {
				t.Errorf("an idle connection holds outbox storage")
			}
		})
	}
}

var sharedFrame = AppendTextFrame(nil, []byte(`{"t":"diff","room":"chat:42"}`))

func BenchmarkSend(b *testing.B) {
	frame := AppendTextFrame(nil, make([]byte, 200))
	c := openConn(b, &nopHandler{})
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		c.Send(frame)
	}
}

func BenchmarkFeed(b *testing.B) {
	for _, size := range []int{16, 512, 4096} {
		b.Run(fmt.Sprintf("text/%d", size), func(b *testing.B) {
			h := &nopHandler{}
			c := openConn(b, h)
			in := maskedText(string(make([]byte, size)))
			buf := make([]byte, len(in))
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				copy(buf, in)
				c.feed(buf)
			}
		})
	}
}
