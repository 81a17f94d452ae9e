package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// wsConn is a lean WebSocket client connection (RFC 6455): masked text
// frames out; frames in read from one small buffer per connection, which
// grows only for a message larger than it and shrinks back afterwards.
// Ping frames are answered with pongs; fragmented messages are reassembled.
// It is deliberately not client/ (the SDK): the SDK spends goroutines,
// timers and buffers per connection that 19,000 simulated clients per
// process cannot afford.
//
// next is called by one goroutine (the reader); writeText and the pong of
// next are serialized by wmu; close may be called from any goroutine.
type wsConn struct {
	nc *net.TCPConn

	// Owned by the reader.
	buf  []byte // unread bytes are buf[r:w]
	r, w int
	frag []byte // a fragmented message being reassembled

	wmu  sync.Mutex
	fbuf []byte // guarded by wmu: the frame being written
	key  uint32 // guarded by wmu: the masking key, a xorshift sequence
}

const (
	readBufSize  = 1024    // per connection; a larger message grows it for a while
	maxFrameSize = 1 << 20 // a larger frame from the server ends the connection
)

// closeError is a close frame from the server.
type closeError struct {
	code   int
	reason string
}

func (e *closeError) Error() string {
	return fmt.Sprintf("closed by the server: %d %s", e.code, e.reason)
}

// wsURL is a parsed ws:// URL.
type wsURL struct {
	raw  string
	host string // host:port to dial
	path string // request target: path and query
}

func parseWSURL(s string) (wsURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return wsURL{}, err
	}
	if u.Scheme != "ws" {
		return wsURL{}, fmt.Errorf("%q: only ws:// URLs are supported", s)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	path := u.RequestURI()
	return wsURL{raw: s, host: host, path: path}, nil
}

// dialWS connects to u from source (any address when invalid) and
// completes the upgrade.
func dialWS(ctx context.Context, u wsURL, source netip.Addr, timeout time.Duration) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	if source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
		// Choose the port at connect time, not at bind: a source address
		// then serves 28,000 connections per destination, not in all.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			return errors.Join(err, serr)
		}
	}
	nc, err := d.DialContext(ctx, "tcp", u.host)
	if err != nil {
		return nil, err
	}
	c := &wsConn{nc: nc.(*net.TCPConn), buf: make([]byte, readBufSize)}
	if deadline, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(deadline)
	}
	if err := c.handshake(u); err != nil {
		nc.Close()
		return nil, err
	}
	c.nc.SetDeadline(time.Time{})
	var k [4]byte
	rand.Read(k[:])
	c.key = binary.LittleEndian.Uint32(k[:]) | 1
	return c, nil
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (Linux 4.2), missing from
// package syscall.
const ipBindAddressNoPort = 24

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func (c *wsConn) handshake(u wsURL) error {
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := "GET " + u.path + " HTTP/1.1\r\nHost: " + u.host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.nc.Write([]byte(req)); err != nil {
		return err
	}
	for {
		if i := bytes.Index(c.buf[:c.w], []byte("\r\n\r\n")); i >= 0 {
			c.r = i + 4
			return checkUpgrade(c.buf[:i], key)
		}
		if c.w == len(c.buf) {
			return errors.New("upgrade response larger than 1 KiB")
		}
		n, err := c.nc.Read(c.buf[c.w:])
		c.w += n
		if err != nil {
			return fmt.Errorf("upgrade: %w", err)
		}
	}
}

// checkUpgrade checks the status line and Sec-WebSocket-Accept of head.
func checkUpgrade(head []byte, key string) error {
	lines := bytes.Split(head, []byte("\r\n"))
	if status := lines[0]; !bytes.HasPrefix(status, []byte("HTTP/1.1 101")) {
		return fmt.Errorf("upgrade refused: %q", status)
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	want := base64.StdEncoding.EncodeToString(sum[:])
	for _, l := range lines[1:] {
		name, value, ok := bytes.Cut(l, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Sec-WebSocket-Accept")) {
			if string(bytes.TrimSpace(value)) != want {
				return errors.New("upgrade: wrong Sec-WebSocket-Accept")
			}
			return nil
		}
	}
	return errors.New("upgrade: no Sec-WebSocket-Accept")
}

// fill reads until at least n unread bytes are buffered, growing the buffer
// when it is too small.
func (c *wsConn) fill(n int) error {
	if c.w-c.r >= n {
		return nil
	}
	if n > len(c.buf) {
		nb := make([]byte, n)
		c.w = copy(nb, c.buf[c.r:c.w])
		c.buf, c.r = nb, 0
	} else if c.r+n > len(c.buf) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	for c.w-c.r < n {
		m, err := c.nc.Read(c.buf[c.w:])
		c.w += m
		if err != nil && c.w-c.r < n {
			return err
		}
	}
	return nil
}

// next returns the next text message; it is valid until the next call.
// A close frame ends with a *closeError.
func (c *wsConn) next() ([]byte, error) {
	if c.r == c.w && len(c.buf) > readBufSize { // the large message is done with
		c.buf, c.r, c.w = make([]byte, readBufSize), 0, 0
	}
	for {
		if err := c.fill(2); err != nil {
			return nil, err
		}
		b0, b1 := c.buf[c.r], c.buf[c.r+1]
		fin, op, masked := b0&0x80 != 0, b0&0x0f, b1&0x80 != 0
		hlen, plen := 2, uint64(b1&0x7f)
		switch plen {
		case 126:
			hlen = 4
		case 127:
			hlen = 10
		}
		if masked {
			hlen += 4
		}
		if err := c.fill(hlen); err != nil {
			return nil, err
		}
		h := c.buf[c.r : c.r+hlen]
		switch plen {
		case 126:
			plen = uint64(binary.BigEndian.Uint16(h[2:]))
		case 127:
			plen = binary.BigEndian.Uint64(h[2:])
		}
		if plen > maxFrameSize {
			return nil, fmt.Errorf("server frame of %d bytes", plen)
		}
		if err := c.fill(hlen + int(plen)); err != nil {
			return nil, err
		}
		p := c.buf[c.r+hlen : c.r+hlen+int(plen)]
		c.r += hlen + int(plen)
		if masked {
			var key [4]byte
			copy(key[:], h[hlen-4:])
			for i := range p {
				p[i] ^= key[i&3]
			}
		}
		switch op {
		case 0x1, 0x2, 0x0: // text, binary, continuation
			if fin && op != 0x0 && c.frag == nil {
				return p, nil
			}
			c.frag = append(c.frag, p...)
			if !fin {
				continue
			}
			msg := c.frag
			c.frag = nil
			return msg, nil
		case 0x8:
			ce := &closeError{code: 1005}
			if len(p) >= 2 {
				ce.code, ce.reason = int(binary.BigEndian.Uint16(p)), string(p[2:])
			}
			return nil, ce
		case 0x9:
			if err := c.write(0xA, p); err != nil {
				return nil, err
			}
		case 0xA:
		default:
			return nil, fmt.Errorf("frame with opcode %d", op)
		}
	}
}

// writeText sends p as one masked text frame.
func (c *wsConn) writeText(p []byte) error { return c.write(0x1, p) }

func (c *wsConn) write(op byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.fbuf[:0], 0x80|op)
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	c.key ^= c.key << 13 // xorshift32: masking keys need not be secret here
	c.key ^= c.key >> 17
	c.key ^= c.key << 5
	key := bits.ReverseBytes32(c.key)
	b = binary.BigEndian.AppendUint32(b, key)
	start := len(b)
	b = append(b, p...)
	for i := start; i < len(b); i++ {
		b[i] ^= byte(key >> (24 - 8*((i-start)&3)))
	}
	c.fbuf = b
	_, err := c.nc.Write(b)
	return err
}

// close closes the socket.
func (c *wsConn) close() { c.nc.Close() }

// cut resets the connection: SO_LINGER 0, then close, so the kernel sends
// an RST instead of a FIN.
func (c *wsConn) cut() {
	c.nc.SetLinger(0)
	c.nc.Close()
}
