package webhook

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/presence"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 5, 4, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"+5", 0},
		{"99999999999999999999", time.Duration(int64(1<<63-1) / int64(time.Second) * int64(time.Second))},
		{"2", 2 * time.Second},
		{"120", 2 * time.Minute},
		{"99999999999999999", time.Duration(int64(1<<63-1) / int64(time.Second) * int64(time.Second))},
		{"1.5", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestRetryWait(t *testing.T) {
	later := func(d time.Duration) error { return &retryLater{status: 429, after: d} }
	for _, tc := range []struct {
		name          string
		drawn         time.Duration
		err           error
		ceiling, want time.Duration
	}{
		{"no Retry-After", 10 * time.Millisecond, errors.New("webhook: status 500"), time.Second, 10 * time.Millisecond},
		{"Retry-After longer", 10 * time.Millisecond, later(500 * time.Millisecond), time.Second, 500 * time.Millisecond},
		{"Retry-After shorter", 800 * time.Millisecond, later(100 * time.Millisecond), time.Second, 800 * time.Millisecond},
		{"Retry-After past the ceiling", 10 * time.Millisecond, later(time.Hour), 30 * time.Second, 30 * time.Second},
	} {
		if got := retryWait(tc.drawn, tc.err, tc.ceiling); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRetryAfterHonoured: a receiver answering 429 or 503 with
// Retry-After: 1 gets the retry no sooner than a second later, though
// the drawn backoff is 0 (it was ignored: the retry came at once).
func TestRetryAfterHonoured(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			var mu sync.Mutex
			var at []time.Time
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				at = append(at, time.Now())
				if len(at) == 1 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(code)
				}
			}))
			defer srv.Close()
			s := newSender(t, srv.URL, func(c *Config) { c.MaxBackoff = 5 * time.Second })
			s.jitter = func(time.Duration) time.Duration { return 0 }
			stop := run(t, s)
			defer stop()
			s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, "u")})
			waitFor(t, s.m.events.WithLabelValues(resultSent), 1)
			mu.Lock()
			defer mu.Unlock()
			if len(at) != 2 {
				t.Fatalf("%d requests, want 2", len(at))
			}
			if gap := at[1].Sub(at[0]); gap < time.Second {
				t.Fatalf("retried %v after a Retry-After of 1 s", gap)
			}
		})
	}
}
