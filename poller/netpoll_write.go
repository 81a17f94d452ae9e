package poller

import "time"

// The write retrier. netpoll offers no way to wait for writability without
// parking a goroutine in Flush, so connections whose outbox the kernel
// refused are retried by one goroutine per engine: first after
// writeRetryMin, then, while a retry makes no progress, at doubling
// intervals up to writeRetryMax. Send never waits: it only queues.
const (
	writeRetryMin = time.Millisecond
	writeRetryMax = 32 * time.Millisecond
)

// pendingWrite is a connection held by the write retrier.
type pendingWrite struct {
	w       *npConn
	at      time.Time     // next attempt
	delay   time.Duration // wait before the attempt after that
	written uint64        // w.written when last seen
}

// queueWrite hands w to the retrier. Called with w.c.mu held.
func (e *netpollEngine) queueWrite(w *npConn) {
	e.wmu.Lock()
	e.wq = append(e.wq, w)
	e.wmu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// writeLoop retries pending writes until stop is closed.
func (e *netpollEngine) writeLoop(stop <-chan struct{}) {
	var pending []pendingWrite
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-e.wake:
		case <-timer.C:
		}
		now := time.Now()
		pending = e.takeWrites(pending, now)
		keep := pending[:0]
		var next time.Time
		for _, p := range pending {
			if !now.Before(p.at) && !p.retry(now) {
				continue
			}
			keep = append(keep, p)
			if next.IsZero() || p.at.Before(next) {
				next = p.at
			}
		}
		clear(pending[len(keep):])
		pending = keep
		if len(pending) > 0 {
			timer.Reset(next.Sub(now))
		} else if cap(pending) > 1024 {
			pending = nil
		}
	}
}

// takeWrites moves the connections queued by wantWrite into pending.
func (e *netpollEngine) takeWrites(pending []pendingWrite, now time.Time) []pendingWrite {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	for _, w := range e.wq {
		pending = append(pending, pendingWrite{
			w: w, at: now.Add(writeRetryMin), delay: writeRetryMin, written: w.written.Load(),
		})
	}
	clear(e.wq)
	e.wq = e.wq[:0]
	return pending
}

// retry flushes the outbox unless a callback of the connection is running
// (that callback flushes it when it ends). It reports whether the
// connection still has bytes to write, and schedules the next attempt.
func (p *pendingWrite) retry(now time.Time) (keep bool) {
	w := p.w
	if w.wantW.Load() {
		if !w.mu.TryLock() {
			p.at = now.Add(writeRetryMin)
			return true
		}
		if w.c.onWritable() {
			w.c.finish(CloseInfo{})
		}
		w.mu.Unlock()
	}
	if !w.keepWriting() {
		return false
	}
	if n := w.written.Load(); n != p.written {
		p.written, p.delay = n, writeRetryMin
	} else {
		p.delay = min(2*p.delay, writeRetryMax)
	}
	p.at = now.Add(p.delay)
	return true
}
