package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/presenced/presenced/internal/wire"
)

// wsClient is a raw protocol v1 client for tests: it sends JSON text
// messages and reads server messages one at a time.
type wsClient struct {
	t    *testing.T
	conn net.Conn
}

// connect dials n without saying hello.
func connect(t *testing.T, n *node) *wsClient {
	t.Helper()
	return &wsClient{t: t, conn: dial(t, n)}
}

// login dials n and says hello as user (insecure servers), returning the
// client after its welcome.
func login(t *testing.T, n *node, user string) *wsClient {
	t.Helper()
	c := connect(t, n)
	c.send(map[string]any{"t": "hello", "v": 1, "user": user})
	c.expect("welcome")
	return c
}

// send writes v (a string is sent as is, anything else as JSON).
func (c *wsClient) send(v any) {
	c.t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatalf("marshal: %v", err)
		}
	}
	if err := wsutil.WriteClientText(c.conn, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// message is one server message: its bytes and their decoding.
type message struct {
	wire.Event
	raw []byte
}

// keys are the message's top-level field names, sorted.
func (m message) keys() []string {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(m.raw, &fields); err != nil {
		return nil
	}
	ks := make([]string, 0, len(fields))
	for k := range fields {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// field is the raw JSON of the message's top-level field k, "" if absent.
func (m message) field(k string) string {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(m.raw, &fields); err != nil {
		return ""
	}
	return string(fields[k])
}

// read reads the next server message, answering nothing. It fails the test
// on a close or after timeout.
func (c *wsClient) read(timeout time.Duration) message {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	defer c.conn.SetReadDeadline(time.Time{})
	msg, op, err := wsutil.ReadServerData(c.conn)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if op != ws.OpText {
		c.t.Fatalf("server sent opcode %v", op)
	}
	m := message{raw: msg}
	if err := wire.DecodeEvent(msg, &m.Event); err != nil {
		c.t.Fatalf("decode %q: %v", msg, err)
	}
	return m
}

// next reads the next server message, answering nothing. It fails the test
// on a close or after timeout.
func (c *wsClient) next(timeout time.Duration) wire.Event {
	c.t.Helper()
	return c.read(timeout).Event
}

// expectMsg reads messages until one of type typ arrives, skipping server
// pings, and returns it. Any other message fails the test.
func (c *wsClient) expectMsg(typ string) message {
	c.t.Helper()
	for {
		m := c.read(5 * time.Second)
		if m.T == typ {
			return m
		}
		if m.T != "ping" {
			c.t.Fatalf("got %s, want a %s", m.raw, typ)
		}
	}
}

// expect reads messages until one of type typ arrives, skipping server
// pings, and returns it. Any other message fails the test.
func (c *wsClient) expect(typ string) wire.Event {
	c.t.Helper()
	return c.expectMsg(typ).Event
}

// waitFor reads messages, skipping any that do not satisfy ok, until one
// does, and returns it. It fails the test after timeout.
func (c *wsClient) waitFor(timeout time.Duration, what string, ok func(m message) bool) message {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var skipped []string
	for {
		left := time.Until(deadline)
		if left <= 0 {
			c.t.Fatalf("no %s within %v; skipped %s", what, timeout, strings.Join(skipped, " "))
		}
		c.conn.SetReadDeadline(deadline)
		msg, op, err := wsutil.ReadServerData(c.conn)
		c.conn.SetReadDeadline(time.Time{})
		if err != nil {
			c.t.Fatalf("waiting for %s: read: %v; skipped %s", what, err, strings.Join(skipped, " "))
		}
		if op != ws.OpText {
			c.t.Fatalf("server sent opcode %v", op)
		}
		m := message{raw: msg}
		if err := wire.DecodeEvent(msg, &m.Event); err != nil {
			c.t.Fatalf("decode %q: %v", msg, err)
		}
		if ok(m) {
			return m
		}
		skipped = append(skipped, string(msg))
	}
}

// quiet checks that the server sends nothing but pings for d.
func (c *wsClient) quiet(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		c.conn.SetReadDeadline(deadline)
		msg, _, err := wsutil.ReadServerData(c.conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return
		}
		if err != nil {
			c.t.Fatalf("read while expecting silence: %v", err)
		}
		var e wire.Event
		if wire.DecodeEvent(msg, &e) == nil && e.T == "ping" {
			continue
		}
		c.t.Fatalf("got %s, want silence for %v", msg, d)
	}
}

// closeCode reads until the server's close frame and returns its code.
func (c *wsClient) closeCode() wire.CloseCode {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, err := ws.ReadHeader(c.conn)
		if err == nil && h.Length > 1<<20 {
			err = fmt.Errorf("a frame of %d bytes", h.Length)
		}
		var payload []byte
		if err == nil {
			payload = make([]byte, h.Length)
			_, err = io.ReadFull(c.conn, payload)
		}
		if err != nil {
			c.t.Fatalf("read until close: %v", err)
		}
		if h.OpCode != ws.OpClose {
			continue
		}
		code, _ := ws.ParseCloseFrameData(payload)
		// Answer it, as a client does (a drain waits for the answer). The
		// write may fail: a server that closed with our message unread
		// resets the connection. The code was read all the same.
		_ = ws.WriteFrame(c.conn, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, ""))))
		return wire.CloseCode(code)
	}
}

// close sends close 1000 and waits for the server's answer.
func (c *wsClient) close() {
	c.t.Helper()
	f := ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	if err := ws.WriteFrame(c.conn, f); err != nil {
		c.t.Fatalf("write close: %v", err)
	}
	c.closeCode()
}

// drop ends the TCP connection without a closing handshake, as a lost
// network or a killed client would: the server sees a reset.
func (c *wsClient) drop() {
	c.t.Helper()
	if tc, ok := c.conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // RST rather than FIN
	}
	c.conn.Close()
}

// dialSmallBuffer dials n with a tiny receive buffer, so that a client that
// stops reading fills the server's outbox quickly.
func dialSmallBuffer(t *testing.T, n *node) *wsClient {
	t.Helper()
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, _, err := d.Dial(ctx, "ws://"+n.Addr().String()+"/ws")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}
