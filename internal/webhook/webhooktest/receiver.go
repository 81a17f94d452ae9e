// Package webhooktest is a real webhook receiver for tests: an HTTP
// server that verifies each request's signature (webhook.Verify) and
// records the events.
package webhooktest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/webhook"
)

// Receiver records the events of every request signed with Secret; a
// request with a bad signature or body fails the test (and gets a 401).
type Receiver struct {
	URL    string // the server's base URL
	Secret []byte

	mu     sync.Mutex
	events []webhook.Payload // guarded by mu: in arrival order
}

// New starts a Receiver, closed at the end of the test.
func New(t testing.TB, secret []byte) *Receiver {
	r := &Receiver{Secret: secret}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if !webhook.Verify(r.Secret, req.Header.Get(webhook.HeaderTimestamp), req.Header.Get(webhook.HeaderSignature), body, time.Now(), time.Minute) {
			t.Errorf("webhook with a bad signature: %s", body)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var batch []webhook.Payload
		if err := json.Unmarshal(body, &batch); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		r.mu.Lock()
		r.events = append(r.events, batch...)
		r.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// Events is a copy of the events received, in arrival order.
func (r *Receiver) Events() []webhook.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}
