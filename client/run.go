package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/gobwas/ws"

	"github.com/presenced/presenced/internal/wire"
)

// run is the client's goroutine: it reads the connection s, and when s
// ends decides whether and when to reconnect, reconnects, and reads the new
// connection. It returns when the client is closed or stops on a terminal
// close code.
func (c *Client) run(s *session) {
	defer c.finish()
	attempt := 0         // failures since the backoff was last reset
	authRetried := false // a fresh token was tried after 4003/4101 since the last welcome
	for {
		l := c.serve(s)
		c.drop(s, l)
		if c.ctx.Err() != nil {
			return
		}
		if time.Since(s.welcomed) >= stableAfter {
			attempt = 0
		}
		for {
			delay, tok, terminal := c.decide(l, &attempt, &authRetried)
			if c.ctx.Err() != nil {
				return
			}
			c.stats.disconnects.Add(1)
			if terminal != nil {
				c.stop(l, terminal)
				return
			}
			c.log.Info("client: disconnected", logKeyCode, int(l.code), logKeyErr, l.err, logKeyDelay, delay)
			c.emit(Event{Kind: EventDisconnected, Close: l.code, Err: l.err, RetryIn: delay})
			if !c.sleep(delay) {
				return
			}
			ns, used, err := c.connect(c.ctx, tok)
			if err != nil {
				if c.ctx.Err() != nil {
					return
				}
				l = lossOf(err, used)
				continue
			}
			if !c.adopt(ns) {
				ns.sendClose(ws.StatusNormalClosure)
				ns.release()
				return
			}
			s = ns
			authRetried = false
			break
		}
	}
}

// decide says what to do after l: reconnect after delay, with tok when not
// "" (a fresh token already fetched), or stop with a terminal error.
func (c *Client) decide(l loss, attempt *int, authRetried *bool) (delay time.Duration, tok string, terminal error) {
	if l.code != 0 {
		ce, ok := errors.AsType[*CloseError](l.err)
		if !ok {
			ce = &CloseError{Code: l.code}
		}
		switch l.code {
		case CloseTokenExpired, CloseUnauthorized:
			if c.cfg.TokenFunc == nil || *authRetried {
				return 0, "", ce
			}
			*authRetried = true
			if l.code == CloseUnauthorized {
				fresh, err := c.cfg.TokenFunc(c.ctx)
				if err != nil {
					return 0, "", fmt.Errorf("%w (new token: %w)", ce, err)
				}
				if fresh == l.token {
					return 0, "", ce
				}
				tok = fresh
			}
			return c.nextBackoff(attempt), tok, nil
		}
		if !wire.Reconnect(wire.CloseCode(l.code)) {
			return 0, "", ce
		}
	}
	if l.byeSeen {
		// A drain: come back after retry_ms plus a little jitter; not a
		// failure, so the backoff does not grow.
		return l.bye + time.Duration(c.rnd(int64(c.cfg.MinBackoff)+1)), "", nil
	}
	return c.nextBackoff(attempt), "", nil
}

func (c *Client) nextBackoff(attempt *int) time.Duration {
	d := backoff(*attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff, c.rnd)
	*attempt++
	return d
}

// backoff is the delay before reconnect attempt n (0 for the first): full
// jitter, a uniform random duration in [0, min(maxDelay, minDelay·2ⁿ)].
// rnd returns a random number in [0, n).
func backoff(attempt int, minDelay, maxDelay time.Duration, rnd func(int64) int64) time.Duration {
	if minDelay <= 0 || maxDelay <= 0 {
		return 0
	}
	ceil := maxDelay
	if attempt < 0 {
		attempt = 0
	}
	if attempt < 63 && minDelay <= maxDelay>>attempt {
		ceil = minDelay << attempt
	}
	return time.Duration(rnd(int64(ceil) + 1))
}

// sleep waits d, or until the client is closed (false).
func (c *Client) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// drop forgets the connection s: commands that are not re-sent after a
// reconnect fail with ErrDisconnected, gap syncs are forgotten.
func (c *Client) drop(s *session, l loss) {
	var failed []*pending
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
	}
	if c.state != StateClosed {
		c.state = StateReconnecting
	}
	for id, p := range c.pending {
		if !p.resend {
			delete(c.pending, id)
			failed = append(failed, p)
		}
	}
	for _, r := range c.rooms {
		r.syncing = false
	}
	c.mu.Unlock()
	for _, p := range failed {
		if p.done != nil {
			p.done <- ErrDisconnected
		}
	}
	c.log.Debug("client: connection ended", logKeyCode, int(l.code), logKeyErr, l.err)
}

// stop records a terminal error and reports it.
func (c *Client) stop(l loss, err error) {
	c.mu.Lock()
	if c.err == nil && !c.closing {
		c.err = err
	}
	c.final = true
	c.mu.Unlock()
	c.log.Warn("client: stopped", logKeyCode, int(l.code), logKeyErr, err)
	c.emit(Event{Kind: EventDisconnected, Close: l.code, Err: err, Terminal: true})
}

// finish ends the client: it stops the refresh goroutines, fails every
// pending command, closes the Events channel and then Done.
func (c *Client) finish() {
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	if c.err == nil {
		c.err = ErrClosed
	}
	c.state = StateClosed
	c.sess = nil
	err := c.stoppedLocked()
	failed := make([]*pending, 0, len(c.pending))
	for id, p := range c.pending {
		delete(c.pending, id)
		failed = append(failed, p)
	}
	final := c.final
	c.final = true
	c.mu.Unlock()
	for _, p := range failed {
		if p.done != nil {
			p.done <- err
		}
	}
	if !final {
		c.emit(Event{Kind: EventDisconnected, Close: CloseNormal, Err: ErrClosed, Terminal: true})
	}
	if c.events != nil {
		c.evMu.Lock()
		c.evClosed = true
		close(c.events)
		c.evMu.Unlock()
	}
	close(c.done)
}
