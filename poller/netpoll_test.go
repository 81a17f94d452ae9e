package poller

// Quick checks of the netpoll engine on real sockets. The conformance suite
// runs every transport case on both engines; these cover what is specific
// to netpoll: OnRequest never blocking, the write retrier, close paths.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// npHandler echoes messages and records what happened, failing the test if
// two callbacks of one connection overlap.
type npHandler struct {
	t        testing.TB
	onOpen   func(c *Conn)
	inCall   sync.Map // *Conn → *atomic.Bool
	opened   chan *Conn
	closed   chan CloseInfo
	deadline chan *Conn
	rejects  chan RejectReason
}

func newNPHandler(t testing.TB) *npHandler {
	return &npHandler{
		t:        t,
		opened:   make(chan *Conn, 1024),
		closed:   make(chan CloseInfo, 1024),
		deadline: make(chan *Conn, 1024),
		rejects:  make(chan RejectReason, 1024),
	}
}

func (h *npHandler) enter(c *Conn) func() {
	v, _ := h.inCall.LoadOrStore(c, new(atomic.Bool))
	b := v.(*atomic.Bool)
	if !b.CompareAndSwap(false, true) {
		h.t.Errorf("conn %d: overlapping callbacks", c.ID())
	}
	return func() { b.Store(false) }
}

func (h *npHandler) OnOpen(c *Conn) {
	defer h.enter(c)()
	if h.onOpen != nil {
		h.onOpen(c)
	}
	h.opened <- c
}

func (h *npHandler) OnMessage(c *Conn, op ws.OpCode, msg []byte) {
	defer h.enter(c)()
	if err := c.Send(AppendFrame(nil, op, msg)); err != nil {
		h.t.Errorf("echo: %v", err)
	}
}

func (h *npHandler) OnDeadline(c *Conn) {
	defer h.enter(c)()
	h.deadline <- c
}

func (h *npHandler) OnClose(c *Conn, info CloseInfo) {
	defer h.enter(c)()
	h.closed <- info
}

func (h *npHandler) onReject(r RejectReason) { h.rejects <- r }

// npStart runs a netpoll server on 127.0.0.1:0 until the test ends.
func npStart(t *testing.T, cfg Config, h *npHandler) (*Server, context.CancelFunc, <-chan struct{}) {
	t.Helper()
	cfg.Engine = EngineNetpoll
	cfg.Addr = "127.0.0.1:0"
	cfg.OnReject = h.onReject
	s, err := New(cfg, h)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return")
		}
	})
	return s, cancel, done
}

// npClient is a raw WebSocket client: it writes masked frames byte for byte.
type npClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func npDial(t testing.TB, s *Server) *npClient {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &npClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

const npRequest = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// upgrade sends the request and returns the response status.
func (c *npClient) upgrade() int {
	c.t.Helper()
	c.write([]byte(npRequest))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("upgrade response: %v", err)
	}
	return resp.StatusCode
}

func (c *npClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// frame encodes a masked client frame.
func npFrame(fin bool, op ws.OpCode, payload []byte) []byte {
	h := ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: int64(len(payload))}
	var b strings.Builder
	ws.WriteHeader(&b, h)
	p := append([]byte(nil), payload...)
	ws.Cipher(p, h.Mask, 0)
	return append([]byte(b.String()), p...)
}

func (c *npClient) read() (ws.Header, []byte) {
	c.t.Helper()
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		c.t.Fatalf("read header: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		c.t.Fatalf("read payload: %v", err)
	}
	return h, p
}

func (c *npClient) expect(op ws.OpCode, payload string) {
	c.t.Helper()
	h, p := c.read()
	if h.OpCode != op || string(p) != payload || !h.Fin || h.Masked {
		c.t.Fatalf("got %v fin=%v masked=%v %q, want %v %q", h.OpCode, h.Fin, h.Masked, p, op, payload)
	}
}

func (c *npClient) expectClose(code ws.StatusCode) {
	c.t.Helper()
	h, p := c.read()
	if h.OpCode != ws.OpClose || len(p) < 2 || ws.StatusCode(binary.BigEndian.Uint16(p)) != code {
		c.t.Fatalf("got %v %x, want close %d", h.OpCode, p, code)
	}
}

func (c *npClient) expectEOF() {
	c.t.Helper()
	if b, err := c.br.ReadByte(); err == nil {
		c.t.Fatalf("got byte %#x, want EOF", b)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("got %v, want EOF", err)
	}
}

func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for an event")
		panic("unreachable")
	}
}

func TestNetpollEcho(t *testing.T) {
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{}, h)
	c := npDial(t, s)
	if st := c.upgrade(); st != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", st)
	}
	recv(t, h.opened)
	for i := range 3 {
		msg := fmt.Sprintf("hello %d", i)
		c.write(npFrame(true, ws.OpText, []byte(msg)))
		c.expect(ws.OpText, msg)
	}
	// A request and a frame in one segment, then a frame split byte by byte.
	c2 := npDial(t, s)
	c2.write(append([]byte(npRequest), npFrame(true, ws.OpBinary, []byte("same write"))...))
	resp, err := http.ReadResponse(c2.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	c2.expect(ws.OpBinary, "same write")
	for _, b := range npFrame(true, ws.OpText, []byte("trickled")) {
		c2.write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	c2.expect(ws.OpText, "trickled")
}

func TestNetpollFragmented(t *testing.T) {
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{}, h)
	c := npDial(t, s)
	c.upgrade()
	c.write(npFrame(false, ws.OpText, []byte("Hel")))
	c.write(npFrame(true, ws.OpPing, []byte("mid"))) // control frames may interleave
	c.expect(ws.OpPong, "mid")
	c.write(npFrame(false, ws.OpContinuation, []byte("lo, ")))
	c.write(npFrame(true, ws.OpContinuation, []byte("wörld")))
	c.expect(ws.OpText, "Hello, wörld")
}

func TestNetpollPingPong(t *testing.T) {
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{}, h)
	c := npDial(t, s)
	c.upgrade()
	c.write(npFrame(true, ws.OpPing, []byte("are you there")))
	c.expect(ws.OpPong, "are you there")
	c.write(npFrame(true, ws.OpPong, []byte("unsolicited"))) // ignored
	c.write(npFrame(true, ws.OpPing, nil))
	c.expect(ws.OpPong, "")
}

func TestNetpollTooBigBeforePayload(t *testing.T) {
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{MaxMessage: 64}, h)
	c := npDial(t, s)
	c.upgrade()
	recv(t, h.opened)
	// Only the header of a 1 MiB frame: the server must answer before the payload.
	hdr := npFrame(true, ws.OpBinary, nil)
	hdr[1] = 0x80 | 127
	hdr = append(hdr[:2], append(binary.BigEndian.AppendUint64(nil, 1<<20), hdr[2:]...)...)
	c.write(hdr)
	c.expectClose(ws.StatusMessageTooBig)
	c.write(npFrame(true, ws.OpClose, binary.BigEndian.AppendUint16(nil, 1009)))
	c.expectEOF()
	if info := recv(t, h.closed); info.Reason != CloseProtocol || info.Code != ws.StatusMessageTooBig {
		t.Fatalf("close info %+v", info)
	}
}

func TestNetpollCloseEcho(t *testing.T) {
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{}, h)
	c := npDial(t, s)
	c.upgrade()
	recv(t, h.opened)
	c.write(npFrame(true, ws.OpClose, append(binary.BigEndian.AppendUint16(nil, 1000), "bye"...)))
	h2, p := c.read()
	if h2.OpCode != ws.OpClose || string(p[2:]) != "bye" || binary.BigEndian.Uint16(p) != 1000 {
		t.Fatalf("got %v %q", h2.OpCode, p)
	}
	c.expectEOF()
	if info := recv(t, h.closed); info.Reason != ClosePeer || info.Code != 1000 {
		t.Fatalf("close info %+v", info)
	}
}

func TestNetpollPeerReset(t *testing.T) {
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{}, h)
	c := npDial(t, s)
	c.upgrade()
	recv(t, h.opened)
	c.nc.Close()
	if info := recv(t, h.closed); info.Reason != CloseReset {
		t.Fatalf("close info %+v", info)
	}
	// A client that connects and leaves without a byte is a reset reject.
	c2 := npDial(t, s)
	c2.nc.Close()
	if r := recv(t, h.rejects); r != RejectReset {
		t.Fatalf("reject %v", r)
	}
	eventually(t, 5*time.Second, func() error {
		if n := s.Conns(); n != 0 {
			return fmt.Errorf("%d conns", n)
		}
		return nil
	})
}

func TestNetpollDeadlineAndServerClose(t *testing.T) {
	h := newNPHandler(t)
	h.onOpen = func(c *Conn) { c.SetDeadline(time.Now().Add(50 * time.Millisecond)) }
	s, _, _ := npStart(t, Config{Tick: 10 * time.Millisecond}, h)
	c := npDial(t, s)
	c.upgrade()
	conn := recv(t, h.opened)
	if got := recv(t, h.deadline); got != conn {
		t.Fatal("deadline for another connection")
	}
	conn.Close(4000, "done")
	c.expectClose(4000)
	c.write(npFrame(true, ws.OpClose, binary.BigEndian.AppendUint16(nil, 4000)))
	c.expectEOF()
	if info := recv(t, h.closed); info.Reason != CloseServer || info.Code != 4000 {
		t.Fatalf("close info %+v", info)
	}
}

func TestNetpollCaps(t *testing.T) {
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{MaxConns: 1}, h)
	c := npDial(t, s)
	c.upgrade()
	recv(t, h.opened)
	c2 := npDial(t, s)
	if st := c2.upgrade(); st != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", st)
	}
	if r := recv(t, h.rejects); r != RejectCapacity {
		t.Fatalf("reject %v", r)
	}
}

// A client that does not read: Sends fill the outbox without blocking the
// sender, and once the client reads, the retrier delivers every frame, in
// order.
func TestNetpollSlowReader(t *testing.T) {
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{Outbox: 16 << 10}, h)
	c := npDial(t, s)
	c.upgrade()
	conn := recv(t, h.opened)
	payload := make([]byte, 1000)
	sent := 0
	start := time.Now()
	for full := 0; full < 3; {
		binary.BigEndian.PutUint32(payload, uint32(sent))
		switch err := conn.Send(AppendFrame(nil, ws.OpBinary, payload)); {
		case errors.Is(err, ErrFull):
			full++
			time.Sleep(20 * time.Millisecond) // let the retrier try
		case err != nil:
			t.Fatal(err)
		default:
			sent++
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("outbox never filled")
		}
	}
	t.Logf("%d frames sent before the outbox filled 3 times", sent)
	c.nc.SetDeadline(time.Now().Add(20 * time.Second))
	for i := range sent {
		hd, p := c.read()
		if hd.OpCode != ws.OpBinary || binary.BigEndian.Uint32(p) != uint32(i) {
			t.Fatalf("frame %d: %v seq %d", i, hd.OpCode, binary.BigEndian.Uint32(p))
		}
	}
	eventually(t, 5*time.Second, func() error {
		if n := conn.OutboxLen(); n != 0 {
			return fmt.Errorf("outbox %d", n)
		}
		return nil
	})
	c.write(npFrame(true, ws.OpText, []byte("still alive")))
	c.expect(ws.OpText, "still alive")
}

// Slowloris: upgrades that never complete park no goroutine. OnRequest
// must consume what is buffered and return; a blocking read there would
// hold one pool goroutine per stalled client. (The handshake timeout that
// ends them is tested on both engines by TestSlowloris.)
func TestNetpollSlowlorisNoGoroutines(t *testing.T) {
	const n = 200
	h := newNPHandler(t)
	s, _, _ := npStart(t, Config{HandshakeTimeout: time.Minute}, h)
	warm := npDial(t, s) // start netpoll's pollers before counting
	warm.upgrade()
	recv(t, h.opened)
	before := runtime.NumGoroutine()
	clients := make([]*npClient, n)
	sent := make(map[string]int, n) // client address → bytes of request sent
	for i := range clients {
		clients[i] = npDial(t, s)
		clients[i].write([]byte(npRequest[:20+i%40]))
		sent[clients[i].nc.LocalAddr().String()] = 20 + i%40
	}
	eventually(t, 5*time.Second, func() error {
		if got := s.Conns(); got != n+1 {
			return fmt.Errorf("%d conns", got)
		}
		return nil
	})
	for _, c := range clients { // a second piece, still incomplete
		c.write([]byte("X-Slow: 1\r\n"))
		sent[c.nc.LocalAddr().String()] += len("X-Slow: 1\r\n")
	}

	// Every piece has been handed to the reader and no OnRequest is
	// running: each connection's reader holds its whole partial request.
	e := s.engine.(*netpollEngine)
	eventually(t, ioTimeout, func() error {
		pending := 0
		for _, w := range e.snapshot(nil) {
			want, ok := sent[w.c.remote.String()]
			if !ok {
				continue // the warm connection
			}
			if !w.mu.TryLock() { // a callback is running
				pending++
				continue
			}
			if len(w.c.rd.buf) != want {
				pending++
			}
			w.mu.Unlock()
		}
		if pending > 0 {
			return fmt.Errorf("%d of %d half-sent requests not yet read", pending, n)
		}
		return nil
	})
	// The pool workers that ran those OnRequests exit once idle; none may
	// stay parked for a connection. A real leak holds n goroutines until
	// the clients leave.
	eventually(t, ioTimeout, func() error {
		if after := runtime.NumGoroutine(); after > before+5 {
			return fmt.Errorf("goroutines %d → %d with %d half-sent upgrades", before, after, n)
		}
		return nil
	})
	for _, c := range clients {
		c.nc.Close()
	}
	for range n {
		if r := recv(t, h.rejects); r != RejectReset {
			t.Fatalf("reject %v, want reset", r)
		}
	}
	warm.write(npFrame(true, ws.OpText, []byte("unaffected")))
	warm.expect(ws.OpText, "unaffected")
}

func TestNetpollShutdownAndStopAccepting(t *testing.T) {
	h := newNPHandler(t)
	s, cancel, done := npStart(t, Config{CloseTimeout: 500 * time.Millisecond}, h)
	polite, rude := npDial(t, s), npDial(t, s)
	polite.upgrade()
	rude.upgrade()
	recv(t, h.opened)
	recv(t, h.opened)
	half := npDial(t, s)
	half.write([]byte("GET /ws HTTP/1.1\r\n"))

	s.StopAccepting()
	eventually(t, 5*time.Second, func() error {
		nc, err := net.DialTimeout("tcp", s.Addr().String(), time.Second)
		if err == nil {
			nc.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	polite.write(npFrame(true, ws.OpText, []byte("after stop")))
	polite.expect(ws.OpText, "after stop")

	cancel()
	polite.expectClose(ws.StatusGoingAway)
	polite.write(npFrame(true, ws.OpClose, binary.BigEndian.AppendUint16(nil, 1001)))
	polite.expectEOF()
	rude.expectClose(ws.StatusGoingAway) // never answers: closed after CloseTimeout
	half.expectEOF()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	for range 2 {
		if info := recv(t, h.closed); info.Reason != CloseShutdown && info.Reason != CloseTimeout {
			t.Fatalf("close info %+v", info)
		}
	}
	if s.Conns() != 0 {
		t.Fatalf("%d conns after Run", s.Conns())
	}
}
