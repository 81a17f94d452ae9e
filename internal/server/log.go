package server

import (
	"sync"
	"time"
)

// Attribute keys of the server's log records.
const (
	keyAddr       = "addr"
	keyAdminAddr  = "admin_addr"
	keyURL        = "url"
	keyEngine     = "engine"
	keyConn       = "conn"
	keyRemote     = "remote"
	keyReason     = "reason"
	keyCode       = "code"
	keyTransport  = "transport"
	keyErr        = "err"
	keySuppressed = "suppressed"
	keyNode       = "node"
	keyConns      = "conns"
	keyWindow     = "window"
	keyMembers    = "members"
	keyWait       = "wait"
	keyUser       = "user"
	keyClosed     = "closed"
	keyDraining   = "draining"
	keyHeldEnded  = "held_ended"
	keyEndpoint   = "endpoint"
	keyStatus     = "status"
)

// logLimiter lets at most max records through per second, so that a flood
// of connections cannot flood the log. Safe for concurrent use.
type logLimiter struct {
	max int // static after construction

	mu         sync.Mutex
	window     time.Time // guarded by mu: start of the current second
	n          int       // guarded by mu: records let through in window
	suppressed int       // guarded by mu: records refused since the last one let through
}

// allow reports whether a record may be logged now and how many were
// refused since the previous one that was allowed.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= l.max {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
