package poller

import (
	"sync/atomic"
	"testing"
)

// TestSweepKeepsDeadlineBeyondHigh: a connection accepted while a sweep
// runs, its fd at or past the fdHigh the sweep read but in a block the
// sweep resets, keeps its deadline in the index (found by review: the
// sweep stopped at high, erased the block's bound, and the new
// connection's handshake deadline never fired).
func TestSweepKeepsDeadlineBeyondHigh(t *testing.T) {
	e := &epollEngine{conns: make([]atomic.Pointer[Conn], 64), deadlines: make([]atomic.Int64, 64)}
	l := &loop{e: e, due: newDueIndex(64)}
	const now = int64(1_000_000)
	e.fdHigh.Store(20) // what the sweep reads
	e.deadlines[18].Store(now - 10)
	l.due.lower(18, now-10) // block 1 is due
	hs := now + 5_000
	e.deadlines[25].Store(hs) // dispatched after the sweep read fdHigh
	l.due.lower(25, hs)       // the bound is already lower: nothing stored
	l.sweep(now)
	e.fdHigh.Store(26)
	if m := l.due.min[1].Load(); m == 0 || m > hs {
		t.Fatalf("block 1 bound %d after the sweep; fd 25's deadline %d is pending", m, hs)
	}
}
