package poller

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/gobwas/ws"
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
func (discardEngine) wantWrite(*Conn, bool)    {}
func (discardEngine) pauseRead(*Conn, bool)    {}
func (discardEngine) setDeadline(*Conn, int64) {}
func (discardEngine) closeSocket(*Conn)        {}

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
