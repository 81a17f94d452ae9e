package poller

import "sync/atomic"

// dueBlock is the number of consecutive fds one entry of a dueIndex covers.
const dueBlock = 16

// dueIndex lets a loop's sweep skip the parts of the fd-indexed deadline
// table where nothing of its own is due, so that a sweep costs about the
// deadlines that fire rather than every connection: with 15,000 idle
// connections pinged every 25 s, a 100 ms tick fires about 60 of them.
//
// min[b] is 0 or a lower bound of the deadlines of the loop's connections
// (and maybe of other loops') whose fd is in block b (fds b*dueBlock to (b+1)*dueBlock-1): every such
// connection with a non-zero deadline d has min[b] != 0 and min[b] <= d.
// Setters keep it so by storing the deadline first, then lowering min[b]
// (lower); the sweep resets min[b] to 0 before it scans the block and
// lowers it again with each deadline it leaves pending, so a deadline set
// while the block is scanned is seen by the scan or lowers min[b] itself.
// The entries are safe for concurrent use; only the loop's sweep raises
// them.
type dueIndex struct {
	min []atomic.Int64 // unix nanoseconds; 0 = nothing pending in the block
}

func newDueIndex(fds int) dueIndex {
	return dueIndex{min: make([]atomic.Int64, (fds+dueBlock-1)/dueBlock)}
}

// lower records a deadline d (non-zero) stored for fd.
func (x *dueIndex) lower(fd int, d int64) {
	b := &x.min[fd/dueBlock]
	for {
		old := b.Load()
		if old != 0 && old <= d {
			return
		}
		if b.CompareAndSwap(old, d) {
			return
		}
	}
}

// sweep fires the deadlines of this loop's connections that have passed,
// scanning only the blocks of the table whose lower bound has passed.
func (l *loop) sweep(now int64) {
	high := int(l.e.fdHigh.Load())
	dl := l.e.deadlines
	for b, first := 0, 0; first < high; b, first = b+1, first+dueBlock {
		bound := &l.due.min[b]
		if m := bound.Load(); m == 0 || m > now {
			continue
		}
		bound.Store(0)
		// The whole block, past high too: a connection accepted since
		// high was read may have stored its deadline in this block and
		// found the bound already due (lower left it), and the Store
		// above has just erased that bound.
		for fd := first; fd < min(len(dl), first+dueBlock); fd++ {
			d := dl[fd].Load()
			if d == 0 {
				continue
			}
			if d > now {
				// Possibly another loop's: a lower bound may be too low,
				// and looking the owner up would cost a cache miss per
				// connection.
				l.due.lower(fd, d)
				continue
			}
			c := l.e.conns[fd].Load()
			if c == nil || c.eng != connEngine(l) {
				continue
			}
			if done, info := c.deadlineBatch(&dl[fd], d); done {
				c.finish(info)
			}
		}
	}
}
