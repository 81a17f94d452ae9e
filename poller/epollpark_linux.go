package poller

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Why the epoll loops do not block in epoll_wait, and why their socket
// syscalls are raw.
//
// A goroutine that blocks in a syscall keeps the Go scheduler's monitor
// (sysmon) awake: every syscall entered through syscall.Syscall wakes it
// from its deep sleep, and a syscall that blocks more than 10 ms has its P
// retaken, after which sysmon polls every 20 µs for a millisecond before it
// slows down. For an idle server, whose loops wake a few hundred times a
// second (a pong, a tick), that monitor cost a third of the process's CPU.
//
// So a loop parks in the Go runtime's netpoller instead: its epoll
// instance is itself pollable, registered with the runtime as an os.File,
// and the loop waits for it to become readable (rawConn.Read) with the
// next tick as the file's read deadline. The loop then collects its events
// with a non-blocking epoll_wait. While every loop is parked the process
// has no P in a syscall and sysmon sleeps until the next timer. The reads,
// writes and epoll_waits on the loop's sockets never block (the sockets are
// non-blocking, the timeout is 0), so they are made with RawSyscall, which
// skips the scheduler's syscall bookkeeping and never wakes sysmon.

// parker parks a loop until its epoll instance has events or a deadline
// passes. Owned by the loop goroutine.
type parker struct {
	ep     int
	file   *os.File // ep, registered with the runtime's netpoller
	rc     syscall.RawConn
	until  time.Time         // the read deadline set on file
	events []unix.EpollEvent // filled by poll
	n      int               // events poll found
	err    error             // poll's error, if any
	pollFn func(uintptr) bool
}

// newParker takes ownership of the epoll instance ep: Close closes it, and
// so does newParker when it fails.
func newParker(ep int, events int) (*parker, error) {
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, err
	}
	p := &parker{ep: ep, events: make([]unix.EpollEvent, events)}
	p.file = os.NewFile(uintptr(ep), "epoll")
	// A file the runtime could not register takes no deadline.
	if err := p.file.SetReadDeadline(time.Time{}); err != nil {
		p.file.Close()
		return nil, fmt.Errorf("poller: the Go netpoller cannot watch an epoll instance: %w", err)
	}
	rc, err := p.file.SyscallConn()
	if err != nil {
		p.file.Close()
		return nil, err
	}
	p.rc = rc
	p.pollFn = p.poll // one method value, made once: wait allocates nothing
	return p, nil
}

// wait parks until events are ready or until passes, and returns the
// events (possibly none). It never blocks the thread.
func (p *parker) wait(until time.Time) ([]unix.EpollEvent, error) {
	if !until.Equal(p.until) {
		p.file.SetReadDeadline(until)
		p.until = until
	}
	p.n, p.err = 0, nil
	if err := p.rc.Read(p.pollFn); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, err
	}
	return p.events[:p.n], p.err
}

// poll collects the ready events without blocking. It reports whether the
// wait is over: events were found, or epoll_wait failed.
func (p *parker) poll(uintptr) bool {
	n, err := epollWaitNow(p.ep, p.events)
	switch {
	case n > 0:
		p.n = n
		return true
	case err == nil || err == unix.EAGAIN:
		return false // nothing ready: park until the epoll fd is readable
	case err == unix.EINTR:
		return true // an empty turn of the loop, then poll again
	}
	p.err = err
	return true
}

// Close closes the epoll instance.
func (p *parker) Close() error { return p.file.Close() }

// epollWaitNow is epoll_wait with a zero timeout, as a raw syscall.
func epollWaitNow(ep int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(ep),
		uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// rawRead reads a non-blocking fd without the scheduler's syscall
// bookkeeping.
func rawRead(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// rawWrite writes to a non-blocking fd without the scheduler's syscall
// bookkeeping.
func rawWrite(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// rawWritev writes bufs to a non-blocking fd, using iov as scratch for
// the iovecs; it returns iov for reuse.
func rawWritev(fd int, bufs [][]byte, iov []unix.Iovec) (int, []unix.Iovec, error) {
	iov = iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: unsafe.SliceData(b)}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	if len(iov) == 0 {
		return 0, iov, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(iov))), uintptr(len(iov)))
	clear(iov) // drop the references to the frames
	if e != 0 {
		return 0, iov, e
	}
	return int(r), iov, nil
}

// rawEpollCtl is epoll_ctl as a raw syscall (it never blocks).
func rawEpollCtl(ep, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
