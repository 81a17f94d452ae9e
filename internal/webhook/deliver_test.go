package webhook

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/presenced/presenced/presence"
)

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
