package coalesce

import "time"

// Test hooks: they read state that production code has no use for.

// Get returns k's pending change. ok is false (and old and new are zero)
// when k has no change in this window.
func (c *Changes[K, V]) Get(k K) (old, new V, ok bool) {
	i, ok := c.index[k]
	if !ok {
		return old, new, false
	}
	ch := &c.changes[i]
	return ch.old, ch.new, true
}

// Pending is the number of keys marked for the next tick.
func (s *Scheduler[K]) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending.keys)
}

// tickNow runs one tick at now on the calling goroutine, the way Run's
// goroutine does. It is for a Scheduler of one worker (a tick then wakes
// no helper) whose Run is not running: ticks must not overlap.
func (s *Scheduler[K]) tickNow(now time.Time) {
	if s.workers != 1 {
		panic("coalesce: tickNow on a Scheduler of more than one worker")
	}
	s.runTick(now, nil)
}
