package webhook

import (
	"bytes"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/presenced/presenced/presence"
)

// TestBackoffCeiling: min(hi, lo × 2^n) for any n, without overflow
// (finding #12: a shift overflowed for lo ≳ 8.6 s at n = 30).
func TestBackoffCeiling(t *testing.T) {
	for _, tc := range []struct{ lo, hi time.Duration }{
		{250 * time.Millisecond, 30 * time.Second},
		{10 * time.Second, time.Hour},
		{time.Hour, 24 * time.Hour},
		{time.Second, math.MaxInt64},
		{time.Minute, time.Second}, // lo > hi: hi
		{1, 3},                     // odd hi: 2 is below it
		{3, 1001},
		{1, math.MaxInt64},
	} {
		for n := range 200 {
			exact := new(big.Int).Lsh(big.NewInt(int64(tc.lo)), uint(n))
			want := tc.hi
			if exact.Cmp(big.NewInt(int64(tc.hi))) < 0 {
				want = time.Duration(exact.Int64())
			}
			if got := backoff(tc.lo, tc.hi, n); got != want {
				t.Fatalf("backoff(%v, %v, %d) = %v, want %v", tc.lo, tc.hi, n, got, want)
			}
		}
	}
}

// TestBackoffWaits: the waits a sender draws, with many attempts and a
// large MinBackoff, double up to MaxBackoff and stay there; the default
// jitter draws within [0, ceiling].
func TestBackoffWaits(t *testing.T) {
	r := newReceiver(t, secret)
	r.setAnswer(func(int) int { return http.StatusServiceUnavailable })
	s := newSender(t, r.srv.URL, func(c *Config) { c.MaxAttempts = 40; c.MinBackoff = 10 * time.Second; c.MaxBackoff = time.Minute })
	for _, ceil := range []time.Duration{0, 1, time.Second, time.Minute, math.MaxInt64} {
		for range 100 {
			if w := s.jitter(ceil); w < 0 || w > ceil {
				t.Fatalf("jitter(%v) = %v", ceil, w)
			}
		}
	}
	var mu sync.Mutex
	var ceils []time.Duration
	s.jitter = func(c time.Duration) time.Duration {
		mu.Lock()
		ceils = append(ceils, c)
		mu.Unlock()
		return 0
	}
	run(t, s)
	s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, "u")})
	waitFor(t, s.m.events.WithLabelValues(resultDroppedFailed), 1)
	mu.Lock()
	defer mu.Unlock()
	if len(ceils) != 39 {
		t.Fatalf("%d waits for 40 attempts, want 39", len(ceils))
	}
	for i, c := range ceils {
		want := min(time.Minute, 10*time.Second<<min(i, 3))
		if c != want {
			t.Fatalf("wait %d drawn in [0, %v], want [0, %v]", i, c, want)
		}
	}
}

// TestRequestTimeout: a receiver that does not answer within Timeout is
// retried like a 5xx.
func TestRequestTimeout(t *testing.T) {
	r := newReceiver(t, secret)
	r.setAnswer(func(n int) int {
		if n == 1 {
			return hang
		}
		return http.StatusOK
	})
	s := newSender(t, r.srv.URL, func(c *Config) { c.Timeout = 100 * time.Millisecond })
	run(t, s)
	s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, "u")})
	r.waitEvents(1, 10*time.Second)
	counts(t, s, map[string]float64{"events:sent": 1, "requests:retry": 1, "requests:ok": 1})
}

// syncBuffer is a log sink safe for the sender's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRedirectRejected: a 3xx is not followed (a POST redirected is
// replayed as a GET, or posted to another URL): the batch is rejected
// and the Location logged (finding #10).
func TestRedirectRejected(t *testing.T) {
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			var mu sync.Mutex
			followed := 0
			mux := http.NewServeMux()
			mux.HandleFunc("/hook", func(w http.ResponseWriter, req *http.Request) {
				http.Redirect(w, req, "/moved", code)
			})
			mux.HandleFunc("/moved", func(w http.ResponseWriter, req *http.Request) {
				mu.Lock()
				followed++
				mu.Unlock()
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			var logs syncBuffer
			s := newSender(t, srv.URL+"/hook", func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
			stop := run(t, s)
			s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, "u")})
			waitFor(t, s.m.events.WithLabelValues(resultDroppedFailed), 1)
			stop()
			mu.Lock()
			defer mu.Unlock()
			if followed != 0 {
				t.Errorf("the redirect was followed %d times", followed)
			}
			counts(t, s, map[string]float64{"events:dropped_failed": 1, "requests:rejected": 1})
			if !strings.Contains(logs.String(), "/moved") {
				t.Errorf("the log does not show the Location: %s", logs.String())
			}
		})
	}
}

// TestRunClosesIdleConnections: with the default client, nothing of the
// sender outlives Run, not even the idle keep-alive connection to a
// receiver that is still up (F11: it stayed in http.DefaultTransport's
// pool, with its two goroutines, and Run's return promised otherwise).
func TestRunClosesIdleConnections(t *testing.T) {
	r := newReceiver(t, secret)
	before := goleak.IgnoreCurrent()
	s := newSender(t, r.srv.URL, nil)
	stop := run(t, s)
	s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, "u")})
	r.waitEvents(1, 5*time.Second)
	stop()
	goleak.VerifyNone(t, before)
}
