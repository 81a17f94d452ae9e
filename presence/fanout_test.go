package presence

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// loadedRoom opens n sessions on a hub that is not running, joins each to
// room "r" as users u0, u1, ..., and flushes the room once, so every
// subscriber is in sync. The test calls r.flush itself.
func loadedRoom(tb testing.TB, n int, cfg Config, sink func(i int) Sink) (*Hub, *room) {
	tb.Helper()
	cfg.Insecure = true
	cfg.Node = "n1"
	cfg.Rate, cfg.Burst = 1e9, 1<<30
	h, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		s := h.Open(sink(i))
		s.HandleText(fmt.Appendf(nil, `{"t":"hello","v":1,"user":"u%d"}`, i))
		s.HandleText([]byte(`{"t":"join","id":1,"room":"r"}`))
	}
	r := h.lookupRoom("r")
	if r == nil {
		tb.Fatal("room r was not created")
	}
	r.flush(time.Now())
	return h, r
}

// changer returns a function that flips u0's status, as a set would.
func changer(r *room) func() {
	m := r.members.get("u0")
	states := [...]*wire.State{{Status: "away"}, {Status: "online"}}
	i := 0
	return func() {
		r.mu.Lock()
		r.setStateLocked(m, states[i%2])
		r.mu.Unlock()
		i++
	}
}

// TestPublishAllocs: a diff is encoded once and the same bytes go to every
// subscriber, so publishing allocates a constant amount per diff, nothing
// per delivery. The count is exact: one more allocation on this path fails.
func TestPublishAllocs(t *testing.T) {
	measure := func(n int) float64 {
		sinks := make([]*nopSink, n)
		_, r := loadedRoom(t, n, Config{}, func(i int) Sink {
			sinks[i] = &nopSink{}
			return sinks[i]
		})
		change := changer(r)
		step := func() {
			change()
			r.flush(time.Now())
		}
		for range 300 { // warm: the history is full, scratch buffers grown
			step()
		}
		sends := func() int {
			total := 0
			for _, s := range sinks {
				s.mu.Lock()
				total += s.sends
				s.mu.Unlock()
			}
			return total
		}
		before := sends()
		const runs = 100
		allocs := testing.AllocsPerRun(runs, step)
		if got, want := sends()-before, (runs+1)*n; got != want {
			t.Errorf("%d subscribers: %d deliveries in %d flushes, want %d", n, got, runs+1, want)
		}
		return allocs
	}
	// Exactly two per diff, whatever the room's size: the change list the
	// history keeps, and the frame every subscriber shares.
	for _, n := range []int{100, 1000} {
		if got := measure(n); got != 2 {
			t.Errorf("allocs per change+flush with %d subscribers = %v, want exactly 2", n, got)
		}
	}
}

// TestFanoutParallel: a room with enough subscribers hands its diff to the
// sinks on several goroutines; every subscriber in sync gets the same
// frame once, those whose outbox is full are marked for a sync.
func TestFanoutParallel(t *testing.T) {
	const n = parallelFanout + 200
	dropped := &counter{}
	sinks := make([]*fakeSink, n)
	_, r := loadedRoom(t, n, Config{Workers: 4, ListLimit: 2 * n, Metrics: Metrics{DroppedDiffs: dropped}},
		func(i int) Sink {
			sinks[i] = &fakeSink{}
			return sinks[i]
		})
	for _, s := range sinks {
		s.take()
	}
	full := 0
	for i := 0; i < n; i += 97 {
		sinks[i].setFull(true)
		full++
	}
	changer(r)()
	r.flush(time.Now())
	if got := dropped.value(); got != float64(full) {
		t.Errorf("DroppedDiffs = %v, want %d", got, full)
	}
	var frame []byte
	for i, s := range sinks {
		frames := s.take()
		if i%97 == 0 {
			if len(frames) != 0 {
				t.Fatalf("sink %d is full but got %d frames", i, len(frames))
			}
			continue
		}
		if len(frames) != 1 {
			t.Fatalf("sink %d got %d frames, want 1", i, len(frames))
		}
		if frame == nil {
			frame = frames[0]
			var e wire.Event
			if err := wire.DecodeEvent(frame, &e); err != nil || e.T != wire.TDiff || len(e.Update) != 1 {
				t.Fatalf("frame %s: %v, want a diff with one update", frame, err)
			}
		} else if &frames[0][0] != &frame[0] {
			t.Fatalf("sink %d got its own copy of the diff: want the same bytes for everyone", i)
		}
	}
	r.mu.Lock()
	marked := len(r.owed)
	r.mu.Unlock()
	if marked != full {
		t.Errorf("%d subscribers marked for a sync, want %d", marked, full)
	}
	for i := 0; i < n; i += 97 {
		sinks[i].setFull(false)
	}
	r.flush(time.Now())
	for i, s := range sinks {
		frames := s.take()
		want := 0
		if i%97 == 0 {
			want = 1
		}
		if len(frames) != want {
			t.Fatalf("sink %d got %d frames after the drain, want %d", i, len(frames), want)
		}
		if want == 1 && !isType(frames[0], wire.TSync) {
			t.Fatalf("sink %d got %s, want a sync", i, frames[0])
		}
	}
}

func isType(frame []byte, typ string) bool {
	var e wire.Event
	return wire.DecodeEvent(frame, &e) == nil && e.T == typ
}

// BenchmarkFanout publishes one change to a room of n subscribers with
// no-op sinks per op (the room's flush included).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint("subs=", n), func(b *testing.B) {
			_, r := loadedRoom(b, n, Config{ListLimit: 2 * n}, func(int) Sink { return &nopSink{} })
			change := changer(r)
			b.ReportAllocs()
			ops := 0
			for b.Loop() {
				change()
				r.flush(time.Now())
				ops++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(ops*n), "ns/delivery")
		})
	}
}

// BenchmarkHandleJoinLeave measures a join and a leave command of one
// connection, decoding included.
func BenchmarkHandleJoinLeave(b *testing.B) {
	h, err := New(Config{Insecure: true, Rate: 1e9, Burst: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	s := h.Open(&nopSink{})
	s.HandleText([]byte(`{"t":"hello","v":1,"user":"alice"}`))
	join := []byte(`{"t":"join","id":1,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice"}}}`)
	leave := []byte(`{"t":"leave","id":2,"room":"chat:42"}`)
	b.ReportAllocs()
	for b.Loop() {
		s.HandleText(join)
		s.HandleText(leave)
	}
	s.HandleClose(endNormal)
}

// TestConcurrentSessions drives sessions from several goroutines (each
// session from one, as the transport does) while the hub flushes on its
// workers and Drain runs: with -race, it checks the locking. Real time.
func TestConcurrentSessions(t *testing.T) {
	h, err := New(Config{Insecure: true, Tick: time.Millisecond, Workers: 4, LeaveGrace: 5 * time.Millisecond,
		TypingTTL: 3 * time.Millisecond, Rate: 1e6, Burst: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	const goroutines, perG, rounds = 8, 4, 150
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			var ss []*Session
			for i := range perG {
				s := h.Open(&fakeSink{})
				s.HandleText(fmt.Appendf(nil, `{"t":"hello","v":1,"user":"u%d"}`, (g*perG+i)%10))
				ss = append(ss, s)
			}
			for i := range rounds {
				s := ss[rng.IntN(len(ss))]
				room := fmt.Sprintf("r%d", rng.IntN(3))
				switch rng.IntN(5) {
				case 0:
					s.HandleText(fmt.Appendf(nil, `{"t":"join","id":%d,"room":%q,"state":{"status":"s%d"}}`, i+1, room, rng.IntN(3)))
				case 1:
					s.HandleText(fmt.Appendf(nil, `{"t":"leave","id":%d,"room":%q}`, i+1, room))
				case 2:
					s.HandleText(fmt.Appendf(nil, `{"t":"set","id":%d,"room":%q,"state":{"meta":{"i":%d}}}`, i+1, room, i))
				case 3:
					s.HandleText(fmt.Appendf(nil, `{"t":"typing","room":%q,"on":true}`, room))
				case 4:
					s.HandleDeadline()
				}
				if i%40 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			for _, s := range ss {
				s.HandleClose(endOf(rng.IntN(2) == 0))
			}
		})
	}
	wg.Go(func() {
		time.Sleep(2 * time.Millisecond)
		h.Drain(time.Second)
	})
	wg.Wait()
	eventually(t, 5*time.Second, func() bool { return h.Stats() == Stats{} })
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(time.Millisecond)
	}
}
