package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Run sends what is queued once per tick until ctx is done, then gives
// what is still queued one last attempt (at most a couple of seconds) and
// returns. Call it once. With the default client, it closes the client's
// idle connections on return: no goroutine of the sender outlives it.
func (s *Sender) Run(ctx context.Context) error {
	if s.own != nil {
		defer s.own.CloseIdleConnections()
	}
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.final(nil)
			return nil
		case <-t.C:
		}
		// A backlog goes out in consecutive batches, not one per tick.
		for ctx.Err() == nil {
			batch := s.take(s.cfg.MaxBatch)
			if batch == nil {
				break
			}
			if !s.deliver(ctx, batch) {
				// Stopped while retrying it: it goes first in the last
				// attempt, before the events queued behind it.
				s.final(batch)
				return nil
			}
		}
	}
}

// final makes one attempt, bounded by finalTry, at pending (a batch
// deliver did not finish) and then at what is queued. At the first batch
// that fails it drops that batch and everything behind it, counted.
func (s *Sender) final(pending []Payload) {
	ctx, cancel := context.WithTimeout(context.Background(), finalTry)
	defer cancel()
	batch := pending
	for {
		if batch == nil {
			if batch = s.take(s.cfg.MaxBatch); batch == nil {
				return
			}
		}
		body, err := encode(batch)
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			if err = s.post(ctx, body); err != nil && !errors.Is(err, errRejected) {
				s.m.requests.WithLabelValues(reqFailed).Inc()
			}
		}
		if err == nil || errors.Is(err, errRejected) {
			s.done(batch, err)
			batch = nil
			continue
		}
		n := len(batch) + len(s.take(s.cfg.Queue))
		s.log.Warn("webhook: events dropped at shutdown", "events", n, "err", err)
		s.fail(n)
		return
	}
}

// deliver POSTs batch until the receiver takes it, refuses it (a 4xx but
// 429, or a 3xx), or MaxAttempts were made: then it reports true (done
// with). It reports false if ctx ended first: the batch is still to be
// sent.
func (s *Sender) deliver(ctx context.Context, batch []Payload) (done bool) {
	body, encErr := encode(batch) // once: each attempt only signs again
	for n := 1; ; n++ {
		err := encErr
		if err == nil {
			err = s.post(ctx, body)
		}
		switch {
		case err == nil || errors.Is(err, errRejected):
			s.done(batch, err)
			return true
		case ctx.Err() != nil:
			s.m.requests.WithLabelValues(reqRetry).Inc() // by final
			return false
		case n >= s.cfg.MaxAttempts:
			s.m.requests.WithLabelValues(reqFailed).Inc()
			s.log.Warn("webhook: batch dropped after retries", "events", len(batch), "attempts", n, "err", err)
			s.fail(len(batch))
			return true
		}
		s.m.requests.WithLabelValues(reqRetry).Inc()
		s.log.Debug("webhook: POST failed, will retry", "err", err)
		wait := retryWait(s.jitter(backoff(s.cfg.MinBackoff, s.cfg.MaxBackoff, n-1)), err, s.cfg.MaxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// backoff is the longest wait before retry n (0 the first):
// min(hi, lo × 2^n), computed without overflow.
func backoff(lo, hi time.Duration, n int) time.Duration {
	c := lo
	for range n {
		if c > hi/2 { // 2c > hi; else 2c <= hi does not overflow
			return hi
		}
		c *= 2
	}
	return min(c, hi)
}

// retryWait is the wait before the next attempt: drawn (the jittered
// backoff), or longer if the receiver asked for it with Retry-After (on
// a 429 or 503), but never longer than ceiling (MaxBackoff): a receiver
// cannot hold the queue for hours.
func retryWait(drawn time.Duration, err error, ceiling time.Duration) time.Duration {
	var later *retryLater
	if errors.As(err, &later) {
		return max(drawn, min(later.after, ceiling))
	}
	return drawn
}

// retryLater is a 429 or 503 whose Retry-After asked for a wait.
type retryLater struct {
	status int
	after  time.Duration
}

func (e *retryLater) Error() string {
	return fmt.Sprintf("webhook: status %d, Retry-After %v", e.status, e.after)
}

// parseRetryAfter reads a Retry-After value (RFC 9110 10.2.3): seconds
// (digits only; too many for an int64 mean the longest wait, RFC 9111
// 1.2.2), or an HTTP date; 0 if absent, malformed or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil { // out of range
			secs = math.MaxInt64
		}
		return time.Duration(min(secs, int64(math.MaxInt64/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// done counts a batch the receiver took (err nil) or refused for good
// (errRejected).
func (s *Sender) done(batch []Payload, err error) {
	if err == nil {
		s.m.requests.WithLabelValues(reqOK).Inc()
		s.m.events.WithLabelValues(resultSent).Add(float64(len(batch)))
		return
	}
	s.m.requests.WithLabelValues(reqRejected).Inc()
	s.log.Warn("webhook: receiver refused a batch", "events", len(batch), "err", err)
	s.fail(len(batch))
}

func (s *Sender) fail(n int) {
	s.m.events.WithLabelValues(resultDroppedFailed).Add(float64(n))
}

// errRejected: the receiver refused the batch (a 4xx other than 429, or a
// 3xx: redirects are not followed).
var errRejected = errors.New("webhook: rejected")

// encode is the body of batch (a JSON array).
func encode(batch []Payload) ([]byte, error) {
	body, err := json.Marshal(batch)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errRejected, err) // cannot happen: plain strings and ints
	}
	return body, nil
}

// post POSTs body once, signed with a fresh timestamp: nil if the
// receiver took it, errRejected if it refused it for good, another error
// if it may be tried again.
func (s *Sender) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", errRejected, err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "presenced")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, SignKeys(s.keys, ts, body))
	start := time.Now()
	resp, err := s.cfg.Client.Do(req)
	s.m.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusTooManyRequests || c == http.StatusServiceUnavailable:
		if after := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); after > 0 {
			return &retryLater{status: c, after: after}
		}
		return fmt.Errorf("webhook: status %d", c)
	case c >= 500:
		return fmt.Errorf("webhook: status %d", c)
	case c >= 300 && c < 400:
		return fmt.Errorf("%w: status %d: redirects are not followed (Location %q)", errRejected, c, resp.Header.Get("Location"))
	default:
		return fmt.Errorf("%w: status %d", errRejected, c)
	}
}
