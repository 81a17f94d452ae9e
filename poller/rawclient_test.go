package poller

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// ioTimeout bounds every blocking read or write of the raw client. It is
// generous: a failing test ends with a clear error instead of hanging, and
// a slow CI box never trips it.
const ioTimeout = 10 * time.Second

// rawClient speaks WebSocket by hand over a real TCP socket, so a test can
// send anything: unmasked frames, reserved bits and opcodes, any length
// encoding, partial frames. With chop set every write goes out one byte at
// a time (TCP_NODELAY), so the server sees its input split everywhere.
type rawClient struct {
	t    testing.TB
	conn *net.TCPConn
	br   *bufio.Reader
	chop bool
	key  string // Sec-WebSocket-Key of the last upgrade request
}

// dialRaw connects to addr from the default local address.
func dialRaw(t testing.TB, addr netip.AddrPort) *rawClient {
	t.Helper()
	return dialRawFrom(t, netip.Addr{}, addr)
}

// dialRawFrom connects to addr from the local IP from (any port); the zero
// Addr lets the kernel choose. The connection is closed in t.Cleanup.
func dialRawFrom(t testing.TB, from netip.Addr, addr netip.AddrPort) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout}
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
	}
	nc, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	conn := nc.(*net.TCPConn)
	conn.SetNoDelay(true)
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// localAddr is the client's address: the server's Conn.RemoteAddr.
func (c *rawClient) localAddr() netip.AddrPort {
	return c.conn.LocalAddr().(*net.TCPAddr).AddrPort()
}

// write sends b, byte by byte when c.chop is set. Errors are returned, not
// fatal: a server that has failed the connection may close the socket while
// the client is still writing, and the test then judges what it reads.
func (c *rawClient) write(b []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if !c.chop {
		_, err := c.conn.Write(b)
		return err
	}
	for i := range b {
		if _, err := c.conn.Write(b[i : i+1]); err != nil {
			return err
		}
	}
	return nil
}

// mustWrite is write for steps that must succeed.
func (c *rawClient) mustWrite(b []byte) {
	c.t.Helper()
	if err := c.write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// upgradeRequest builds a GET upgrade request for path with the required
// headers followed by extra header lines ("Name: value").
func upgradeRequest(path, key string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\n", path)
	b.WriteString("Host: 127.0.0.1\r\n")
	b.WriteString("Upgrade: websocket\r\n")
	b.WriteString("Connection: Upgrade\r\n")
	b.WriteString("Sec-WebSocket-Version: 13\r\n")
	fmt.Fprintf(&b, "Sec-WebSocket-Key: %s\r\n", key)
	for _, h := range extra {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// testKey is a valid Sec-WebSocket-Key (16 bytes, base64).
const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// acceptKey is the Sec-WebSocket-Accept a server must answer key with.
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// request writes raw request bytes and reads the HTTP response head.
func (c *rawClient) request(req string) (*http.Response, error) {
	if err := c.write([]byte(req)); err != nil {
		return nil, err
	}
	return c.readResponse()
}

func (c *rawClient) readResponse() (*http.Response, error) {
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, nil
}

// upgrade performs the opening handshake on path "/ws" and fails the test
// unless the server answers 101 with the right accept key.
func (c *rawClient) upgrade(extra ...string) *http.Response {
	c.t.Helper()
	c.key = testKey
	resp, err := c.request(upgradeRequest("/ws", c.key, extra...))
	if err != nil {
		c.t.Fatalf("upgrade: %v", err)
	}
	checkUpgraded(c.t, resp, c.key)
	return resp
}

// checkUpgraded fails the test unless resp is a valid 101 answer to key.
func checkUpgraded(t testing.TB, resp *http.Response, key string) {
	t.Helper()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d, want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("Upgrade"); !strings.EqualFold(got, "websocket") {
		t.Fatalf("upgrade: Upgrade header %q", got)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(key); got != want {
		t.Fatalf("upgrade: Sec-WebSocket-Accept %q, want %q", got, want)
	}
}

// rawFrame is one WebSocket frame as the raw client builds or reads it.
type rawFrame struct {
	fin     bool
	rsv     byte // the three RSV bits, 0..7 (RSV1 = 4)
	op      ws.OpCode
	masked  bool
	mask    [4]byte
	payload []byte
	// lenForm forces the length encoding: 0 picks the shortest, 7, 16 or
	// 64 pick the 7-bit, 16-bit or 64-bit form.
	lenForm int
	// length, when set, is written as the payload length instead of
	// len(payload): a header that announces more than is sent.
	length *uint64
}

func (f rawFrame) String() string {
	p := f.payload
	if len(p) > 32 {
		p = p[:32]
	}
	return fmt.Sprintf("{fin=%v rsv=%d op=%v masked=%v len=%d payload=%q}", f.fin, f.rsv, f.op, f.masked, len(f.payload), p)
}

// testMask is the masking key of client frames: not zero, so a server that
// forgot to unmask sees garbage.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// header encodes f's header, masking key included.
func (f rawFrame) header() []byte {
	b0 := f.rsv<<4 | byte(f.op)&0x0f
	if f.fin {
		b0 |= 0x80
	}
	n := uint64(len(f.payload))
	if f.length != nil {
		n = *f.length
	}
	form := f.lenForm
	if form == 0 {
		switch {
		case n <= 125:
			form = 7
		case n <= 0xFFFF:
			form = 16
		default:
			form = 64
		}
	}
	var maskBit byte
	if f.masked {
		maskBit = 0x80
	}
	h := []byte{b0}
	switch form {
	case 7:
		h = append(h, maskBit|byte(n))
	case 16:
		h = append(h, maskBit|126)
		h = binary.BigEndian.AppendUint16(h, uint16(n))
	default:
		h = append(h, maskBit|127)
		h = binary.BigEndian.AppendUint64(h, n)
	}
	if f.masked {
		h = append(h, f.mask[:]...)
	}
	return h
}

// bytes encodes f: its header and its (masked) payload.
func (f rawFrame) bytes() []byte {
	b := f.header()
	start := len(b)
	b = append(b, f.payload...)
	if f.masked {
		ws.Cipher(b[start:], f.mask, 0)
	}
	return b
}

// Builders of client frames (masked unless said otherwise).

func cframe(fin bool, op ws.OpCode, payload string) rawFrame {
	return rawFrame{fin: fin, op: op, masked: true, mask: testMask, payload: []byte(payload)}
}

func clientText(s string) []byte   { return cframe(true, ws.OpText, s).bytes() }
func clientBinary(s string) []byte { return cframe(true, ws.OpBinary, s).bytes() }
func clientPing(s string) []byte   { return cframe(true, ws.OpPing, s).bytes() }
func clientPong(s string) []byte   { return cframe(true, ws.OpPong, s).bytes() }

// clientFrag is one fragment: op is OpText/OpBinary for the first fragment and
// OpContinuation for the others.
func clientFrag(fin bool, op ws.OpCode, s string) []byte { return cframe(fin, op, s).bytes() }

// clientClose is a client close frame with code and reason.
func clientClose(code uint16, reason string) []byte {
	p := binary.BigEndian.AppendUint16(nil, code)
	return cframe(true, ws.OpClose, string(p)+reason).bytes()
}

// clientCloseRaw is a client close frame with an arbitrary payload.
func clientCloseRaw(payload string) []byte { return cframe(true, ws.OpClose, payload).bytes() }

// cat concatenates frames.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// readFrame reads one server frame. Server frames must not be masked and
// must not set RSV bits: the raw client fails the test otherwise.
func (c *rawClient) readFrame() (rawFrame, error) {
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return rawFrame{}, err
	}
	f := rawFrame{fin: h[0]&0x80 != 0, rsv: h[0] >> 4 & 7, op: ws.OpCode(h[0] & 0x0f), masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return rawFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return rawFrame{}, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if f.masked {
		return f, errors.New("server frame is masked")
	}
	if f.rsv != 0 {
		return f, errors.New("server frame sets RSV bits")
	}
	if n > 64<<20 {
		return f, fmt.Errorf("server frame of %d bytes", n)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, f.payload); err != nil {
		return rawFrame{}, err
	}
	return f, nil
}

// mustReadFrame reads one server frame or fails the test.
func (c *rawClient) mustReadFrame() rawFrame {
	c.t.Helper()
	f, err := c.readFrame()
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

// closeCode decodes a close payload; an empty one is 1005 (no status).
func closeCode(payload []byte) (ws.StatusCode, string) {
	if len(payload) < 2 {
		return ws.StatusNoStatusRcvd, ""
	}
	return ws.StatusCode(binary.BigEndian.Uint16(payload)), string(payload[2:])
}

// readClose reads frames until a close frame and returns its code and
// reason; other frames read on the way are returned too.
func (c *rawClient) readClose() (code ws.StatusCode, reason string, before []rawFrame, err error) {
	for {
		f, err := c.readFrame()
		if err != nil {
			return 0, "", before, err
		}
		if f.op == ws.OpClose {
			code, reason = closeCode(f.payload)
			return code, reason, before, nil
		}
		before = append(before, f)
	}
}

// expectEOF waits until the server closes the socket; the remaining bytes
// must not hold a frame.
func (c *rawClient) expectEOF() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	rest, err := io.ReadAll(c.br)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("waiting for the server to close: %v", err)
	}
	if len(rest) > 0 {
		c.t.Fatalf("got %d bytes after the close frame: %q", len(rest), rest)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// closeHandshake sends a close frame with code and reason, reads the
// server's echo and waits for the socket to close.
func (c *rawClient) closeHandshake(code uint16, reason string) {
	c.t.Helper()
	c.mustWrite(clientClose(code, reason))
	got, gotReason, before, err := c.readClose()
	if err != nil {
		c.t.Fatalf("close handshake: %v (frames before: %v)", err, before)
	}
	if len(before) > 0 {
		c.t.Fatalf("close handshake: unexpected frames before the close: %v", before)
	}
	if got != ws.StatusCode(code) || gotReason != reason {
		c.t.Fatalf("close echo: %d %q, want %d %q", got, gotReason, code, reason)
	}
	c.expectEOF()
}
