package poller

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// acceptor accepts connections on its own goroutine and hands them to
// dispatch. At the open-file limit (EMFILE, ENFILE) it stops watching the
// listener for a while, doubling the pause up to maxAcceptBackoff, instead
// of spinning on an accept that keeps failing.
type acceptor struct {
	lfd      int // static; closed by run on exit
	ep       int // static
	wake     int // static
	dispatch func(fd int, remote netip.AddrPort)
	log      *slog.Logger
	stopped  atomic.Bool

	// mu guards closed: run has exited and closed its fds, so stop must not
	// write to wake (the number may belong to another file by then).
	mu     sync.Mutex
	closed bool
}

const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

func newAcceptor(lfd int, dispatch func(int, netip.AddrPort), log *slog.Logger) (*acceptor, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, err
	}
	a := &acceptor{lfd: lfd, ep: ep, wake: wake, dispatch: dispatch, log: log}
	for _, fd := range []int{lfd, wake} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			unix.Close(ep)
			unix.Close(wake)
			return nil, err
		}
	}
	return a, nil
}

// stop makes run return and close the listener. Safe to call from any
// goroutine, once.
func (a *acceptor) stop() {
	a.stopped.Store(true)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		var one = [8]byte{1}
		unix.Write(a.wake, one[:])
	}
}

func (a *acceptor) run() {
	defer func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.closed = true
		unix.Close(a.lfd)
		unix.Close(a.ep)
		unix.Close(a.wake)
	}()
	events := make([]unix.EpollEvent, 4)
	var backoff time.Duration
	for !a.stopped.Load() {
		timeout := -1
		if backoff > 0 {
			timeout = int(backoff / time.Millisecond)
		}
		_, err := unix.EpollWait(a.ep, events, timeout)
		if err != nil && err != unix.EINTR {
			a.log.Error("accept epoll_wait failed", "err", err)
			return
		}
		if a.stopped.Load() {
			return
		}
		if backoff > 0 { // pause over (or cut short by a signal): watch again
			a.watch(true)
		}
		backoff = a.acceptAll(backoff)
		if backoff > 0 {
			a.watch(false)
		}
	}
}

// acceptAll accepts until the backlog is empty. It returns the pause to
// take before the next attempt: 0 unless out of file descriptors.
func (a *acceptor) acceptAll(backoff time.Duration) time.Duration {
	for {
		fd, sa, err := unix.Accept4(a.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			a.dispatch(fd, sockaddrToAddrPort(sa))
			backoff = 0
			continue
		case unix.EAGAIN:
			return 0
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			a.log.Warn("accept: out of resources, pausing", "err", err, "pause", backoff)
			return backoff
		default:
			a.log.Error("accept failed", "err", err)
			return minAcceptBackoff
		}
	}
}

// watch turns listening for new connections on or off.
func (a *acceptor) watch(on bool) {
	ev := unix.EpollEvent{Fd: int32(a.lfd)}
	if on {
		ev.Events = unix.EPOLLIN
	}
	unix.EpollCtl(a.ep, unix.EPOLL_CTL_MOD, a.lfd, &ev)
}
