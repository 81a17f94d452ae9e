package server

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The disconnects one node serves: a token bucket of adminDisconnectBurst
// requests, refilled at adminDisconnectRate per second. Each disconnect
// costs every node of the cluster (the kick) and closes connections.
const (
	adminDisconnectRate  = 10
	adminDisconnectBurst = 20
)

// tokenBucket is a token bucket (GCRA: one theoretical arrival time). Safe
// for concurrent use.
type tokenBucket struct {
	interval time.Duration    // static: one token per interval
	burst    int              // static
	now      func() time.Time // static (a test's clock)

	mu  sync.Mutex
	tat time.Time // guarded by mu: when the bucket is full again
}

func newTokenBucket(perSecond, burst int) *tokenBucket {
	return &tokenBucket{interval: time.Second / time.Duration(perSecond), burst: burst, now: time.Now}
}

// take takes a token and returns 0, or returns how long until there is one.
func (b *tokenBucket) take() (wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	tat := b.tat
	if tat.Before(now) {
		tat = now
	}
	if d := tat.Sub(now) - time.Duration(b.burst-1)*b.interval; d > 0 {
		return d
	}
	b.tat = tat.Add(b.interval)
	return 0
}

// rateLimited runs fn if bucket has a token, else answers 429
// rate_limited with Retry-After: the seconds until the next token.
// Authentication comes first (endpoint), so a client without the token
// cannot use up the bucket.
func rateLimited(bucket *tokenBucket, fn func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		if wait := bucket.take(); wait > 0 {
			secs := int((wait + time.Second - 1) / time.Second)
			return nil, &apiError{status: http.StatusTooManyRequests, code: "rate_limited",
				message:    "more than " + strconv.Itoa(adminDisconnectRate) + " disconnects per second on this node: retry later",
				retryAfter: secs}
		}
		return fn(r)
	}
}
