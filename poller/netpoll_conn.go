package poller

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"
)

// npConn is the netpoll engine's side of one connection and that
// connection's connEngine. It holds no goroutine and no buffer of its own.
type npConn struct {
	e  *netpollEngine     // static
	c  *Conn              // static after dispatch
	nc netpoll.Connection // static after dispatch

	// mu is held for every call into the shared code that may reach the
	// handler, so that those calls never overlap: OnRequest (a netpoll pool
	// goroutine), the deadline sweep, the write retrier, netpoll's close
	// callback and shutdown.
	mu sync.Mutex

	idx int // index in e.conns; -1 when not there. Guarded by e.mu.

	deadline atomic.Int64 // unix nanoseconds; 0 = none

	// closed is set by closeSocket, with c.mu held, before it closes the
	// netpoll connection. From then on netpoll may close the fd at any time
	// (and the number may be reused), so writev refuses to write.
	closed atomic.Bool

	wantW    atomic.Bool   // the outbox holds bytes the kernel refused
	inWriter atomic.Bool   // queued in e.wq or held by the write retrier
	written  atomic.Uint64 // bytes the kernel took; the retrier's progress gauge
}

var _ connEngine = (*npConn)(nil)

// onRequest is netpoll's OnRequest. netpoll never runs two at once for a
// connection, and calls it again while input remains, so it consumes
// everything buffered and never waits for more: an incomplete frame or
// request is kept by the shared reader.
func (w *npConn) onRequest(_ context.Context, nc netpoll.Connection) error {
	r := nc.Reader()
	n := r.Len()
	if n == 0 {
		return nil
	}
	in, err := r.Peek(n) // n bytes are buffered: Peek does not wait
	w.mu.Lock()
	defer w.mu.Unlock() // handler panics are recovered below us; a poller bug's is by gopool
	var done bool
	var info CloseInfo
	if err != nil {
		done, info = true, CloseInfo{Reason: CloseReset, Err: err}
	} else {
		done = w.c.feed(in)
	}
	r.Skip(n)
	r.Release()
	if done {
		w.c.finish(info)
	}
	return nil
}

// onNetpollClose is the connection's close callback: netpoll calls it once,
// before it closes the fd, after the peer hung up or closeSocket closed the
// connection.
func (w *npConn) onNetpollClose(netpoll.Connection) error {
	if !w.closed.Load() { // the peer hung up or the socket failed
		w.peerGone()
	}
	return nil
}

// peerGone finishes the connection after the peer closed it.
func (w *npConn) peerGone() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c.finish(CloseInfo{Reason: CloseReset})
}

// fireDeadline runs w's deadline if it has passed at now.
func (w *npConn) fireDeadline(now int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.deadline.Load()
	if d == 0 || d > now {
		return
	}
	if done, info := w.c.deadlineBatch(&w.deadline, d); done {
		w.c.finish(info)
	}
}

// shutdown starts closing w for server shutdown.
func (w *npConn) shutdown() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c.shutdown()
}

// keepWriting reports whether the write retrier should keep w. When it
// should not, w leaves the retrier unless a concurrent wantWrite needs it
// back and finds it still there.
func (w *npConn) keepWriting() bool {
	if w.wantW.Load() {
		return true
	}
	w.inWriter.Store(false)
	// wantWrite may have set wantW after the load above and seen inWriter
	// still set: then w stays, unless wantWrite has queued it again since.
	return w.wantW.Load() && w.inWriter.CompareAndSwap(false, true)
}

// connEngine, called by the shared connection code with c.mu held.

// write and writev write on the raw, non-blocking fd. netpoll's Writer is never used
// for this connection, so the outbox order is the only order.
func (w *npConn) write(c *Conn, p []byte) (int, error) {
	if w.closed.Load() {
		return 0, unix.EPIPE
	}
	n, err := unix.Write(c.fd, p)
	if err != nil {
		return 0, err
	}
	w.written.Add(uint64(n))
	return n, nil
}

func (w *npConn) writev(c *Conn, bufs [][]byte) (int, error) {
	if w.closed.Load() {
		return 0, unix.EPIPE
	}
	n, err := unix.Writev(c.fd, bufs)
	if err != nil {
		return 0, err
	}
	w.written.Add(uint64(n))
	return n, nil
}

// wantWrite hands w to the write retrier, which calls onWritable until the
// outbox is empty.
func (w *npConn) wantWrite(_ *Conn, on bool) {
	w.wantW.Store(on)
	if on && w.inWriter.CompareAndSwap(false, true) {
		w.e.queueWrite(w)
	}
}

// pauseRead does nothing: netpoll reads whatever arrives and OnRequest
// must consume it, so the shared reader keeps input of a paused connection
// itself (bounded by shared.maxBacklog). It resumes from the write retrier.
func (w *npConn) pauseRead(*Conn, bool) {}

func (w *npConn) setDeadline(_ *Conn, unixNano int64) { w.deadline.Store(unixNano) }

// shutdownWrite shuts the fd down for writing; netpoll goes on reading it
// and calls the close callback at the peer's EOF.
func (w *npConn) shutdownWrite(c *Conn) error {
	if w.closed.Load() {
		return unix.EPIPE
	}
	return unix.Shutdown(c.fd, unix.SHUT_WR)
}

// closeSocket closes the netpoll connection. netpoll closes the fd once no
// OnRequest of the connection is running.
func (w *npConn) closeSocket(*Conn) {
	w.closed.Store(true)
	w.wantW.Store(false)
	w.deadline.Store(0)
	w.e.remove(w)
	w.nc.Close()
}
