package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for a tokenBucket.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestAdminDisconnectRate: a node serves adminDisconnectBurst disconnects
// at once, then adminDisconnectRate per second; one more answers 429
// rate_limited with Retry-After. Requests without the token are refused
// before they take a token, and reads are not limited by it.
func TestAdminDisconnectRate(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	a := testAdminAPI(blockingState{})
	a.kicks.now = clock.now
	mux := http.NewServeMux()
	a.register(mux)
	do := func(method, path, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec
	}
	for range 2 * adminDisconnectBurst {
		if rec := do("POST", "/api/users/alice/disconnect", ""); rec.Code != 401 {
			t.Fatalf("disconnect without the token: %d, want 401", rec.Code)
		}
	}
	for i := range adminDisconnectBurst {
		if rec := do("POST", "/api/users/alice/disconnect", "t0k"); rec.Code != 200 {
			t.Fatalf("disconnect %d within the burst: %d %s", i, rec.Code, rec.Body)
		}
	}
	rec := do("POST", "/api/users/alice/disconnect", "t0k")
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" || errCodeOf(rec) != "rate_limited" {
		t.Errorf("one disconnect over the burst: %d Retry-After %q %s, want 429 rate_limited, Retry-After 1", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if rec := do("GET", "/api/users/alice/rooms", "t0k"); rec.Code == 429 {
		t.Errorf("a read while the disconnects are limited: 429")
	}
	clock.add(time.Second / adminDisconnectRate) // one token
	if rec := do("POST", "/api/users/alice/disconnect", "t0k"); rec.Code != 200 {
		t.Errorf("disconnect after a token came back: %d %s", rec.Code, rec.Body)
	}
	if rec := do("POST", "/api/users/alice/disconnect", "t0k"); rec.Code != 429 {
		t.Errorf("a second disconnect on the same token: %d, want 429", rec.Code)
	}
	clock.add(time.Second) // a second refills adminDisconnectRate tokens
	for i := range adminDisconnectRate {
		if rec := do("POST", "/api/users/alice/disconnect", "t0k"); rec.Code != 200 {
			t.Fatalf("disconnect %d a second later: %d %s", i, rec.Code, rec.Body)
		}
	}
}

// TestTokenBucketWait: the wait is the time until the next token, so
// Retry-After rounds it up to whole seconds.
func TestTokenBucketWait(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	b := &tokenBucket{interval: 2 * time.Second, burst: 2, now: clock.now}
	if w1, w2 := b.take(), b.take(); w1 != 0 || w2 != 0 {
		t.Fatal("the burst of 2 was refused")
	}
	if w := b.take(); w != 2*time.Second {
		t.Errorf("wait %v, want 2s", w)
	}
	clock.add(1500 * time.Millisecond)
	if w := b.take(); w != 500*time.Millisecond {
		t.Errorf("wait %v, want 500ms", w)
	}
	clock.add(500 * time.Millisecond)
	if w := b.take(); w != 0 {
		t.Errorf("wait %v once the token is back, want 0", w)
	}
}

// errCodeOf is the error code of a recorded JSON error answer.
func errCodeOf(rec *httptest.ResponseRecorder) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	return e.Error.Code
}
