package poller

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// connState is the lifecycle of a connection.
type connState uint8

const (
	stateHandshake connState = iota // reading the HTTP upgrade request
	stateOpen                       // upgraded; frames flow both ways
	stateClosing                    // close frame sent or received; waiting to finish
	stateRejecting                  // HTTP error response queued; lingering once it is written
	stateLingering                  // response written, write side shut: discarding input until EOF
	stateClosed                     // socket closed; OnClose delivered
)

// lingerMax bounds the bytes a rejected connection may send after its
// request before it is closed without waiting for its EOF (net/http's
// closeWriteAndWait reads at most 256 KiB of an unread body).
const lingerMax = 64 << 10

// connEngine is what the shared connection code needs from the engine that
// owns the socket.
type connEngine interface {
	// write and writev write without blocking; they return the bytes the
	// kernel took, and EAGAIN when it took none.
	write(c *Conn, p []byte) (int, error)
	writev(c *Conn, bufs [][]byte) (int, error)
	// wantWrite asks to be told (via Conn.onWritable) when the socket can
	// take more bytes; off cancels it. Called with c.mu held.
	wantWrite(c *Conn, on bool)
	// pauseRead stops reading the socket (on) or starts again (off), where
	// the engine can: the reader holds input back until the outbox has
	// room (Config.ReplyReserve). Called with c.mu held, from the goroutine
	// that reads c.
	pauseRead(c *Conn, on bool)
	// setDeadline stores c's deadline (unix nanoseconds, 0 = none) for the
	// engine's sweep.
	setDeadline(c *Conn, unixNano int64)
	// shutdownWrite shuts down the sending side of the socket (the peer
	// reads EOF) and keeps reading it. Called with c.mu held, by the
	// goroutine that reads c, before closeSocket.
	shutdownWrite(c *Conn) error
	// closeSocket releases the socket. Called once, with c.mu held.
	closeSocket(c *Conn)
}

// Conn is one client connection. Send, Close and SetDeadline are safe for
// concurrent use; Value and SetValue are not synchronized (set the value in
// OnOpen, before the connection is shared).
type Conn struct {
	id     uint64         // static after accept
	fd     int            // static after accept; closed with mu held
	remote netip.AddrPort // static after accept
	sh     *shared        // static after accept
	eng    connEngine     // static after accept

	rd    reader // owned by the engine goroutine reading this connection
	value any    // owned by the application

	// mu guards the fields below. Lock order: Conn.mu is innermost; the
	// handler is never called with it held. (reject and the flags share a
	// word.)
	mu         sync.Mutex
	state      connState
	reject     RejectReason
	opened     bool     // OnOpen was delivered
	batching   bool     // the reader is inside a callback; Sends wait for endBatch
	writeArmed bool     // the engine will call onWritable
	readPaused bool     // the reader holds input back until the outbox has ReplyReserve free; written by the reader only
	peerClosed bool     // a close frame arrived
	sentClose  bool     // a close frame is queued or written
	out        [][]byte // queued frames not yet taken by the kernel; out[0] is trimmed as written
	ob         *outbox  // the storage of out while frames are queued (see outbox); nil when the outbox is empty
	// outLen and the close reason and code share a word, and closeErr
	// completes the CloseInfo to report: the Conn is 224 bytes, a size class.
	outLen      int32         // bytes in out (at most about MaxOutbox)
	closeReason CloseReason   // why the closing handshake started; 0 before
	closeCode   ws.StatusCode // the close code of that handshake
	closeErr    error
}

// ID is unique among the connections of one Server.
func (c *Conn) ID() uint64 { return c.id }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.remote }

// Value returns what SetValue stored.
func (c *Conn) Value() any { return c.value }

// SetValue stores application data with the connection.
func (c *Conn) SetValue(v any) { c.value = v }

// Send queues one complete WebSocket frame (see AppendFrame) and returns at
// once. The poller keeps a reference to frame until the kernel has taken it,
// so the same bytes can be sent to many connections and must not be
// modified afterwards. It returns ErrFull, queuing nothing, when the frame
// does not fit in the outbox, and ErrClosed once the connection is closing.
func (c *Conn) Send(frame []byte) error { return c.queue(frame, 0, false) }

// SendCopy is Send for a frame whose bytes the caller reuses once it
// returns (a reply encoded in a scratch buffer): what the kernel does not
// take at once is copied into the connection's outbox storage, which comes
// from a pool and goes back to it when the outbox drains, so a reply
// costs no allocation.
func (c *Conn) SendCopy(frame []byte) error { return c.queue(frame, 0, true) }

// Offer queues frame like Send, but only if Config.ReplyReserve of the
// outbox stays free after it; otherwise it returns ErrFull, queuing
// nothing. It is for frames that may be dropped and made up for later
// (presence's diffs and syncs): however many of them other goroutines
// offer, the room the reader checked for a message's replies stays free.
func (c *Conn) Offer(frame []byte) error { return c.queue(frame, c.sh.cfg.ReplyReserve, false) }

// queue queues frame, or a copy of it, if keep bytes of the outbox stay
// free after it.
func (c *Conn) queue(frame []byte, keep int, copied bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return ErrClosed
	}
	if len(frame) == 0 {
		return nil
	}
	if int(c.outLen)+len(frame)+keep > c.sh.cfg.Outbox {
		return ErrFull
	}
	c.enqueueCopyLocked(frame, copied)
	return nil
}

// Close starts the closing handshake with code and reason (at most 123
// bytes, truncated otherwise). OnClose follows once the peer answers or
// Config.CloseTimeout passes. Close on a closing connection does nothing.
// It reports whether this call started the closing handshake.
func (c *Conn) Close(code ws.StatusCode, reason string) (started bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false
	}
	c.startCloseLocked(CloseInfo{Reason: CloseServer, Code: code}, closeFrame(code, reason))
	return true
}

// SetDeadline makes the poller call OnDeadline once t passes (within
// Config.Tick). The zero t clears it. One deadline per connection: a new
// one replaces the old one. Ignored once the connection is closing.
func (c *Conn) SetDeadline(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.mu.Lock()
	if c.state == stateOpen {
		c.eng.setDeadline(c, ns)
	}
	c.mu.Unlock()
}

// OutboxLen is the number of bytes queued and not yet taken by the kernel.
func (c *Conn) OutboxLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.outLen)
}

// enqueueLocked appends frame to the outbox and writes at once unless the
// reader is batching. When nothing is queued the frame is written straight
// from the caller's slice, so a fast connection costs no allocation.
func (c *Conn) enqueueLocked(frame []byte) { c.enqueueCopyLocked(frame, false) }

// enqueueCopyLocked is enqueueLocked; with copied, the bytes it queues are
// a copy in the outbox storage.
func (c *Conn) enqueueCopyLocked(frame []byte, copied bool) {
	if len(c.out) == 0 && !c.batching {
		n, err := c.eng.write(c, frame)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
		case err != nil:
			return // broken socket: the reader sees it (EPOLLERR/HUP) and finishes
		case n == len(frame):
			return
		default:
			frame = frame[n:]
		}
	}
	if c.ob == nil {
		c.ob = c.sh.getOutbox()
		c.out = c.ob.frames[:0]
	}
	if copied {
		frame = c.ob.keep(frame)
	}
	c.out = append(c.out, frame)
	c.outLen += int32(len(frame))
	if !c.batching && !c.writeArmed {
		c.writeArmed = true
		c.eng.wantWrite(c, true)
	}
}

// maxIovec is the most buffers one writev takes (Linux IOV_MAX).
const maxIovec = 1024

// flushLocked writes queued frames until the kernel stops taking them.
// It reports whether the outbox is empty.
func (c *Conn) flushLocked() bool {
	for c.outLen > 0 {
		n, err := c.eng.writev(c, c.out[:min(len(c.out), maxIovec)])
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				break
			}
			c.dropOutboxLocked()
			break
		}
		c.consumeOutLocked(n)
		if n == 0 {
			break
		}
	}
	if c.outLen == 0 {
		c.releaseOutLocked() // an idle connection holds no buffer
		// A paused reader resumes from onWritable: keep asking for it, even
		// when a flush outside onWritable (a deadline's batch) drained the
		// outbox.
		if c.writeArmed && !c.readPaused {
			c.writeArmed = false
			c.eng.wantWrite(c, false)
		}
		return true
	}
	if !c.writeArmed {
		c.writeArmed = true
		c.eng.wantWrite(c, true)
	}
	return false
}

func (c *Conn) consumeOutLocked(n int) {
	c.outLen -= int32(n)
	i := 0
	for i < len(c.out) && n >= len(c.out[i]) {
		n -= len(c.out[i])
		c.out[i] = nil
		i++
	}
	c.out = c.out[i:]
	if n > 0 {
		c.out[0] = c.out[0][n:]
	}
}

func (c *Conn) dropOutboxLocked() {
	clear(c.out)
	c.releaseOutLocked()
	c.outLen = 0
}

// releaseOutLocked returns the storage of an empty (or dropped) outbox to
// the pool.
func (c *Conn) releaseOutLocked() {
	c.out = nil
	if ob := c.ob; ob != nil {
		c.ob = nil
		c.sh.putOutbox(ob)
	}
}

// startCloseLocked queues frame, a close frame (the outbox bound does not
// apply to it), and starts the close timeout. info is reported in OnClose.
func (c *Conn) startCloseLocked(info CloseInfo, frame []byte) {
	c.state = stateClosing
	c.closeReason, c.closeCode, c.closeErr = info.Reason, info.Code, info.Err
	c.sentClose = true
	c.enqueueLocked(frame)
	c.armCloseTimeoutLocked()
}

// armCloseTimeoutLocked gives a closing or rejected connection
// Config.CloseTimeout to finish.
func (c *Conn) armCloseTimeoutLocked() {
	c.eng.setDeadline(c, nowNano()+int64(c.sh.cfg.CloseTimeout))
}

// beginBatch is called by the reader before it delivers callbacks; Sends
// then queue without writing until endBatch, so one turn's frames go out
// in one writev. Callers pair them with a defer (processBatch,
// deadlineBatch), so that a batch ends even if a panic unwinds through it.
func (c *Conn) beginBatch() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

// endBatch writes what the batch queued. It reports whether the connection
// has finished its closing exchange and should be finished by the caller.
func (c *Conn) endBatch() (done bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	empty := c.flushLocked()
	return empty && c.doneLocked()
}

// processBatch runs the protocol code on data inside one batch. It returns
// the bytes used and whether the connection should be finished.
func (c *Conn) processBatch(data []byte) (n int, done bool) {
	c.beginBatch()
	defer func() { done = c.endBatch() || done }()
	return c.process(data), false
}

// deadlineBatch runs an expired deadline (see onDeadline) inside one batch
// and reports whether the connection should be finished, with info.
func (c *Conn) deadlineBatch(slot *atomic.Int64, d int64) (done bool, info CloseInfo) {
	c.beginBatch()
	defer func() { done = c.endBatch() || done }()
	return c.onDeadline(slot, d)
}

// onWritable is called by the goroutine that reads c when the socket can
// take more bytes. A paused reader resumes once the outbox has room again.
// It reports whether the connection should now be finished.
func (c *Conn) onWritable() (done bool) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return false
	}
	empty := c.flushLocked()
	done = empty && c.doneLocked()
	resume := !done && c.readPaused && c.roomLocked()
	c.mu.Unlock()
	if resume {
		return c.resume()
	}
	return done
}

// roomLocked reports whether the reader may hand the handler a message:
// the outbox has Config.ReplyReserve free, or the connection is no longer
// open (data is then discarded, and control frames must get through).
func (c *Conn) roomLocked() bool {
	return c.state != stateOpen || int(c.outLen)+c.sh.cfg.ReplyReserve <= c.sh.cfg.Outbox
}

// setReadPausedLocked records whether the reader holds input back and
// tells the engine. Called by the reader only. While paused, the write
// interest stays armed (see flushLocked), so onWritable is sure to come
// and resume the reader.
func (c *Conn) setReadPausedLocked(on bool) {
	if c.readPaused == on {
		return
	}
	c.readPaused = on
	if !on && c.outLen == 0 && c.writeArmed {
		c.writeArmed = false
		c.eng.wantWrite(c, false)
	}
	c.eng.pauseRead(c, on)
}

// doneLocked: every byte is written and nothing more is expected. Called
// with the outbox empty, by the goroutine that reads c; a rejected
// connection then starts its lingering close.
func (c *Conn) doneLocked() bool {
	switch c.state {
	case stateRejecting:
		return c.lingerLocked()
	case stateLingering:
		return c.rd.discarded > lingerMax
	case stateClosing:
		return c.peerClosed
	}
	return false
}

// lingerLocked starts the lingering close of a rejected connection whose
// response is written, like net/http's closeWriteAndWait: closing a socket
// with unread input, or receiving input once it is closed, makes the kernel
// send a reset, and the client's kernel then discards response bytes its
// application has not read yet (a pipelined request or a stray byte after
// the request is enough). So the write side is shut down (the client reads
// the response, then EOF), and input is read and discarded until the
// client's EOF, lingerMax bytes or CloseTimeout. It reports whether the
// connection should be finished at once instead.
func (c *Conn) lingerLocked() (done bool) {
	if c.rd.discarded > lingerMax {
		return true
	}
	if err := c.eng.shutdownWrite(c); err != nil {
		return true // not connected any more: nothing to wait for
	}
	c.state = stateLingering
	c.armCloseTimeoutLocked()
	return false
}

// onDeadline runs an expired deadline: d, read by the engine's sweep from
// slot, the engine's store for c's deadline. It is called on the goroutine
// that reads c. The deadline is cleared under c.mu, so a Close racing with
// the sweep is seen either before (its close deadline replaced d: nothing
// fires) or after (the application's deadline fires while c is open). It
// reports whether the connection should be finished with info.
func (c *Conn) onDeadline(slot *atomic.Int64, d int64) (done bool, info CloseInfo) {
	c.mu.Lock()
	if !slot.CompareAndSwap(d, 0) {
		c.mu.Unlock()
		return false, CloseInfo{}
	}
	st := c.state
	if st == stateHandshake {
		c.reject = RejectTimeout
	}
	c.mu.Unlock()
	switch st {
	case stateHandshake, stateRejecting, stateLingering:
		return true, CloseInfo{}
	case stateOpen:
		c.callDeadline()
		return false, CloseInfo{}
	case stateClosing:
		return true, CloseInfo{Reason: CloseTimeout}
	}
	return false, CloseInfo{}
}

// finish closes the socket and reports the end once: OnClose for an opened
// connection, OnReject for one that failed its upgrade. fallback is the
// reason unless a closing handshake had set one. It must be called from the
// goroutine that reads c.
func (c *Conn) finish(fallback CloseInfo) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	info := fallback
	if c.closeReason != 0 { // a closing handshake had started: keep why
		info = CloseInfo{Reason: c.closeReason, Code: c.closeCode, Err: c.closeErr}
		if fallback.Reason == CloseTimeout {
			info.Reason = CloseTimeout
		}
	}
	if c.state == stateHandshake && c.reject == 0 {
		c.reject = RejectReset
	}
	opened, reject := c.opened, c.reject
	c.state = stateClosed
	c.dropOutboxLocked()
	c.eng.setDeadline(c, 0)
	c.eng.closeSocket(c)
	c.mu.Unlock()

	c.rd.release()
	c.sh.limits.release(c.remote, c.admitted())
	if opened {
		c.callClose(info)
	} else if reject != 0 && c.sh.cfg.OnReject != nil {
		c.sh.cfg.OnReject(reject)
	}
}

// shutdown starts closing for server shutdown: 1001 for an open
// connection; one still upgrading, or lingering after its response, is
// finished at once. Called from the goroutine that reads c.
func (c *Conn) shutdown() {
	c.mu.Lock()
	st := c.state
	switch st {
	case stateOpen:
		c.startCloseLocked(CloseInfo{Reason: CloseShutdown, Code: ws.StatusGoingAway}, closeFrame(ws.StatusGoingAway, "server shutdown"))
	case stateHandshake:
		c.reject = RejectShutdown
	}
	c.mu.Unlock()
	if st == stateHandshake || st == stateLingering {
		c.finish(CloseInfo{})
	}
}

// admitted reports whether c was counted by the connection caps.
func (c *Conn) admitted() bool { return c.rd.admitted }
