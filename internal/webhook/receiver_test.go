package webhook

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// receiver is a real HTTP receiver: it verifies every request's signature
// and records the events of the batches it accepted.
type receiver struct {
	t      *testing.T
	secret []byte
	srv    *httptest.Server
	quit   chan struct{} // closed when the test ends: ends hanging requests

	mu       sync.Mutex
	events   []Payload // guarded by mu: accepted, in arrival order
	requests int       // guarded by mu
	badSigs  int       // guarded by mu
	// answer, when set, gives the status of request n (1-based); nil: 200.
	// hang: no answer until the sender gives up the request.
	answer func(n int) int // guarded by mu
}

// hang is an answer: the receiver never answers.
const hang = -1

func newReceiver(t *testing.T, secret []byte) *receiver {
	r := &receiver{t: t, secret: secret, quit: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	t.Cleanup(func() { close(r.quit) }) // first: Close waits for the handlers
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.requests++
	n, answer := r.requests, r.answer
	if !Verify(r.secret, req.Header.Get(HeaderTimestamp), req.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute) {
		r.badSigs++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.mu.Unlock()
	if answer != nil {
		code := answer(n)
		if code == hang {
			select {
			case <-req.Context().Done():
			case <-r.quit:
			}
			return
		}
		if code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
	}
	var batch []Payload
	if err := json.Unmarshal(body, &batch); err != nil {
		r.t.Errorf("receiver: %v in %s", err, body)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.events = append(r.events, batch...)
	r.mu.Unlock()
}

func (r *receiver) setAnswer(f func(n int) int) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

func (r *receiver) snapshot() (events []Payload, requests, badSigs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Payload(nil), r.events...), r.requests, r.badSigs
}

// waitEvents waits until the receiver accepted n events.
func (r *receiver) waitEvents(n int, timeout time.Duration) []Payload {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs, reqs, _ := r.snapshot()
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("receiver got %d events in %d requests, want %d: %v", len(evs), reqs, n, evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p Payload) String() string { return fmt.Sprintf("%s %s %s %s", p.ID, p.Type, p.Room, p.User) }
