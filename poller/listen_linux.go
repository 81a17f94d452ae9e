package poller

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// listenTCP opens a non-blocking listening socket on addr.
func listenTCP(addr string) (fd int, bound netip.AddrPort, err error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return -1, bound, fmt.Errorf("poller: listen address %q: %w", addr, err)
	}
	ap := ta.AddrPort()
	family := unix.AF_INET
	var sa unix.Sockaddr
	if ap.Addr().Is4() || ap.Addr().Is4In6() || !ap.Addr().IsValid() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, bound, fmt.Errorf("poller: socket: %w", err)
	}
	if err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err == nil {
		err = unix.Bind(fd, sa)
	}
	if err == nil {
		err = unix.Listen(fd, 4096)
	}
	if err == nil {
		var got unix.Sockaddr
		if got, err = unix.Getsockname(fd); err == nil {
			bound = sockaddrToAddrPort(got)
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, bound, fmt.Errorf("poller: listen on %s: %w", addr, err)
	}
	return fd, bound, nil
}

func sockaddrToAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// fdLimit is the current soft limit on open files: the size of the
// fd-indexed tables.
func fdLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur > 1<<24 {
		return 1 << 20
	}
	return int(rl.Cur)
}
