package webhook

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/presence"
)

// waitFor waits until the counter reaches want.
func waitFor(t *testing.T, c prometheus.Counter, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for value(c) < want {
		if time.Now().After(deadline) {
			t.Fatalf("counter at %v, want %v", value(c), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counts checks the sender's counters, by "events:<result>" and
// "requests:<result>"; those not listed must be 0.
func counts(t *testing.T, s *Sender, want map[string]float64) {
	t.Helper()
	for _, r := range []string{resultSent, resultDroppedQueue, resultDroppedFailed} {
		if got := value(s.m.events.WithLabelValues(r)); got != want["events:"+r] {
			t.Errorf("events{%s} = %v, want %v", r, got, want["events:"+r])
		}
	}
	for _, r := range []string{reqOK, reqRetry, reqFailed, reqRejected} {
		if got := value(s.m.requests.WithLabelValues(r)); got != want["requests:"+r] {
			t.Errorf("requests{%s} = %v, want %v", r, got, want["requests:"+r])
		}
	}
}

func types(evs []Payload) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type+" "+e.User)
	}
	return out
}

// TestFinalAttemptDelivers: what is queued at shutdown is sent, in order,
// in batches, before Run returns.
func TestFinalAttemptDelivers(t *testing.T) {
	r := newReceiver(t, secret)
	s := newSender(t, r.srv.URL, func(c *Config) { c.Tick = time.Hour; c.MaxBatch = 2 })
	stop := run(t, s)
	users := []string{"a", "b", "c", "d", "e"}
	for _, u := range users {
		s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, u)})
	}
	stop()
	evs, reqs, _ := r.snapshot()
	var got []string
	for _, e := range evs {
		got = append(got, e.User)
	}
	if !slices.Equal(got, users) || reqs != 3 {
		t.Fatalf("after Run: users %q in %d requests, want %q in 3", got, reqs, users)
	}
	counts(t, s, map[string]float64{"events:sent": 5, "requests:ok": 3})
}

// TestFinalAttemptBounded: a receiver that does not answer at shutdown
// costs at most finalTry; what was queued is counted dropped_failed.
func TestFinalAttemptBounded(t *testing.T) {
	r := newReceiver(t, secret)
	r.setAnswer(func(int) int { return hang })
	s := newSender(t, r.srv.URL, func(c *Config) { c.Tick = time.Hour; c.MaxBatch = 2 })
	stop := run(t, s)
	for _, u := range []string{"a", "b", "c", "d", "e"} {
		s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, u)})
	}
	if took := stop(); took > finalTry+5*time.Second { // generous: 2 shared CPUs
		t.Errorf("Run took %v to return, want about %v", took, finalTry)
	}
	if _, reqs, _ := r.snapshot(); reqs != 1 {
		t.Errorf("%d requests, want 1 (the first batch hangs, the rest is dropped)", reqs)
	}
	counts(t, s, map[string]float64{"events:dropped_failed": 5, "requests:failed": 1})
}

// TestShutdownKeepsRetriedBatchFirst: stopped while a batch waits for its
// retry, the sender sends it in the last attempt before the events queued
// behind it (finding #7: it was dropped and the later ones sent).
func TestShutdownKeepsRetriedBatchFirst(t *testing.T) {
	r := newReceiver(t, secret)
	r.setAnswer(func(n int) int {
		if n == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	s := newSender(t, r.srv.URL, nil)
	s.jitter = func(time.Duration) time.Duration { return time.Hour } // stays in the backoff
	stop := run(t, s)
	s.RoomEvents("r", []presence.Event{ev(presence.EventRoomOccupied, ""), ev(presence.EventMemberAdded, "u")})
	waitFor(t, s.m.requests.WithLabelValues(reqRetry), 1)
	s.RoomEvents("r", []presence.Event{ev(presence.EventMemberRemoved, "u"), ev(presence.EventRoomVacated, "")})
	stop()
	evs, _, _ := r.snapshot()
	want := []string{"room_occupied ", "member_added u", "member_removed u", "room_vacated "}
	if got := types(evs); !slices.Equal(got, want) {
		t.Fatalf("received %q, want %q", got, want)
	}
	counts(t, s, map[string]float64{"events:sent": 4, "requests:retry": 1, "requests:ok": 2})
}

// TestShutdownKeepsInFlightBatchFirst: stopped during a POST, the
// interrupted batch goes first in the last attempt; if that fails too, it
// and everything behind it are dropped, counted.
func TestShutdownKeepsInFlightBatchFirst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(n int) int
		got    []string
		counts map[string]float64
	}{
		{"then answered", func(n int) int {
			if n == 1 {
				return hang
			}
			return http.StatusOK
		}, []string{"member_added u", "member_removed u"},
			map[string]float64{"events:sent": 2, "requests:retry": 1, "requests:ok": 2}},
		{"never answered", func(int) int { return hang }, nil,
			map[string]float64{"events:dropped_failed": 2, "requests:retry": 1, "requests:failed": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t, secret)
			r.setAnswer(tc.answer)
			s := newSender(t, r.srv.URL, nil)
			stop := run(t, s)
			s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, "u")})
			r.waitRequests(1)
			s.RoomEvents("r", []presence.Event{ev(presence.EventMemberRemoved, "u")})
			if took := stop(); took > finalTry+5*time.Second {
				t.Errorf("Run took %v to return, want at most about %v", took, finalTry)
			}
			evs, _, _ := r.snapshot()
			if got := types(evs); !slices.Equal(got, tc.got) {
				t.Fatalf("received %q, want %q", got, tc.got)
			}
			counts(t, s, tc.counts)
		})
	}
}

// TestShutdownAfterRejectedBatch: in the last attempt, a batch refused for
// good is dropped alone and the next ones are still sent (as while
// running); docs/webhooks.md "Shutdown" said a receiver never got an event
// without the ones before it (F10).
func TestShutdownAfterRejectedBatch(t *testing.T) {
	r := newReceiver(t, secret)
	r.setAnswer(func(n int) int {
		if n == 1 {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	s := newSender(t, r.srv.URL, func(c *Config) { c.Tick = time.Hour; c.MaxBatch = 1 })
	s.RoomEvents("r", []presence.Event{ev(presence.EventMemberRemoved, "u"), ev(presence.EventRoomVacated, "")})
	s.RoomEvents("s", []presence.Event{ev(presence.EventRoomOccupied, "")})
	run(t, s)()
	evs, _, _ := r.snapshot()
	want := []string{"room_vacated ", "room_occupied "}
	if got := types(evs); !slices.Equal(got, want) {
		t.Fatalf("received %q, want %q", got, want)
	}
	counts(t, s, map[string]float64{"events:sent": 2, "events:dropped_failed": 1, "requests:rejected": 1, "requests:ok": 2})
}
