package poller

// The netpoll engine: sockets are read by github.com/cloudwego/netpoll's
// pollers and handed to the shared RFC 6455 code from OnRequest; writes go
// straight to the non-blocking fd.
//
// Goroutines. The engine owns three, started by run and joined before it
// returns: the acceptor (accept_linux.go), the deadline sweep and the write
// retrier. netpoll runs OnRequest and its close callbacks on goroutines of
// its own (a gopool worker, a short-lived hang-up goroutine) and keeps its
// poller goroutines for the life of the process.
//
// Serialization. Handler calls for one connection never overlap: every call
// into the shared code that may reach the handler (feed, onDeadline,
// onWritable followed by finish, finish) is made with npConn.mu held.
//
// Lock order: npConn.mu, then Conn.mu, then netpollEngine.mu or
// netpollEngine.wmu. The handler is called with npConn.mu held only.
//
// Why not netpoll's EventLoop and CreateListener. The engine accepts with
// the same acceptor as the epoll engine and wraps each socket with
// netpoll.NewFDConnection, because in netpoll v0.7.2:
//   - the listener returned by CreateListener closes its dup'ed fd twice
//     (syscall.Close, then os.File.Close), which can close an unrelated fd
//     that reused the number in between;
//   - at the open-file limit its server starts an untracked goroutine that
//     retries accept until the listener yields EAGAIN: once the listener is
//     closed it gets EBADF and loops forever;
//   - EventLoop.Shutdown closes idle connections without a close frame, so
//     it cannot stop accepting while keeping connections open.
// The acceptor pauses on EMFILE and stops on request, both joined by run.

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// netpollSettings are the process-wide netpoll settings of this engine.
type netpollSettings struct {
	// bufferSize is the first input buffer of a connection (netpoll's
	// default is 8 KiB).
	bufferSize int
	// linkBufferCap is the smallest node netpoll allocates when a buffer
	// grows (default 4 KiB).
	linkBufferCap int
}

// apply sets s in netpoll's package variables. It must run before netpoll
// starts a poller or makes a connection.
func (s netpollSettings) apply() error {
	netpoll.LinkBufferCap = s.linkBufferCap
	return netpoll.Configure(netpoll.Config{BufferSize: s.bufferSize})
}

// configureNetpoll applies the engine's netpoll settings once per process.
//
// It is the one piece of mutable package state in poller, and deliberately
// so: netpoll.Configure and netpoll.LinkBufferCap are process-global and
// netpoll reads them from its own goroutines without synchronization.
// Setting them again while another Server's connections are live would be a
// data race; sync.Once makes the first engine write them and orders that
// write before every later engine. Other code in the process must not call
// netpoll.Configure.
var configureNetpoll = sync.OnceValue(func() error {
	return netpollSettings{bufferSize: 1024, linkBufferCap: 1024}.apply()
})

// netpollEngine serves connections read by netpoll.
type netpollEngine struct {
	sh       *shared        // static
	bound    netip.AddrPort // static
	acceptor *acceptor      // static
	stopOnce sync.Once

	// mu guards conns: every connection between accept and closeSocket,
	// each at the index it stores in npConn.idx.
	mu    sync.Mutex
	conns []*npConn

	// wmu guards wq: connections handed to the write retrier and not yet
	// taken by it.
	wmu  sync.Mutex
	wq   []*npConn
	wake chan struct{} // static; capacity 1: wq has entries
}

var _ engine = (*netpollEngine)(nil)

func newNetpollEngine(sh *shared) (*netpollEngine, error) {
	if err := configureNetpoll(); err != nil {
		return nil, err
	}
	lfd, bound, err := listenTCP(sh.cfg.Addr)
	if err != nil {
		return nil, err
	}
	e := &netpollEngine{sh: sh, bound: bound, wake: make(chan struct{}, 1)}
	e.acceptor, err = newAcceptor(lfd, e.dispatch, sh.cfg.Logger)
	if err != nil {
		unix.Close(lfd)
		return nil, err
	}
	return e, nil
}

func (e *netpollEngine) addr() netip.AddrPort { return e.bound }

func (e *netpollEngine) stopAccepting() { e.stopOnce.Do(e.acceptor.stop) }

func (e *netpollEngine) run(ctx context.Context) error {
	var acc, wg sync.WaitGroup
	stop := make(chan struct{})
	acc.Go(e.acceptor.run)
	wg.Go(func() { e.sweepLoop(stop) })
	wg.Go(func() { e.writeLoop(stop) })
	<-ctx.Done()
	e.stopAccepting()
	acc.Wait() // no connection is added after this
	e.drain()
	close(stop)
	wg.Wait()
	return nil
}

// dispatch wraps an accepted socket in a netpoll connection. It runs on the
// accept goroutine.
func (e *netpollEngine) dispatch(fd int, remote netip.AddrPort) {
	w := &npConn{e: e, idx: -1}
	w.c = e.sh.newConn(fd, remote, w)
	w.deadline.Store(nowNano() + int64(e.sh.cfg.HandshakeTimeout))
	nc, err := netpoll.NewFDConnection(fd) // registered: reads start now
	if err != nil {
		// netpoll has closed fd.
		e.sh.limits.release(remote, w.c.admitted())
		e.sh.cfg.Logger.Warn("netpoll: registering a connection failed", "err", err)
		return
	}
	w.nc = nc
	// The close callback goes first: netpoll runs close callbacks only for
	// connections that have an OnRequest.
	nc.AddCloseCallback(w.onNetpollClose)
	e.add(w)
	nc.SetOnRequest(w.onRequest)
	// A peer that hung up before SetOnRequest, sending nothing, gets no
	// callback at all from netpoll. With input buffered, OnRequest runs and
	// the close callback follows it.
	if !nc.IsActive() && nc.Reader().Len() == 0 {
		w.peerGone()
	}
}

func (e *netpollEngine) add(w *npConn) {
	e.mu.Lock()
	w.idx = len(e.conns)
	e.conns = append(e.conns, w)
	e.mu.Unlock()
}

func (e *netpollEngine) remove(w *npConn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := w.idx
	if i < 0 {
		return
	}
	last := len(e.conns) - 1
	e.conns[i] = e.conns[last]
	e.conns[i].idx = i
	e.conns[last] = nil
	e.conns = e.conns[:last]
	w.idx = -1
	if cap(e.conns) > 1024 && len(e.conns) < cap(e.conns)/4 {
		e.conns = append([]*npConn(nil), e.conns...)
	}
}

// snapshot appends the open connections to dst.
func (e *netpollEngine) snapshot(dst []*npConn) []*npConn {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append(dst, e.conns...)
}

func (e *netpollEngine) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns)
}

// sweepLoop fires deadlines every Config.Tick until stop is closed.
func (e *netpollEngine) sweepLoop(stop <-chan struct{}) {
	t := time.NewTicker(e.sh.cfg.Tick)
	defer t.Stop()
	var due []*npConn
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			due = e.sweep(now.UnixNano(), due)
		}
	}
}

// sweep fires the deadlines that have passed. due is scratch space, returned
// for reuse.
func (e *netpollEngine) sweep(now int64, due []*npConn) []*npConn {
	e.mu.Lock()
	for _, w := range e.conns {
		if d := w.deadline.Load(); d != 0 && d <= now {
			due = append(due, w)
		}
	}
	e.mu.Unlock()
	for _, w := range due {
		w.fireDeadline(now)
	}
	clear(due)
	return due[:0]
}

// drain closes every connection for shutdown: open ones get 1001 and up to
// CloseTimeout to answer, the rest are finished at once or then.
func (e *netpollEngine) drain() {
	conns := e.snapshot(nil)
	for _, w := range conns {
		w.shutdown()
	}
	clear(conns)
	limit := time.Now().Add(e.sh.cfg.CloseTimeout)
	poll := time.NewTicker(min(e.sh.cfg.Tick, 10*time.Millisecond))
	for e.count() > 0 && time.Now().Before(limit) {
		<-poll.C
	}
	poll.Stop()
	for _, w := range e.snapshot(conns[:0]) {
		w.mu.Lock()
		w.c.finish(CloseInfo{Reason: CloseShutdown, Code: ws.StatusGoingAway})
		w.mu.Unlock()
	}
}
