package coalesce

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ErrRunTwice is returned by a second call of Scheduler.Run.
var ErrRunTwice = errors.New("coalesce: Scheduler.Run called more than once")

// SchedulerConfig configures a Scheduler. The zero value works.
type SchedulerConfig struct {
	// Tick is how often marked keys are flushed. Zero or negative means
	// the default, 100 ms.
	Tick time.Duration
	// Workers is the number of goroutines flushing in parallel during a
	// tick, counting the goroutine that calls Run. Zero or negative means
	// the default, runtime.GOMAXPROCS(0) at NewScheduler.
	Workers int
}

// defaultTick is the Tick of a zero SchedulerConfig.
const defaultTick = 100 * time.Millisecond

// Scheduler calls a flush function for marked keys once per tick, on a
// bounded number of goroutines, not one per key.
//
// Mark is safe for concurrent use. Ticks never overlap: Run runs them one
// after the other.
type Scheduler[K comparable] struct {
	tick    time.Duration                   // static after construction
	workers int                             // static after construction, ≥ 1
	flush   func(K, time.Time) (again bool) // static after construction

	ran atomic.Bool // set by the first Run

	// Owned by the goroutine running Run, which runs the ticks.
	spare keySet[K] // empty between ticks, swapped in as the next pending set
	batch batch[K]  // helpers read it between their receive from work and batch.wg.Done

	mu      sync.Mutex
	pending keySet[K] // guarded by mu: keys marked for the next tick
}

// NewScheduler returns a Scheduler that calls flush(k, now) once per tick
// for each key marked since the previous tick. If flush returns true the
// key stays marked for the next tick (e.g. it has timers pending). flush
// must not block for long; it may call Mark (for any key, including k): a
// Mark of k during its own flush makes it flushed again next tick. A panic
// in flush is not recovered: it crashes the program.
//
// NewScheduler panics if flush is nil.
func NewScheduler[K comparable](cfg SchedulerConfig, flush func(k K, now time.Time) (again bool)) *Scheduler[K] {
	if flush == nil {
		panic("coalesce: NewScheduler with a nil flush function")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = defaultTick
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	return &Scheduler[K]{tick: cfg.Tick, workers: cfg.Workers, flush: flush}
}

// Mark schedules k for the next tick. Safe for concurrent use; marking a
// key several times before a tick flushes it once. A Mark made while a tick
// is running (including from flush) counts for the next tick.
func (s *Scheduler[K]) Mark(k K) {
	s.mu.Lock()
	s.pending.add(k)
	s.mu.Unlock()
}

// Run ticks until ctx is done, then returns nil (ctx.Err() is not an
// error). It must be called once: later calls return ErrRunTwice at once.
// Keys still marked when Run returns are not flushed.
//
// Goroutines: Run starts Workers-1 long-lived helper goroutines and joins
// them before it returns; the goroutine calling Run is the Workers-th
// flusher. A tick with n marked keys wakes min(n, Workers)-1 helpers, so a
// tick with a single key runs entirely on Run's goroutine.
//
// Timing: the first tick is Tick after Run starts. A tick starts Tick
// after the previous one started or, if that one took longer than Tick, as
// soon as it ends: a slow tick delays the next one, ticks never overlap and
// missed ticks are not made up.
func (s *Scheduler[K]) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	work := make(chan struct{})
	var helpers sync.WaitGroup
	for range s.workers - 1 {
		helpers.Go(func() {
			for range work {
				s.batch.drain(s)
				s.batch.wg.Done()
			}
		})
	}
	defer helpers.Wait()
	defer close(work)

	t := time.NewTimer(s.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		start := time.Now()
		s.runTick(start, work)
		t.Reset(max(0, s.tick-time.Since(start)))
	}
}

// runTick swaps out the pending set and flushes its keys with now, on the
// calling goroutine (Run's) plus up to Workers-1 helpers woken through
// work. It returns when every flush of the tick has returned.
func (s *Scheduler[K]) runTick(now time.Time, work chan<- struct{}) {
	s.mu.Lock()
	cur := s.pending
	s.pending, s.spare = s.spare, keySet[K]{}
	s.mu.Unlock()

	if n := len(cur.keys); n > 0 {
		b := &s.batch
		b.keys, b.now = cur.keys, now
		b.next.Store(0)
		helpers := min(n, s.workers) - 1
		b.wg.Add(helpers)
		for range helpers {
			work <- struct{}{}
		}
		b.drain(s)
		b.wg.Wait()
		b.keys, b.now = nil, time.Time{}
	}
	cur.reset()
	s.spare = cur
}

// batch is the work of one tick, shared by the goroutines flushing it.
type batch[K comparable] struct {
	keys []K            // the keys of the tick, read-only during it
	now  time.Time      // the tick's time, passed to every flush
	next atomic.Int64   // index of the next key to flush
	wg   sync.WaitGroup // helpers still flushing this tick
}

// drain flushes keys of b until none is left, taking them one at a time
// from the shared index, and re-marks those whose flush asks for it.
func (b *batch[K]) drain(s *Scheduler[K]) {
	for {
		i := b.next.Add(1) - 1
		if i >= int64(len(b.keys)) {
			return
		}
		k := b.keys[i]
		if s.flush(k, b.now) {
			s.Mark(k)
		}
	}
}

// keySet is a set of keys in insertion order. Its zero value is empty.
type keySet[K comparable] struct {
	keys    []K
	has     map[K]struct{}
	prevLen int // len(keys) at the previous reset
}

func (ks *keySet[K]) add(k K) {
	if _, ok := ks.has[k]; ok {
		return
	}
	if ks.has == nil {
		ks.has = make(map[K]struct{})
	}
	ks.has[k] = struct{}{}
	ks.keys = append(ks.keys, k)
}

// reset empties ks, keeping its capacity unless shouldShrink says it is
// oversized for the recent load.
func (ks *keySet[K]) reset() {
	n := len(ks.keys)
	peak := max(n, ks.prevLen)
	ks.prevLen = n
	if shouldShrink(cap(ks.keys), peak) {
		if peak == 0 {
			ks.keys, ks.has = nil, nil
		} else {
			ks.keys, ks.has = make([]K, 0, peak), make(map[K]struct{}, peak)
		}
		return
	}
	clear(ks.keys)
	ks.keys = ks.keys[:0]
	clear(ks.has)
}
