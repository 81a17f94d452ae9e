package poller

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// reader is the receive side of one connection, owned by the engine
// goroutine that reads it (netpoll: whoever holds npConn.mu). An idle
// connection holds no buffer: buf and msg are nil unless a frame, a
// fragmented message or an HTTP request is partially received, or input
// is held back.
type reader struct {
	buf      []byte    // bytes carried between reads: an incomplete frame or request, or input held back
	msg      []byte    // fragments of the message being reassembled
	msgOp    ws.OpCode // opcode of that message; 0 when none is in progress
	utf8     utf8State // validation state across the fragments of a text message
	admitted bool      // counted by the connection caps
	upgraded bool      // the upgrade completed: the connection is open or closing
	// held: buf starts with a message the handler has not been given
	// because the outbox lacked Config.ReplyReserve (Conn.readPaused is
	// set); resume processes it.
	held bool
	// full is set by frames when it stops before a message for lack of
	// outbox room; run clears it before each batch.
	full bool
	// discarded counts the input read and dropped after a refused request
	// (see lingerLocked), saturating.
	discarded uint32
}

func (r *reader) release() { *r = reader{admitted: r.admitted} }

// Protocol errors, reported in CloseInfo.Err.
var (
	errUnmasked      = errors.New("poller: unmasked client frame")
	errReservedBits  = errors.New("poller: reserved bits set without an extension")
	errReservedOp    = errors.New("poller: reserved opcode")
	errControlFrame  = errors.New("poller: fragmented or oversized control frame")
	errContinuation  = errors.New("poller: continuation frame without a message in progress")
	errInterleaved   = errors.New("poller: new data frame inside a fragmented message")
	errLength        = errors.New("poller: 64-bit payload length with the top bit set")
	errTooBig        = errors.New("poller: message larger than MaxMessage")
	errInvalidUTF8   = errors.New("poller: text is not valid UTF-8")
	errCloseLength   = errors.New("poller: close frame with a 1-byte payload")
	errCloseCode     = errors.New("poller: invalid close code")
	errCloseReasonU8 = errors.New("poller: close reason is not valid UTF-8")
	errBacklog       = errors.New("poller: input kept for a paused connection beyond its bound")
)

// feed handles bytes read from the socket. in may be the engine's scratch
// buffer; feed does not keep it. It reports whether the connection is done
// and should be finished by the caller.
func (c *Conn) feed(in []byte) (done bool) {
	data := in
	fromBuf := len(c.rd.buf) > 0
	if fromBuf {
		c.rd.buf = append(c.rd.buf, in...)
		data = c.rd.buf
	}
	if c.rd.held && !c.holdMore(data, fromBuf) {
		return false
	}
	n, done := c.run(data)
	c.keep(data[n:], fromBuf, done)
	if c.rd.held && !done && c.sh.cfg.Engine == EngineNetpoll {
		// netpoll hands over what it read, however much: bound what the
		// first pause keeps too.
		c.mu.Lock()
		c.boundBacklogLocked()
		c.mu.Unlock()
	}
	return done
}

// resume processes the input held back since the outbox lacked room. It
// is called, by the goroutine that reads c, once the outbox has room
// again, and reports whether the connection should be finished.
func (c *Conn) resume() (done bool) {
	data := c.rd.buf
	n, done := c.run(data)
	c.keep(data[n:], true, done)
	return done
}

// run processes data, one batch of callbacks at a time: when it stops
// before a message for lack of outbox room, the batch's flush may have
// made room, and it goes on; otherwise the reader is paused (held) until
// onWritable resumes it. It returns the bytes used.
func (c *Conn) run(data []byte) (used int, done bool) {
	for {
		c.rd.full = false
		n, done := c.processBatch(data[used:])
		used += n
		if done {
			return used, true
		}
		if !c.rd.full {
			break
		}
		c.mu.Lock()
		room := c.roomLocked()
		if !room {
			c.setReadPausedLocked(true)
		}
		c.mu.Unlock()
		if !room {
			c.rd.held = true
			return used, false
		}
	}
	if c.rd.held {
		c.rd.held = false
		c.mu.Lock()
		c.setReadPausedLocked(false)
		c.mu.Unlock()
	}
	return used, false
}

// holdMore keeps input that arrived while the reader holds input back:
// only an engine that cannot stop reading (netpoll) gets here. Beyond
// shared.maxBacklog the connection is closed with 1008. It reports
// whether the input should be processed now: the outbox has room again
// (or the connection is closing).
func (c *Conn) holdMore(data []byte, fromBuf bool) (process bool) {
	if !fromBuf { // all of data is in
		c.rd.buf = append(make([]byte, 0, len(data)+64), data...)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.boundBacklogLocked()
	return c.roomLocked()
}

// boundBacklogLocked closes with 1008 a connection whose held input is
// beyond shared.maxBacklog.
func (c *Conn) boundBacklogLocked() {
	if len(c.rd.buf) > c.sh.maxBacklog && c.state == stateOpen {
		code := ws.StatusPolicyViolation
		c.startCloseLocked(CloseInfo{Reason: CloseProtocol, Code: code, Err: errBacklog}, closeFrame(code, "too many unread replies"))
	}
}

// keep carries rest, the input not used, to the next read; fromBuf says
// whether it lies in c.rd.buf.
func (c *Conn) keep(rest []byte, fromBuf, done bool) {
	switch {
	case done || len(rest) == 0:
		c.rd.buf = nil
	case !fromBuf:
		c.rd.buf = append(make([]byte, 0, len(rest)+64), rest...)
	case cap(c.rd.buf) > 4*len(rest)+4096:
		c.rd.buf = append(make([]byte, 0, len(rest)+64), rest...)
	default:
		c.rd.buf = c.rd.buf[:copy(c.rd.buf, rest)]
	}
}

// process consumes what it can of data and returns how many bytes it used;
// the rest is an incomplete frame or request.
func (c *Conn) process(data []byte) int {
	used := 0
	if !c.rd.upgraded { // only the reader leaves the handshake: after it, frames
		c.mu.Lock()
		st := c.state
		c.mu.Unlock()
		if st != stateHandshake { // rejecting or lingering: the rest is discarded
			c.rd.discarded = uint32(min(int64(c.rd.discarded)+int64(len(data)), lingerMax+1))
			return len(data)
		}
		n, ok := c.handshake(data)
		if !ok {
			return n
		}
		used, data = n, data[n:]
	}
	n, stop := c.frames(data)
	if stop {
		return used + len(data)
	}
	return used + n
}

// frames handles complete frames at the start of data. It returns the
// bytes used, and stop when the rest of the input must be discarded (a
// protocol error or the peer's close frame).
func (c *Conn) frames(data []byte) (used int, stop bool) {
	maxMsg := c.sh.cfg.MaxMessage
	for len(data) >= 2 {
		b0, b1 := data[0], data[1]
		fin, rsv, op := b0&0x80 != 0, b0&0x70, ws.OpCode(b0&0x0f)
		masked, len7 := b1&0x80 != 0, int(b1&0x7f)
		switch {
		case rsv != 0:
			return used, c.fail(ws.StatusProtocolError, errReservedBits)
		case op > ws.OpBinary && op < ws.OpClose || op > ws.OpPong:
			return used, c.fail(ws.StatusProtocolError, errReservedOp)
		case !masked:
			return used, c.fail(ws.StatusProtocolError, errUnmasked)
		case op.IsControl() && (!fin || len7 > 125):
			return used, c.fail(ws.StatusProtocolError, errControlFrame)
		case op == ws.OpContinuation && c.rd.msgOp == 0:
			return used, c.fail(ws.StatusProtocolError, errContinuation)
		case (op == ws.OpText || op == ws.OpBinary) && c.rd.msgOp != 0:
			return used, c.fail(ws.StatusProtocolError, errInterleaved)
		}
		hdr := 2 + 4
		switch len7 {
		case 126:
			hdr += 2
		case 127:
			hdr += 8
		}
		if len(data) < hdr {
			return used, false
		}
		var length uint64
		switch len7 {
		case 126:
			length = uint64(binary.BigEndian.Uint16(data[2:]))
		case 127:
			length = binary.BigEndian.Uint64(data[2:])
			if length>>63 != 0 {
				return used, c.fail(ws.StatusProtocolError, errLength)
			}
		default:
			length = uint64(len7)
		}
		if !op.IsControl() && length+uint64(len(c.rd.msg)) > uint64(maxMsg) {
			return used, c.fail(ws.StatusMessageTooBig, errTooBig)
		}
		end := hdr + int(length)
		if len(data) < end {
			return used, false
		}
		c.mu.Lock()
		open := c.state == stateOpen
		room := c.roomLocked()
		c.mu.Unlock()
		if fin && !op.IsControl() && !room { // a message the replies may not fit: hold it back
			c.rd.full = true
			return used, false
		}
		payload := data[hdr:end]
		ws.Cipher(payload, [4]byte(data[hdr-4:hdr]), 0)
		used, data = used+end, data[end:]
		if stop := c.frame(fin, op, payload, open); stop {
			return used, true
		}
	}
	return used, false
}

// frame handles one complete, unmasked frame; open says whether the
// connection was open when the frame was read.
func (c *Conn) frame(fin bool, op ws.OpCode, payload []byte, open bool) (stop bool) {
	switch op {
	case ws.OpPing:
		// A pong is answered only when it fits in the outbox: a peer that
		// pings and never reads must not grow it (RFC 6455 5.5.3 allows
		// answering only the latest ping).
		c.mu.Lock()
		if open && int(c.outLen)+2+len(payload) <= c.sh.cfg.Outbox {
			c.enqueueLocked(AppendFrame(make([]byte, 0, 2+len(payload)), ws.OpPong, payload))
		}
		c.mu.Unlock()
		return false
	case ws.OpPong:
		return false
	case ws.OpClose:
		return c.peerClose(payload)
	}
	if !open { // closing: data frames are discarded
		return false
	}
	if op != ws.OpContinuation { // first frame of a message
		if fin {
			if op == ws.OpText && !utf8.Valid(payload) {
				return c.fail(ws.StatusInvalidFramePayloadData, errInvalidUTF8)
			}
			c.callMessage(op, payload)
			return false
		}
		c.rd.msgOp = op
		c.rd.utf8 = utf8State{}
	}
	if c.rd.msgOp == ws.OpText && !c.rd.utf8.feed(payload, fin) {
		return c.fail(ws.StatusInvalidFramePayloadData, errInvalidUTF8)
	}
	c.rd.msg = append(c.rd.msg, payload...)
	if !fin {
		return false
	}
	msg, mop := c.rd.msg, c.rd.msgOp
	c.rd.msg, c.rd.msgOp = nil, 0
	c.callMessage(mop, msg)
	return false
}

// peerClose handles the peer's close frame: it is validated and echoed.
func (c *Conn) peerClose(payload []byte) (stop bool) {
	code := ws.StatusNoStatusRcvd
	switch {
	case len(payload) == 1:
		return c.fail(ws.StatusProtocolError, errCloseLength)
	case len(payload) >= 2:
		code = ws.StatusCode(binary.BigEndian.Uint16(payload))
		if !validCloseCode(code) {
			return c.fail(ws.StatusProtocolError, errCloseCode)
		}
		if !utf8.Valid(payload[2:]) {
			return c.fail(ws.StatusInvalidFramePayloadData, errCloseReasonU8)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.peerClosed = true
	if c.state == stateOpen {
		echo := AppendFrame(make([]byte, 0, 2+len(payload)), ws.OpClose, payload)
		c.startCloseLocked(CloseInfo{Reason: ClosePeer, Code: code}, echo)
	}
	return true
}

// fail starts closing with code after a protocol error. It returns true:
// the rest of the input is discarded.
func (c *Conn) fail(code ws.StatusCode, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateOpen {
		c.startCloseLocked(CloseInfo{Reason: CloseProtocol, Code: code, Err: err}, closeFrame(code, ""))
	} else {
		c.peerClosed = true // already closing: stop waiting for a clean answer
	}
	return true
}

// validCloseCode reports whether a peer may send code (RFC 6455 7.4).
func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
