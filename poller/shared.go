package poller

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// shared is the state every engine needs: configuration, the handler, the
// upgrader, the connection caps and id counter.
type shared struct {
	cfg      Config      // static after construction
	handler  Handler     // static after construction
	upgrader ws.Upgrader // static after construction
	pages    pages       // Config.Pages; static after construction
	limits   limits
	ids      atomic.Uint64
	panics   panicLog
	outboxes sync.Pool // *outbox: the storage of outboxes that hold frames

	// maxBacklog bounds the input kept for a paused connection by an engine
	// that cannot stop reading (netpoll); static after construction.
	maxBacklog int
}

func newShared(cfg Config, h Handler) *shared {
	return &shared{
		cfg:      cfg,
		handler:  h,
		upgrader: newUpgrader(cfg),
		limits:   limits{maxTotal: int64(cfg.MaxConns), maxPerIP: int32(cfg.MaxConnsPerIP)},
		// Room for a burst of small commands and for two whole messages.
		maxBacklog: max(64<<10, 2*cfg.MaxMessage),
	}
}

// newConn makes the connection for an accepted socket and applies the
// caps: a connection over a cap is kept only to answer its request with 503.
func (sh *shared) newConn(fd int, remote netip.AddrPort, eng connEngine) *Conn {
	c := &Conn{id: sh.ids.Add(1), fd: fd, remote: remote, sh: sh, eng: eng}
	r := sh.limits.admit(remote.Addr())
	c.rd.admitted = r == 0
	c.reject = r
	return c
}

// limits counts connections against Config.MaxConns and MaxConnsPerIP.
type limits struct {
	maxTotal int64 // static; 0 = none
	maxPerIP int32 // static; 0 = none
	total    atomic.Int64

	mu    sync.Mutex
	perIP map[netip.Addr]int32 // guarded by mu; only with maxPerIP
}

// admit counts a new connection, or returns why it is over a cap.
func (l *limits) admit(ip netip.Addr) RejectReason {
	if n := l.total.Add(1); l.maxTotal > 0 && n > l.maxTotal {
		l.total.Add(-1)
		return RejectCapacity
	}
	if l.maxPerIP == 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[ip] >= l.maxPerIP {
		l.total.Add(-1)
		return RejectPerIP
	}
	if l.perIP == nil {
		l.perIP = make(map[netip.Addr]int32)
	}
	l.perIP[ip]++
	return 0
}

func (l *limits) release(remote netip.AddrPort, admitted bool) {
	if !admitted {
		return
	}
	l.total.Add(-1)
	if l.maxPerIP == 0 {
		return
	}
	ip := remote.Addr()
	l.mu.Lock()
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
	l.mu.Unlock()
}

func nowNano() int64 { return time.Now().UnixNano() }
