package coalesce

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// flushLog records the flush calls of a Scheduler.
type flushLog struct {
	mu     sync.Mutex
	calls  []flushCall    // guarded by mu: since the last take
	counts map[string]int // guarded by mu: flushes per key, ever
}

type flushCall struct {
	k   string
	now time.Time
}

// add records a flush of k and returns how many times k has been flushed,
// this time included.
func (l *flushLog) add(k string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, flushCall{k, now})
	if l.counts == nil {
		l.counts = make(map[string]int)
	}
	l.counts[k]++
	return l.counts[k]
}

// take returns the calls recorded since the previous take.
func (l *flushLog) take() []flushCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	calls := l.calls
	l.calls = nil
	return calls
}

// startRun runs s.Run in a goroutine and returns a function that cancels it
// and waits for it to return nil.
func startRun(t *testing.T, s *Scheduler[string]) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	}
}

func TestSchedulerTicks(t *testing.T) {
	const tick = 100 * time.Millisecond
	tests := []struct {
		name  string
		marks []string // marked before the first tick
		// flush is the behaviour under test; n is how many times k has
		// been flushed, this call included.
		flush func(s *Scheduler[string], k string, n int) (again bool)
		want  [][]string // keys flushed at each tick, sorted
	}{
		{
			name:  "nothing marked",
			flush: func(*Scheduler[string], string, int) bool { return false },
			want:  [][]string{nil, nil},
		},
		{
			name:  "marked several times flushed once",
			marks: []string{"a", "b", "a", "a", "b"},
			flush: func(*Scheduler[string], string, int) bool { return false },
			want:  [][]string{{"a", "b"}, nil, nil},
		},
		{
			name:  "again keeps the key marked",
			marks: []string{"a", "b"},
			flush: func(_ *Scheduler[string], k string, n int) bool { return k == "a" && n < 3 },
			want:  [][]string{{"a", "b"}, {"a"}, {"a"}, nil},
		},
		{
			name:  "mark of another key during flush goes to the next tick",
			marks: []string{"a"},
			flush: func(s *Scheduler[string], k string, n int) bool {
				if k == "a" {
					s.Mark("b")
					s.Mark("b")
				}
				return false
			},
			want: [][]string{{"a"}, {"b"}, nil},
		},
		{
			name:  "mark of itself during flush flushes it again next tick",
			marks: []string{"a"},
			flush: func(s *Scheduler[string], k string, n int) bool {
				if n == 1 {
					s.Mark(k)
				}
				return false
			},
			want: [][]string{{"a"}, {"a"}, nil},
		},
		{
			name:  "mark of itself and again flush it once next tick",
			marks: []string{"a"},
			flush: func(s *Scheduler[string], k string, n int) bool {
				if n == 1 {
					s.Mark(k)
					return true
				}
				return false
			},
			want: [][]string{{"a"}, {"a"}, nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var log flushLog
				var s *Scheduler[string]
				s = NewScheduler(SchedulerConfig{Tick: tick, Workers: 2}, func(k string, now time.Time) bool {
					return tt.flush(s, k, log.add(k, now))
				})
				start := time.Now()
				for _, k := range tt.marks {
					s.Mark(k)
				}
				stop := startRun(t, s)
				defer stop()

				time.Sleep(tick / 2) // observe between ticks
				for i, want := range tt.want {
					time.Sleep(tick)
					synctest.Wait()
					calls := log.take()
					var got []string
					for _, c := range calls {
						got = append(got, c.k)
						if wantNow := start.Add(time.Duration(i+1) * tick); !c.now.Equal(wantNow) {
							t.Errorf("tick %d: flush(%s) now = +%v, want +%v", i, c.k, c.now.Sub(start), wantNow.Sub(start))
						}
					}
					slices.Sort(got)
					if !slices.Equal(got, want) {
						t.Errorf("tick %d: flushed %v, want %v", i, got, want)
					}
					wantPending := 0
					if i+1 < len(tt.want) {
						wantPending = len(tt.want[i+1])
					}
					if p := s.Pending(); p != wantPending {
						t.Errorf("after tick %d: Pending = %d, want %d", i, p, wantPending)
					}
				}
			})
		})
	}
}

// TestSchedulerMarkDuringTick marks keys from outside while a tick is
// flushing: they are flushed exactly once, at the next tick.
func TestSchedulerMarkDuringTick(t *testing.T) {
	const tick = 100 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		var log flushLog
		s := NewScheduler(SchedulerConfig{Tick: tick, Workers: 1}, func(k string, now time.Time) bool {
			log.add(k, now)
			if k == "slow" {
				time.Sleep(tick / 2) // the tick lasts from +100ms to +150ms
			}
			return false
		})
		start := time.Now()
		s.Mark("slow")
		stop := startRun(t, s)
		defer stop()

		time.Sleep(tick + tick/4) // +125ms: inside the first tick
		s.Mark("x")
		s.Mark("slow")
		s.Mark("x")
		if p := s.Pending(); p != 2 {
			t.Errorf("Pending during the tick = %d, want 2", p)
		}
		time.Sleep(2 * tick) // +325ms: after the second tick, which ended at +250ms
		synctest.Wait()
		want := []flushCall{
			{"slow", start.Add(tick)},
			{"x", start.Add(2 * tick)},
			{"slow", start.Add(2 * tick)},
		}
		if got := log.take(); !slices.Equal(got, want) {
			t.Errorf("flushes = %v, want %v", got, want)
		}
	})
}

// TestSchedulerSlowTick checks that a tick longer than Tick delays the
// next one, which then starts at once, without a backlog of ticks.
func TestSchedulerSlowTick(t *testing.T) {
	const tick = 100 * time.Millisecond
	tests := []struct {
		name     string
		duration func(n int) time.Duration // how long the n-th flush takes
		flushes  int                       // flush returns true until this many
		want     []time.Duration           // start of each flush since Run
	}{
		{
			name:     "fast ticks keep the cadence",
			duration: func(int) time.Duration { return 10 * time.Millisecond },
			flushes:  3,
			want:     []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond},
		},
		{
			name:     "tick as long as Tick",
			duration: func(int) time.Duration { return tick },
			flushes:  3,
			want:     []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond},
		},
		{
			name: "slow ticks then the cadence resumes",
			duration: func(n int) time.Duration {
				if n <= 3 {
					return 250 * time.Millisecond
				}
				return 0
			},
			flushes: 5,
			// 100 runs to 350; the tick due at 200 starts at once at 350
			// (none for 300), and so on; the cadence resumes after 850.
			want: []time.Duration{100 * time.Millisecond, 350 * time.Millisecond, 600 * time.Millisecond, 850 * time.Millisecond, 950 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var log flushLog
				s := NewScheduler(SchedulerConfig{Tick: tick}, func(k string, now time.Time) bool {
					n := log.add(k, now)
					if !now.Equal(time.Now()) {
						t.Errorf("flush %d: now = %v, want the tick's start %v", n, now, time.Now())
					}
					time.Sleep(tt.duration(n))
					return n < tt.flushes
				})
				start := time.Now()
				s.Mark("k")
				stop := startRun(t, s)
				defer stop()
				time.Sleep(10 * time.Second)
				var got []time.Duration
				for _, c := range log.take() {
					got = append(got, c.now.Sub(start))
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("flush times = %v, want %v", got, tt.want)
				}
			})
		})
	}
}

// TestSchedulerWorkers checks that at most Workers flushes run at once,
// that Workers of them do when there are enough keys, that they share the
// tick's now, and that every key is flushed exactly once.
func TestSchedulerWorkers(t *testing.T) {
	const (
		tick  = 100 * time.Millisecond
		sleep = time.Millisecond
	)
	tests := []struct {
		name    string
		workers int
		keys    int
	}{
		{name: "one worker", workers: 1, keys: 40},
		{name: "two workers", workers: 2, keys: 100},
		{name: "four workers", workers: 4, keys: 40},
		{name: "more workers than keys", workers: 16, keys: 5},
		{name: "one key", workers: 8, keys: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var (
					running, maxRunning atomic.Int64
					log                 flushLog
					lastEnd             atomic.Int64 // UnixNano of the latest flush end
				)
				s := NewScheduler(SchedulerConfig{Tick: tick, Workers: tt.workers}, func(k string, now time.Time) bool {
					r := running.Add(1)
					for m := maxRunning.Load(); r > m && !maxRunning.CompareAndSwap(m, r); m = maxRunning.Load() {
					}
					log.add(k, now)
					time.Sleep(sleep)
					lastEnd.Store(time.Now().UnixNano())
					running.Add(-1)
					return false
				})
				want := make([]string, tt.keys)
				for i := range want {
					want[i] = fmt.Sprintf("k%03d", i)
					s.Mark(want[i])
				}
				start := time.Now()
				stop := startRun(t, s)
				defer stop()
				time.Sleep(10 * tick)

				wantMax := min(tt.workers, tt.keys)
				if m := maxRunning.Load(); m != int64(wantMax) {
					t.Errorf("max concurrent flushes = %d, want %d", m, wantMax)
				}
				calls := log.take()
				var got []string
				for _, c := range calls {
					got = append(got, c.k)
					if want := start.Add(tick); !c.now.Equal(want) {
						t.Errorf("flush(%s) now = +%v, want +%v", c.k, c.now.Sub(start), want.Sub(start))
					}
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("flushed %v, want each of %v once", got, want)
				}
				// Workers flushing in parallel finish the tick in
				// ceil(keys/workers) sleeps.
				wantDur := time.Duration((tt.keys+wantMax-1)/wantMax) * sleep
				if d := time.Unix(0, lastEnd.Load()).Sub(start.Add(tick)); d != wantDur {
					t.Errorf("tick took %v, want %v", d, wantDur)
				}
			})
		})
	}
}

// TestSchedulerTickOrder checks one tick of a single worker: it flushes
// the marked keys once each, in the order they were first marked, with the
// tick's time, and leaves marked for the next tick the keys whose flush
// returned true or that were marked during the tick.
func TestSchedulerTickOrder(t *testing.T) {
	const tick = 100 * time.Millisecond
	tests := []struct {
		name        string
		marks       []string
		flush       func(s *Scheduler[string], k string) (again bool)
		want        []string // flushed by the first tick, in order
		wantPending int      // after the first tick
	}{
		{
			name:  "nothing marked",
			flush: func(*Scheduler[string], string) bool { return false },
		},
		{
			name:  "flushes marked keys once in mark order",
			marks: []string{"b", "a", "b", "c"},
			flush: func(*Scheduler[string], string) bool { return false },
			want:  []string{"b", "a", "c"},
		},
		{
			name:        "again keeps keys pending",
			marks:       []string{"a", "b", "c"},
			flush:       func(_ *Scheduler[string], k string) bool { return k != "b" },
			want:        []string{"a", "b", "c"},
			wantPending: 2,
		},
		{
			name:  "mark during flush stays pending",
			marks: []string{"a"},
			flush: func(s *Scheduler[string], k string) bool {
				s.Mark("z")
				s.Mark(k)
				return false
			},
			want:        []string{"a"},
			wantPending: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var log flushLog
				var s *Scheduler[string]
				s = NewScheduler(SchedulerConfig{Tick: tick, Workers: 1}, func(k string, now time.Time) bool {
					log.add(k, now)
					return tt.flush(s, k)
				})
				for _, k := range tt.marks {
					s.Mark(k)
				}
				if p := s.Pending(); p != len(tt.want) {
					t.Errorf("Pending before the tick = %d, want %d", p, len(tt.want))
				}
				start := time.Now()
				stop := startRun(t, s)
				defer stop()
				time.Sleep(tick + tick/2) // between the first tick and the second
				synctest.Wait()
				var got []string
				for _, c := range log.take() {
					got = append(got, c.k)
					if want := start.Add(tick); !c.now.Equal(want) {
						t.Errorf("flush(%s) now = +%v, want +%v", c.k, c.now.Sub(start), want.Sub(start))
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("the tick flushed %v, want %v", got, tt.want)
				}
				if p := s.Pending(); p != tt.wantPending {
					t.Errorf("Pending after the tick = %d, want %d", p, tt.wantPending)
				}
			})
		})
	}
}

// TestSchedulerRunLeavesLateMarks: a key marked after the last tick is
// still marked, not flushed, when Run returns.
func TestSchedulerRunLeavesLateMarks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log flushLog
		s := NewScheduler(SchedulerConfig{Tick: time.Second}, func(k string, now time.Time) bool {
			log.add(k, now)
			return false
		})
		stop := startRun(t, s)
		time.Sleep(1500 * time.Millisecond)
		s.Mark("late")
		stop()
		if got := log.take(); len(got) != 0 {
			t.Errorf("flushed %v, want nothing", got)
		}
		if p := s.Pending(); p != 1 {
			t.Errorf("Pending after Run = %d, want 1", p)
		}
	})
}

// runGoroutines counts the goroutines running Scheduler.Run or started by
// it.
func runGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "coalesce.(*Scheduler[...]).Run") {
			n++
		}
	}
	return n
}

func TestSchedulerRunStops(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		marked  bool // a key is flushed on every tick while Run stops
	}{
		{name: "default workers", workers: 0},
		{name: "one worker", workers: 1},
		{name: "many workers while busy", workers: 8, marked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var flushes atomic.Int64
			s := NewScheduler(SchedulerConfig{Tick: time.Millisecond, Workers: tt.workers}, func(k int, now time.Time) bool {
				flushes.Add(1)
				return true
			})
			if tt.marked {
				for i := range 100 {
					s.Mark(i)
				}
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			time.Sleep(20 * time.Millisecond)
			if got := runGoroutines(); got != s.workers {
				t.Errorf("goroutines in Run while running = %d, want Run's plus %d helpers", got, s.workers-1)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s of cancel")
			}
			if tt.marked && flushes.Load() == 0 {
				t.Error("no flush while running")
			}
			// Run has joined its helpers: none is left, not even exiting.
			goleak.VerifyNone(t)

			if err := s.Run(context.Background()); !errors.Is(err, ErrRunTwice) {
				t.Errorf("second Run = %v, want ErrRunTwice", err)
			}
		})
	}
}

// TestSchedulerRunStopsSynctest checks in a bubble that Run returns once
// its context is done, between ticks or in the middle of one, and leaves no
// goroutine behind (synctest.Test fails on a goroutine left blocked).
func TestSchedulerRunStopsSynctest(t *testing.T) {
	tests := []struct {
		name   string
		cancel time.Duration // since Run
	}{
		{name: "before the first tick", cancel: 50 * time.Millisecond},
		{name: "between ticks", cancel: 250 * time.Millisecond},
		{name: "during a tick", cancel: 310 * time.Millisecond}, // ticks run 300–330
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := NewScheduler(SchedulerConfig{Workers: 4}, func(k int, now time.Time) bool {
					time.Sleep(10 * time.Millisecond)
					return true
				})
				for i := range 10 {
					s.Mark(i)
				}
				ctx, cancel := context.WithCancel(t.Context())
				start := time.Now()
				done := make(chan error, 1)
				go func() { done <- s.Run(ctx) }()
				time.Sleep(tt.cancel)
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
				// A tick in progress is finished, not abandoned.
				if got, tickEnd := time.Since(start), 330*time.Millisecond; tt.name == "during a tick" && got != tickEnd {
					t.Errorf("Run returned at +%v, want +%v (the end of the tick)", got, tickEnd)
				}
			})
		})
	}
}

func TestSchedulerDefaults(t *testing.T) {
	tests := []struct {
		name        string
		cfg         SchedulerConfig
		wantTick    time.Duration
		wantWorkers int
	}{
		{name: "zero value", cfg: SchedulerConfig{}, wantTick: 100 * time.Millisecond, wantWorkers: runtime.GOMAXPROCS(0)},
		{name: "negative", cfg: SchedulerConfig{Tick: -1, Workers: -1}, wantTick: 100 * time.Millisecond, wantWorkers: runtime.GOMAXPROCS(0)},
		{name: "set", cfg: SchedulerConfig{Tick: time.Second, Workers: 3}, wantTick: time.Second, wantWorkers: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewScheduler(tt.cfg, func(int, time.Time) bool { return false })
			if s.tick != tt.wantTick || s.workers != tt.wantWorkers {
				t.Errorf("tick, workers = %v, %d; want %v, %d", s.tick, s.workers, tt.wantTick, tt.wantWorkers)
			}
		})
	}
}

// TestSchedulerConcurrentMarks marks keys from many goroutines while Run
// ticks: every key is flushed exactly once.
func TestSchedulerConcurrentMarks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const goroutines, perG = 8, 200
		var mu sync.Mutex
		counts := make(map[int]int)
		s := NewScheduler(SchedulerConfig{Tick: 10 * time.Millisecond, Workers: 4}, func(k int, now time.Time) bool {
			mu.Lock()
			counts[k]++
			mu.Unlock()
			return false
		})
		stop := func() func() {
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { s.Run(ctx); close(done) }()
			return func() { cancel(); <-done }
		}()
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range perG {
					k := g*perG + i
					s.Mark(k)
					s.Mark(k)
					if i%20 == 0 {
						time.Sleep(3 * time.Millisecond)
					}
				}
			})
		}
		wg.Wait()
		time.Sleep(50 * time.Millisecond)
		stop()
		if len(counts) != goroutines*perG {
			t.Errorf("%d keys flushed, want %d", len(counts), goroutines*perG)
		}
		// Each key is marked twice in a row. A tick that runs between the
		// two Marks (ticks run concurrently with the marking goroutines)
		// rightly flushes the key twice; more would be a lost dedupe.
		for k, n := range counts {
			if n < 1 || n > 2 {
				t.Errorf("key %d flushed %d times, want 1 (or 2 if a tick ran between its two Marks)", k, n)
			}
		}
	})
}

func TestNewSchedulerNilFlush(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewScheduler(nil flush) did not panic")
		}
	}()
	NewScheduler[int](SchedulerConfig{}, nil)
}

func TestSchedulerSteadyStateAllocs(t *testing.T) {
	s := NewScheduler(SchedulerConfig{Workers: 1}, func(k int, now time.Time) bool { return false })
	now := time.Now()
	round := func() {
		for k := range 100 {
			s.Mark(k)
		}
		s.tickNow(now)
	}
	for range 3 {
		round()
	}
	if allocs := testing.AllocsPerRun(100, round); allocs != 0 {
		t.Errorf("allocs per Mark×100 + tick = %v, want 0", allocs)
	}
}

func BenchmarkSchedulerMark(b *testing.B) {
	for _, keys := range []int{1, 1024} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			s := NewScheduler(SchedulerConfig{}, func(k int, now time.Time) bool { return false })
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				k := int(next.Add(1))
				for pb.Next() {
					s.Mark(k % keys)
					k += 7
				}
			})
		})
	}
	b.Run("keys=1024/running", func(b *testing.B) {
		// With Run swapping the marked set out every millisecond.
		s := NewScheduler(SchedulerConfig{Tick: time.Millisecond}, func(k int, now time.Time) bool { return false })
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		var next atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			k := int(next.Add(1))
			for pb.Next() {
				s.Mark(k % 1024)
				k += 7
			}
		})
	})
}

// BenchmarkSchedulerTick marks keys and runs a tick of one worker.
func BenchmarkSchedulerTick(b *testing.B) {
	for _, keys := range []int{16, 1024} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			s := NewScheduler(SchedulerConfig{Workers: 1}, func(k int, now time.Time) bool { return false })
			now := time.Now()
			tick := func() {
				for k := range keys {
					s.Mark(k)
				}
				s.tickNow(now)
			}
			tick() // grow both key sets to the steady size
			tick()
			b.ReportAllocs()
			for b.Loop() {
				tick()
			}
		})
	}
}
