package webhook

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/presenced/presenced/presence"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("s3cret")

// start runs a Sender to r with fast retries until the test ends.
func start(t *testing.T, r *receiver, tune func(*Config)) *Sender {
	t.Helper()
	s := newSender(t, r.srv.URL+"/hook", tune)
	run(t, s)
	return s
}

// newSender builds a Sender to url with fast retries.
func newSender(t *testing.T, url string, tune func(*Config)) *Sender {
	t.Helper()
	cfg := Config{URL: url, Secret: secret, Node: "n1", Tick: 10 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Registerer: prometheus.NewRegistry()}
	if tune != nil {
		tune(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs s until stop is called or the test ends; stop returns how long
// Run took to return once stopped.
func run(t *testing.T, s *Sender) (stop func() time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(ctx) })
	var once sync.Once
	var took time.Duration
	stop = func() time.Duration {
		once.Do(func() {
			begin := time.Now()
			cancel()
			wg.Wait()
			took = time.Since(begin)
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return stop
}

func ev(typ presence.EventType, user string) presence.Event {
	return presence.Event{Type: typ, User: user, Time: time.Now()}
}

func TestSignatureVerifies(t *testing.T) {
	r := newReceiver(t, secret)
	s := start(t, r, nil)
	s.RoomEvents("lobby", []presence.Event{ev(presence.EventRoomOccupied, ""), ev(presence.EventMemberAdded, "ann")})
	evs := r.waitEvents(2, 5*time.Second)
	if _, _, bad := r.snapshot(); bad != 0 {
		t.Fatalf("%d requests with a bad signature", bad)
	}
	want := []Payload{{ID: s.prefix + "1", Type: "room_occupied", Room: "lobby"}, {ID: s.prefix + "2", Type: "member_added", Room: "lobby", User: "ann"}}
	if !strings.HasPrefix(s.prefix, "n1-") || len(s.prefix) != len("n1-12345678-") {
		t.Errorf("ids start with %q, want n1-<8 hex digits>-", s.prefix)
	}
	for i, w := range want {
		got := evs[i]
		if got.ID != w.ID || got.Type != w.Type || got.Room != w.Room || got.User != w.User || got.TS == 0 {
			t.Errorf("event %d = %+v, want %+v", i, got, w)
		}
	}
	// A receiver with another key refuses: the signature covers the key.
	if Verify([]byte("other"), "1", Sign(secret, "1", []byte("[]")), []byte("[]"), time.Unix(1, 0), time.Minute) {
		t.Error("a signature verified with another key")
	}
	if Verify(secret, "1", Sign(secret, "1", []byte("[]")), []byte("[ ]"), time.Unix(1, 0), time.Minute) {
		t.Error("a signature verified for another body")
	}
	if Verify(secret, "1", Sign(secret, "1", []byte("[]")), []byte("[]"), time.Unix(1000, 0), time.Minute) {
		t.Error("a stale timestamp verified")
	}
}

func TestRetriesOn500ThenSucceeds(t *testing.T) {
	r := newReceiver(t, secret)
	r.setAnswer(func(n int) int {
		if n <= 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	s := start(t, r, nil)
	s.RoomEvents("lobby", []presence.Event{ev(presence.EventMemberAdded, "ann")})
	evs := r.waitEvents(1, 5*time.Second)
	_, reqs, _ := r.snapshot()
	if len(evs) != 1 || reqs != 4 {
		t.Fatalf("got %d events in %d requests, want 1 in 4", len(evs), reqs)
	}
	if got := value(s.m.requests.WithLabelValues("retry")); got != 3 {
		t.Errorf("retries counted %v, want 3", got)
	}
}

func TestRetryPolicy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		requests int // made for one batch, MaxAttempts 3
		failed   int // of them counted requests{failed}
	}{
		{"429 is retried", http.StatusTooManyRequests, 3, 1},
		{"503 is retried", http.StatusServiceUnavailable, 3, 1},
		{"400 is not", http.StatusBadRequest, 1, 0},
		{"404 is not", http.StatusNotFound, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t, secret)
			r.setAnswer(func(int) int { return tc.status })
			s := start(t, r, func(c *Config) { c.MaxAttempts = 3 })
			s.RoomEvents("lobby", []presence.Event{ev(presence.EventMemberAdded, "ann")})
			failed := s.m.events.WithLabelValues("dropped_failed")
			deadline := time.Now().Add(5 * time.Second)
			for value(failed) != 1 {
				if time.Now().After(deadline) {
					t.Fatal("the batch was never given up")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if _, reqs, _ := r.snapshot(); reqs != tc.requests {
				t.Errorf("%d requests, want %d", reqs, tc.requests)
			}
			// The last attempt is not a retry: nothing follows it.
			if got, want := value(s.m.requests.WithLabelValues("retry")), float64(tc.requests-1); got != want {
				t.Errorf("requests{retry} = %v, want %v", got, want)
			}
			if got, want := value(s.m.requests.WithLabelValues("failed")), float64(tc.failed); got != want {
				t.Errorf("requests{failed} = %v, want %v", got, want)
			}
		})
	}
}

// TestOrderPerRoom: events queued while a batch is retried go after it,
// and a room's events keep their order across batches.
func TestOrderPerRoom(t *testing.T) {
	r := newReceiver(t, secret)
	r.setAnswer(func(n int) int {
		if n%2 == 1 {
			return http.StatusBadGateway // every batch fails once
		}
		return http.StatusOK
	})
	s := start(t, r, func(c *Config) { c.MaxBatch = 7 })
	const n = 100
	for i := range n {
		typ := presence.EventMemberAdded
		if i%2 == 1 {
			typ = presence.EventMemberRemoved
		}
		for _, room := range []string{"a", "b"} {
			s.RoomEvents(room, []presence.Event{ev(typ, "u")})
		}
		if i%10 == 0 {
			time.Sleep(3 * time.Millisecond)
		}
	}
	evs := r.waitEvents(2*n, 10*time.Second)
	next := map[string]int{}
	for _, e := range evs {
		want := "member_added"
		if next[e.Room]%2 == 1 {
			want = "member_removed"
		}
		if e.Type != want {
			t.Fatalf("room %s event %d is %s, want %s", e.Room, next[e.Room], e.Type, want)
		}
		next[e.Room]++
	}
	if len(evs) != 2*n {
		t.Fatalf("%d events, want %d (none twice)", len(evs), 2*n)
	}
}

func TestQueueBoundDropsAndCounts(t *testing.T) {
	r := newReceiver(t, secret)
	block := make(chan struct{})
	r.setAnswer(func(int) int { <-block; return http.StatusOK })
	s := start(t, r, func(c *Config) { c.Queue = 5; c.MaxBatch = 1 })
	s.RoomEvents("a", []presence.Event{ev(presence.EventMemberAdded, "first")})
	r.waitRequests(1)
	// The sender is stuck on the first POST: RoomEvents still returns at once.
	done := make(chan struct{})
	go func() {
		for range 3 {
			s.RoomEvents("a", []presence.Event{ev(presence.EventMemberAdded, "x"), ev(presence.EventMemberRemoved, "x")})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RoomEvents blocked on a full queue")
	}
	if got := value(s.m.events.WithLabelValues("dropped_queue")); got != 2 {
		t.Errorf("dropped_queue = %v, want 2 (3 pairs, room for 5: the third pair)", got)
	}
	close(block)
	r.waitEvents(5, 5*time.Second)
}

// TestQueueDropsWholeStep: a room's events of one call are queued all or
// none (F8: with one place left, member_removed was queued and its
// room_vacated dropped, and the receiver kept the room occupied); the ids
// of those dropped are not given again, so the gap shows the loss.
func TestQueueDropsWholeStep(t *testing.T) {
	r := newReceiver(t, secret)
	s := newSender(t, r.srv.URL, func(c *Config) { c.Queue = 3; c.Tick = time.Hour })
	s.RoomEvents("r", []presence.Event{ev(presence.EventRoomOccupied, ""), ev(presence.EventMemberAdded, "u")})
	s.RoomEvents("r", []presence.Event{ev(presence.EventMemberRemoved, "u"), ev(presence.EventRoomVacated, "")})
	s.RoomEvents("s", []presence.Event{ev(presence.EventRoomOccupied, "")})
	s.RoomEvents("s", []presence.Event{ev(presence.EventMemberAdded, "v")}) // full
	run(t, s)()                                                             // the last attempt sends the queue
	evs, _, _ := r.snapshot()
	var got []string
	for _, e := range evs {
		got = append(got, strings.TrimPrefix(e.ID, s.prefix)+" "+e.Type+" "+e.Room+" "+e.User)
	}
	want := []string{"1 room_occupied r ", "2 member_added r u", "5 room_occupied s "}
	if !slices.Equal(got, want) {
		t.Fatalf("received %q, want %q", got, want)
	}
	counts(t, s, map[string]float64{"events:sent": 3, "events:dropped_queue": 3, "requests:ok": 1})
}

func TestConfigRefused(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "http://x/", Secret: nil},
		{URL: "ftp://x/", Secret: secret},
		{URL: "::", Secret: secret},
		{URL: "http:///nohost", Secret: secret},
	} {
		if _, err := New(cfg); err == nil || !strings.HasPrefix(err.Error(), "webhook: ") {
			t.Errorf("New(%+v) = %v, want a webhook error", cfg, err)
		}
	}
}

func (r *receiver) waitRequests(n int) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := r.requests
		r.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d requests, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
