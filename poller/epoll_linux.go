package poller

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// epollEngine is the default engine: one accept goroutine and Config.Loops
// event loops, each with its own epoll instance. Connections hold no
// goroutine and, when idle, no buffer: their state lives in fd-indexed
// tables and a small Conn.
type epollEngine struct {
	sh    *shared        // static
	lfd   int            // listening socket; owned by the accept goroutine once run starts
	bound netip.AddrPort // static
	loops []*loop        // static

	// conns and deadlines are indexed by fd. An entry is written by the
	// accept goroutine when the fd is accepted and cleared by the owning
	// loop before the fd is closed.
	conns     []atomic.Pointer[Conn]
	deadlines []atomic.Int64 // unix nanoseconds; 0 = none
	// fdHigh is one more than the highest fd ever dispatched: sweeps and
	// scans stop there instead of at the open-file limit. The kernel hands
	// out the lowest free fd, so it follows the peak connection count.
	fdHigh atomic.Int64

	warnedFD atomic.Bool // the fd-beyond-table warning was logged
	acceptor *acceptor
	stopOnce sync.Once
	nextLoop atomic.Uint32
}

var _ connEngine = (*loop)(nil)

func newEpollEngine(sh *shared) (*epollEngine, error) {
	lfd, bound, err := listenTCP(sh.cfg.Addr)
	if err != nil {
		return nil, err
	}
	n := fdLimit()
	e := &epollEngine{
		sh: sh, lfd: lfd, bound: bound,
		conns:     make([]atomic.Pointer[Conn], n),
		deadlines: make([]atomic.Int64, n),
	}
	for i := 0; i < sh.cfg.Loops; i++ {
		l, err := newLoop(e)
		if err != nil {
			e.closeFDs()
			return nil, err
		}
		e.loops = append(e.loops, l)
	}
	e.acceptor, err = newAcceptor(lfd, e.dispatch, sh.cfg.Logger)
	if err != nil {
		e.closeFDs()
		return nil, err
	}
	return e, nil
}

func (e *epollEngine) addr() netip.AddrPort { return e.bound }

func (e *epollEngine) run(ctx context.Context) error {
	var acc, wg sync.WaitGroup
	acc.Go(e.acceptor.run)
	for _, l := range e.loops {
		wg.Go(l.run)
	}
	<-ctx.Done()
	e.stopAccepting()
	acc.Wait() // no socket is dispatched to a loop after this
	for _, l := range e.loops {
		l.quit.Store(true)
		l.wakeUp()
	}
	wg.Wait()
	e.closeFDs()
	return nil
}

func (e *epollEngine) stopAccepting() {
	e.stopOnce.Do(e.acceptor.stop)
}

func (e *epollEngine) closeFDs() {
	for _, l := range e.loops {
		l.park.Close() // closes l.ep
		unix.Close(l.wake)
	}
	if e.acceptor == nil {
		unix.Close(e.lfd)
	}
}

// dispatch hands an accepted socket to a loop, round robin. It runs on the
// accept goroutine.
func (e *epollEngine) dispatch(fd int, remote netip.AddrPort) {
	if fd >= len(e.conns) { // the open-file limit was raised after New
		unix.Close(fd)
		if !e.warnedFD.Swap(true) {
			e.sh.cfg.Logger.Warn("poller: fd beyond the table sized at start; raise the open-file limit before starting", "fd", fd, "table", len(e.conns))
		}
		if e.sh.cfg.OnReject != nil {
			e.sh.cfg.OnReject(RejectCapacity)
		}
		return
	}
	for high := e.fdHigh.Load(); int64(fd) >= high && !e.fdHigh.CompareAndSwap(high, int64(fd)+1); high = e.fdHigh.Load() {
	}
	l := e.loops[int(e.nextLoop.Add(1))%len(e.loops)]
	c := e.sh.newConn(fd, remote, l)
	e.conns[fd].Store(c)
	l.setDeadline(c, nowNano()+int64(e.sh.cfg.HandshakeTimeout))
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		e.conns[fd].Store(nil)
		e.deadlines[fd].Store(0)
		unix.Close(fd)
		e.sh.limits.release(remote, c.rd.admitted)
	}
}

// loop is one event loop. Everything not marked otherwise is owned by its
// goroutine.
type loop struct {
	e       *epollEngine
	ep      int     // epoll instance; static
	park    *parker // waits for ep's events in the Go netpoller (see epollpark_linux.go)
	wake    int     // eventfd that interrupts the wait; static
	quit    atomic.Bool
	due     dueIndex     // which blocks of the deadline table the sweep scans; safe for concurrent use
	scratch []byte       // the read buffer, lent to whichever connection is read
	iov     []unix.Iovec // writev's scratch
}

func newLoop(e *epollEngine) (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, err
	}
	park, err := newParker(ep, 256) // owns ep from here on
	if err != nil {
		unix.Close(wake)
		return nil, err
	}
	return &loop{
		e: e, ep: ep, park: park, wake: wake,
		due:     newDueIndex(len(e.deadlines)),
		scratch: make([]byte, 64<<10),
	}, nil
}

func (l *loop) wakeUp() {
	var one = [8]byte{1}
	unix.Write(l.wake, one[:])
}

func (l *loop) run() {
	tick := l.e.sh.cfg.Tick
	next := time.Now().Add(tick)
	var draining time.Time // when shutdown started
	for {
		events, err := l.park.wait(next)
		if err != nil { // EBADF, EINVAL: the loop cannot go on
			l.e.sh.cfg.Logger.Error("poller: epoll_wait failed; closing the loop's connections", "err", err)
			l.forEach(func(c *Conn) { c.finish(CloseInfo{Reason: CloseShutdown, Code: ws.StatusGoingAway, Err: err}) })
			return
		}
		for _, ev := range events {
			l.event(ev)
		}
		if now := time.Now(); !now.Before(next) {
			next = now.Add(tick)
			l.sweep(now.UnixNano())
		}
		if l.quit.Load() {
			if draining.IsZero() {
				draining = time.Now()
				l.forEach((*Conn).shutdown)
			}
			if l.count() == 0 || time.Since(draining) > l.e.sh.cfg.CloseTimeout {
				l.forEach(func(c *Conn) { c.finish(CloseInfo{Reason: CloseShutdown, Code: ws.StatusGoingAway}) })
				return
			}
		}
	}
}

func (l *loop) event(ev unix.EpollEvent) {
	fd := int(ev.Fd)
	if fd == l.wake {
		var buf [8]byte
		rawRead(l.wake, buf[:])
		return
	}
	c := l.e.conns[fd].Load()
	if c == nil || c.eng != connEngine(l) {
		return
	}
	switch {
	case c.rd.held:
		// Reading is paused (no EPOLLIN or EPOLLRDHUP in the interest set),
		// but epoll always reports a reset or an error: the peer is gone.
		if ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.finish(CloseInfo{Reason: CloseReset})
			return
		}
	case ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0:
		if l.read(c) {
			return
		}
	}
	if ev.Events&unix.EPOLLOUT != 0 && c.onWritable() {
		c.finish(CloseInfo{})
	}
}

// read drains the socket into the scratch buffer and feeds the connection.
// It reports whether the connection was finished.
func (l *loop) read(c *Conn) (finished bool) {
	for range 4 { // bounded: other connections get their turn
		n, err := rawRead(c.fd, l.scratch)
		switch {
		case n > 0:
			if c.feed(l.scratch[:n]) {
				c.finish(CloseInfo{})
				return true
			}
			if n < len(l.scratch) || c.rd.held { // held: stop reading until onWritable resumes
				return false
			}
		case n == 0:
			c.finish(CloseInfo{Reason: CloseReset})
			return true
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
		default:
			c.finish(CloseInfo{Reason: CloseReset, Err: err})
			return true
		}
	}
	return false
}

func (l *loop) forEach(fn func(*Conn)) {
	conns := l.e.conns[:l.e.fdHigh.Load()]
	for fd := range conns {
		if c := conns[fd].Load(); c != nil && c.eng == connEngine(l) {
			fn(c)
		}
	}
}

func (l *loop) count() (n int) {
	l.forEach(func(*Conn) { n++ })
	return n
}

// connEngine, called by the shared connection code.

// write may be called from any goroutine (a Send outside a callback).
func (l *loop) write(c *Conn, p []byte) (int, error) { return rawWrite(c.fd, p) }

// writev is only called on the loop goroutine (flushLocked from endBatch
// and onWritable), so it may use the loop's iovec scratch.
func (l *loop) writev(c *Conn, bufs [][]byte) (n int, err error) {
	n, l.iov, err = rawWritev(c.fd, bufs, l.iov)
	return n, err
}

func (l *loop) wantWrite(c *Conn, on bool) { l.interest(c, !c.readPaused, on) }

func (l *loop) pauseRead(c *Conn, on bool) { l.interest(c, !on, c.writeArmed) }

// interest sets the events epoll reports for c. Epoll is level-triggered:
// a paused connection drops EPOLLIN and EPOLLRDHUP, or a readable socket
// (or a peer's FIN) would be reported again at every epoll_wait.
func (l *loop) interest(c *Conn, read, write bool) {
	var ev unix.EpollEvent
	ev.Fd = int32(c.fd)
	if read {
		ev.Events = unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if write {
		ev.Events |= unix.EPOLLOUT
	}
	rawEpollCtl(l.ep, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// setDeadline may be called from any goroutine (with c.mu held, or by
// dispatch before the loop knows c).
func (l *loop) setDeadline(c *Conn, unixNano int64) {
	l.e.deadlines[c.fd].Store(unixNano)
	if unixNano != 0 {
		l.due.lower(c.fd, unixNano)
	}
}

func (l *loop) shutdownWrite(c *Conn) error { return unix.Shutdown(c.fd, unix.SHUT_WR) }

func (l *loop) closeSocket(c *Conn) {
	l.e.conns[c.fd].CompareAndSwap(c, nil)
	l.e.deadlines[c.fd].Store(0)
	unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd)
}
