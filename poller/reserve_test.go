package poller

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// replySize is the payload of every reply of a replier: like presenced's
// err quoting a 128-byte room id.
const replySize = 213

// readBuf is the receive buffer of clients that read their replies late:
// small, so the server's outbox fills soon, but not so small that loopback
// TCP falls back on zero-window probes (up to seconds) once they read.
const readBuf = 64 << 10

// reply is the reply to msg: msg padded to replySize (a 215-byte frame).
func reply(msg string) []byte {
	return []byte(msg + strings.Repeat(".", replySize-len(msg)))
}

// replier answers every text message with one reply of replySize bytes and
// records any reply that could not be queued, and any outbox beyond
// Config.Outbox. sockBuf, if set, shrinks the server socket's kernel
// buffers at OnOpen, so a peer that does not read fills them soon.
type replier struct {
	*recorder
	outbox  int
	sockBuf int

	mu      sync.Mutex
	lost    []string // guarded by mu: replies refused with ErrFull
	maxOut  int      // guarded by mu: the largest OutboxLen seen
	handled int      // guarded by mu: OnMessage calls
	sent    int      // guarded by mu: replies queued
}

func newReplier(outbox, sockBuf int) *replier {
	return &replier{recorder: newRecorder(), outbox: outbox, sockBuf: sockBuf}
}

func (h *replier) OnOpen(c *Conn) {
	if h.sockBuf > 0 {
		unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, h.sockBuf)
		unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, h.sockBuf)
	}
	h.recorder.OnOpen(c)
}

func (h *replier) OnMessage(c *Conn, op ws.OpCode, msg []byte) {
	l := h.enter(c, "OnMessage")
	defer h.exit(l)
	err := c.Send(AppendTextFrame(nil, reply(string(msg))))
	n := c.OutboxLen()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.handled++
	switch err {
	case nil:
		h.sent++
	case ErrFull:
		h.lost = append(h.lost, string(msg))
	}
	h.maxOut = max(h.maxOut, n)
}

func (h *replier) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handled
}

func (h *replier) sentCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sent
}

// check fails t if a reply was lost or the outbox went beyond its bound.
func (h *replier) check(t testing.TB) {
	t.Helper()
	h.recorder.check(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.lost) > 0 {
		t.Errorf("%d replies lost while the connection was open: %v", len(h.lost), h.lost)
	}
	if h.maxOut > h.outbox {
		t.Errorf("outbox reached %d bytes > Outbox %d", h.maxOut, h.outbox)
	}
}

// paused reports whether the reader of c holds input back.
func (c *Conn) paused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readPaused
}

// burst is n text messages "m0000", "m0001", ... in one buffer.
func burst(from, n int) []byte {
	var b []byte
	for i := from; i < from+n; i++ {
		b = append(b, clientText(fmt.Sprintf("m%04d", i))...)
	}
	return b
}

// readReplies reads the replies to burst(from, n), in order.
func readReplies(t *testing.T, c *rawClient, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		f, err := c.readFrame()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if want := reply(fmt.Sprintf("m%04d", i)); f.op != ws.OpText || !bytes.Equal(f.payload, want) {
			t.Fatalf("reply %d: got %v, want %.8q", i, f, want)
		}
	}
}

// TestReplyBurst is the burst of finding 5: 35 commands in one write,
// each answered with 215 bytes, on a 4 KiB outbox, to a client that reads
// only once the server has done what it could. Every reply arrives, in
// order, and the outbox never goes beyond its bound.
func TestReplyBurst(t *testing.T) {
	const outbox = 4096
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		h := newReplier(outbox, 4096)
		srv := startServer(t, engine, Config{Loops: 1, Outbox: outbox}, h)
		c := dialRaw(t, srv.Addr())
		c.conn.SetReadBuffer(readBuf)
		c.upgrade()
		sc := h.conn(t, c.localAddr())
		c.mustWrite(burst(0, 35))
		eventually(t, ioTimeout, func() error { // not reading yet
			if n := h.count(); n < 35 && !sc.paused() {
				return fmt.Errorf("%d of 35 handled and the connection is not paused", n)
			}
			return nil
		})
		t.Logf("%d of 35 handled before the client read", h.count())
		readReplies(t, c, 0, 35)
		c.mustWrite(burst(35, 1))
		readReplies(t, c, 35, 1)
		h.check(t)
		c.closeHandshake(1000, "")
	})
}

// TestPausedConnection: a connection whose peer does not read is paused,
// not failed. While paused its deadline still fires; once the peer reads
// it resumes where it stopped: every reply, then the pong of a ping and
// the echo of a close frame that were behind the paused messages.
func TestPausedConnection(t *testing.T) {
	const (
		outbox = 4096
		n      = 1500 // 320 KB of replies: more than the kernel buffers take
	)
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		h := newReplier(outbox, 4096)
		srv := startServer(t, engine, Config{Loops: 1, Outbox: outbox, Tick: 10 * time.Millisecond}, h)
		c := dialRaw(t, srv.Addr())
		c.conn.SetReadBuffer(readBuf)
		c.upgrade()
		sc := h.conn(t, c.localAddr())
		c.mustWrite(cat(burst(0, n), clientPing("behind"), clientClose(1000, "done")))
		eventually(t, ioTimeout, func() error {
			if !sc.paused() {
				return fmt.Errorf("not paused; %d of %d handled", h.count(), n)
			}
			return nil
		})
		handled := h.count()
		t.Logf("paused after %d of %d", handled, n)
		if handled >= n {
			t.Fatalf("paused after handling all %d messages", n)
		}

		// The deadline fires while paused.
		sc.SetDeadline(time.Now())
		eventually(t, ioTimeout, func() error {
			if len(h.deadlines(c.localAddr())) == 0 {
				return errors.New("no OnDeadline")
			}
			return nil
		})
		if !sc.paused() {
			t.Fatal("resumed although the client has not read")
		}

		readReplies(t, c, 0, n)
		code, reason, before, err := c.readClose()
		if err != nil || len(before) != 1 || before[0].op != ws.OpPong || string(before[0].payload) != "behind" {
			t.Fatalf("after the replies: %v %v, want the pong then the close echo", before, err)
		}
		if code != 1000 || reason != "done" {
			t.Fatalf("close echo %d %q", code, reason)
		}
		c.expectEOF()
		if info := h.closeInfo(t, c.localAddr()); info.Reason != ClosePeer || info.Code != 1000 {
			t.Errorf("OnClose %v/%d, want peer/1000", info.Reason, info.Code)
		}
		h.check(t)
	})
}

// TestPausedServerClose: the server closes a paused connection. A peer
// that reads gets the replies queued so far and the close frame, the rest
// of its commands are discarded, and its close answer is read although
// it was behind them; a peer that never reads is closed by the close
// timeout.
func TestPausedServerClose(t *testing.T) {
	const outbox = 4096
	for _, reads := range []bool{true, false} {
		t.Run(fmt.Sprintf("reads=%v", reads), func(t *testing.T) {
			forEachEngine(t, func(t *testing.T, engine string) {
				t.Parallel()
				h := newReplier(outbox, 4096)
				srv := startServer(t, engine, Config{
					Loops: 1, Outbox: outbox, Tick: 10 * time.Millisecond, CloseTimeout: 300 * time.Millisecond,
				}, h)
				c := dialRaw(t, srv.Addr())
				c.conn.SetReadBuffer(readBuf)
				c.upgrade()
				sc := h.conn(t, c.localAddr())
				c.mustWrite(burst(0, 1500))
				eventually(t, ioTimeout, func() error {
					if !sc.paused() {
						return fmt.Errorf("not paused; %d handled", h.count())
					}
					return nil
				})
				sc.Close(4000, "bye")
				if !reads {
					info := h.closeInfo(t, c.localAddr())
					if info.Reason != CloseTimeout || info.Code != 4000 {
						t.Errorf("OnClose %v/%d, want timeout/4000", info.Reason, info.Code)
					}
					h.check(t)
					return
				}
				c.mustWrite(clientClose(4000, ""))
				code, _, before, err := c.readClose()
				if err != nil || code != 4000 {
					t.Fatalf("close: %d %v", code, err)
				}
				c.expectEOF()
				if info := h.closeInfo(t, c.localAddr()); info.Reason != CloseServer || info.Code != 4000 {
					t.Errorf("OnClose %v/%d, want server/4000", info.Reason, info.Code)
				}
				if sent := h.sentCount(); len(before) != sent {
					t.Errorf("%d replies before the close frame, want the %d queued before Close", len(before), sent)
				}
				if got := h.count(); got >= 1500 {
					t.Errorf("all %d messages handled: the ones held back at Close were not discarded", got)
				}
				h.check(t)
			})
		})
	}
}

// TestUnreadClientBounded: a client that sends commands and never reads
// does not grow server memory. The epoll engine stops reading it, so its
// writes block (TCP pushes back) while the connection stays open; the
// netpoll engine cannot stop reading and closes it with 1008 once the
// input kept exceeds its bound.
func TestUnreadClientBounded(t *testing.T) {
	const (
		outbox = 4096
		limit  = 32 << 20 // far beyond what kernel buffers and the backlog bound hold
	)
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		h := newReplier(outbox, 16<<10)
		srv := startServer(t, engine, Config{Loops: 1, Outbox: outbox, CloseTimeout: 300 * time.Millisecond}, h)
		c := dialRaw(t, srv.Addr())
		c.conn.SetReadBuffer(4096)
		c.conn.SetWriteBuffer(16 << 10)
		c.upgrade()
		sc := h.conn(t, c.localAddr())
		chunk := burst(0, 100)
		rest := chunk // of the chunk being written: a timed-out write may have sent part of it
		written := 0
		for {
			if written > limit {
				t.Fatalf("wrote %d bytes to a server whose replies are not read: it keeps reading", written)
			}
			if engine == EngineNetpoll && sc.Send(nil) == ErrClosed { // closing: 1008?
				info := h.closeInfo(t, c.localAddr())
				t.Logf("closed after %d bytes written; %d commands handled", written, h.count())
				if info.Code != ws.StatusPolicyViolation || info.Reason != CloseProtocol && info.Reason != CloseTimeout {
					t.Errorf("OnClose %v/%d (%v), want 1008", info.Reason, info.Code, info.Err)
				}
				h.check(t)
				return
			}
			c.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := c.conn.Write(rest)
			written += n
			if rest = rest[n:]; len(rest) == 0 {
				rest = chunk
			}
			var ne net.Error
			switch {
			case err == nil:
				continue
			case engine == EngineEpoll && errors.As(err, &ne) && ne.Timeout():
				if sc.paused() { // blocked because the server stopped reading
					t.Logf("writes blocked after %d bytes; %d commands handled", written, h.count())
					if got := srv.Conns(); got != 1 {
						t.Fatalf("Conns() = %d, want the connection still open", got)
					}
					h.check(t)
					return
				}
			case engine == EngineNetpoll && errors.As(err, &ne) && ne.Timeout():
			default:
				t.Fatalf("write: %v", err)
			}
		}
	})
}

// The reader's pause, step by step on an in-memory connection whose
// socket takes nothing: a burst stops at the reserve, the engine is told
// to stop reading, nothing is lost, and onWritable resumes in order.
// Input that arrives while paused (netpoll) is kept up to the backlog
// bound, then the connection is closed with 1008.
func TestReaderPause(t *testing.T) {
	const outbox = 4096
	fc := openFakeConn(t, Config{Outbox: outbox})
	msg := func(i int) string { return fmt.Sprintf("%03d", i) + strings.Repeat("x", replySize-3) } // echoed in 215 bytes
	var in []byte
	for i := range 35 {
		in = append(in, maskedText(msg(i))...)
	}
	fc.feed(in, nil)
	// 15 replies of 215 bytes leave less than the 1 KiB reserve free.
	if got := len(fc.h.msgs); got != 15 {
		t.Fatalf("%d messages handled with a full socket, want 15", got)
	}
	if !fc.eng.paused || !fc.c.rd.held || fc.c.OutboxLen() > outbox {
		t.Fatalf("paused=%v held=%v outbox=%d", fc.eng.paused, fc.c.rd.held, fc.c.OutboxLen())
	}

	// The socket takes a few bytes: not enough for the reserve.
	fc.eng.full, fc.eng.budget = false, 100
	if fc.c.onWritable() {
		t.Fatal("finished")
	}
	if got := len(fc.h.msgs); got != 15 || !fc.eng.paused {
		t.Fatalf("%d handled, paused=%v after a write of 100 bytes", got, fc.eng.paused)
	}

	// Input arriving while paused is kept, not handled.
	fc.eng.full = true
	fc.feed(maskedText(msg(35)), nil)
	if got := len(fc.h.msgs); got != 15 {
		t.Fatalf("%d handled while paused", got)
	}

	// The socket takes everything: all the rest is handled, in order.
	fc.eng.full, fc.eng.budget = false, -1
	if fc.c.onWritable() {
		t.Fatal("finished")
	}
	if fc.eng.want || fc.eng.paused {
		t.Fatalf("want=%v paused=%v after the socket took everything", fc.eng.want, fc.eng.paused)
	}
	if len(fc.h.msgs) != 36 {
		t.Fatalf("%d handled after resuming, want 36", len(fc.h.msgs))
	}
	for i, m := range fc.h.msgs {
		if m.payload != msg(i) {
			t.Fatalf("message %d is %v", i, m)
		}
	}
	frames := serverFrames(t, fc.eng.out)
	if len(frames) != 36 {
		t.Fatalf("%d frames written, want 36", len(frames))
	}
	if fc.c.rd.held || fc.c.rd.buf != nil || fc.c.OutboxLen() != 0 {
		t.Fatalf("held=%v buf=%d outbox=%d after resuming", fc.c.rd.held, len(fc.c.rd.buf), fc.c.OutboxLen())
	}

	// Paused again, the input kept grows to the bound: 1008.
	fc.eng.full = true
	fc.feed(in, nil)
	if !fc.c.rd.held {
		t.Fatal("not paused")
	}
	kept := len(fc.c.rd.buf)
	for len(fc.c.rd.buf) <= fc.c.sh.maxBacklog {
		fc.feed(in, nil)
		if !fc.c.paused() || fc.c.closeReason != 0 {
			break
		}
		if len(fc.c.rd.buf) <= kept {
			t.Fatal("input kept does not grow")
		}
	}
	if fc.c.closeCode != ws.StatusPolicyViolation || fc.c.closeReason != CloseProtocol {
		t.Fatalf("close %v/%d, want protocol/1008", fc.c.closeReason, fc.c.closeCode)
	}
	if fc.c.rd.held || len(fc.c.rd.buf) > fc.c.sh.maxBacklog {
		t.Fatalf("held=%v, %d bytes kept after the close", fc.c.rd.held, len(fc.c.rd.buf))
	}
}

// A deadline's batch flushes the outbox too. When that flush drains the
// outbox of a paused connection, the engine must still call onWritable:
// nothing else would resume the reader.
func TestPausedDeadlineFlush(t *testing.T) {
	fc := openFakeConn(t, Config{Outbox: 4096})
	var in []byte
	for i := range 35 {
		in = append(in, maskedText(fmt.Sprintf("%03d", i)+strings.Repeat("x", replySize-3))...)
	}
	fc.feed(in, nil)
	if !fc.c.paused() {
		t.Fatal("not paused")
	}
	fc.eng.full = false
	fc.c.SetDeadline(time.Now())
	if done, _ := fc.c.deadlineBatch(&fc.eng.deadline, fc.eng.deadline.Load()); done {
		t.Fatal("finished")
	}
	if fc.c.OutboxLen() != 0 || !fc.eng.want {
		t.Fatalf("outbox %d, write interest %v after the deadline's flush; want 0 and armed", fc.c.OutboxLen(), fc.eng.want)
	}
	if fc.c.onWritable() {
		t.Fatal("finished")
	}
	if n := len(fc.h.msgs); n != 35 || fc.eng.paused || fc.eng.want {
		t.Fatalf("%d handled, paused %v, write interest %v after onWritable", n, fc.eng.paused, fc.eng.want)
	}
}

// TestReplyReserveConfig also checks the Outbox bound.
func TestReplyReserveConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg     Config
		reserve int
		err     bool
	}{
		{Config{}, 1 << 10, false},
		{Config{Outbox: 1000}, 500, false},
		{Config{Outbox: 4096, ReplyReserve: 2048}, 2048, false},
		{Config{Outbox: 4096, ReplyReserve: 2049}, 0, true},
		{Config{Outbox: MaxOutbox}, DefaultReplyReserve(MaxOutbox), false},
		{Config{Outbox: MaxOutbox + 1}, 0, true}, // outLen is an int32
	} {
		got, err := tc.cfg.withDefaults()
		if (err != nil) != tc.err || err == nil && got.ReplyReserve != tc.reserve {
			t.Errorf("%+v: ReplyReserve %d, err %v; want %d, error %v", tc.cfg, got.ReplyReserve, err, tc.reserve, tc.err)
		}
	}
}

// TestOfferKeepsReplyReserve: frames offered by other goroutines (a
// fan-out) fill the outbox only up to the reply reserve, so a message
// handled next still has room for its reply; Send may use the reserve.
func TestOfferKeepsReplyReserve(t *testing.T) {
	const outbox, reserve = 4096, 1024
	fc := openFakeConn(t, Config{Outbox: outbox, ReplyReserve: reserve})
	diff := bytes.Repeat([]byte("d"), 500)
	offered := 0
	for fc.c.Offer(diff) == nil {
		offered++
	}
	if got := fc.c.OutboxLen(); got > outbox-reserve || got+len(diff) <= outbox-reserve {
		t.Fatalf("offers stopped at %d queued bytes, want the last one within %d of the reserve", got, len(diff))
	}
	if err := fc.c.Offer(diff); err != ErrFull {
		t.Fatalf("Offer into the reserve = %v, want ErrFull", err)
	}
	// The reserve is free: a message is handled and its echo fits.
	msg := "000" + strings.Repeat("x", replySize-3)
	before := fc.c.OutboxLen()
	fc.feed(maskedText(msg), nil)
	if got, want := fc.c.OutboxLen()-before, len(AppendFrame(nil, ws.OpText, []byte(msg))); len(fc.h.msgs) != 1 || got != want {
		t.Fatalf("after %d offers: %d messages handled, outbox grew by %d; want 1 and the %d-byte echo", offered, len(fc.h.msgs), got, want)
	}
	if err := fc.c.Send(bytes.Repeat([]byte("r"), reserve-replySize)); err != nil {
		t.Fatalf("Send into the reserve: %v", err)
	}
}

// TestNetpollFirstPauseBounded: the input kept when a netpoll connection
// first pauses is bounded like input that arrives later: one burst far
// beyond the bound closes it with 1008 at once.
func TestNetpollFirstPauseBounded(t *testing.T) {
	fc := openFakeConn(t, Config{Outbox: 4096, Engine: EngineNetpoll})
	var in []byte
	for i := 0; len(in) < 1<<20; i++ {
		in = append(in, maskedText(fmt.Sprintf("%05d", i)+strings.Repeat("x", replySize-5))...)
	}
	fc.feed(in, nil)
	fc.c.mu.Lock()
	state, kept, info := fc.c.state, len(fc.c.rd.buf), CloseInfo{Reason: fc.c.closeReason, Code: fc.c.closeCode, Err: fc.c.closeErr}
	fc.c.mu.Unlock()
	if state != stateClosing || info.Code != ws.StatusPolicyViolation {
		t.Fatalf("after a 1 MiB burst: state %v, close %+v, %d bytes kept (bound %d); want closing with 1008", state, info, kept, fc.c.sh.maxBacklog)
	}
}
