package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// client is one simulated connection and the sessions it opens: it
// connects, says hello, joins its room and then reads until the
// connection ends; lost connections are reopened with backoff and
// jitter (after bye's retry_ms when the server sent one), resuming the room
// from the cursor. One goroutine (run) owns it; the scenario's driver sends
// commands through send.
type client struct {
	w      *worker
	g      int    // global index: members and listeners "u<g>" (g < conns), changers "c<g-conns>"
	user   string // static
	room   string // static
	status string // static: the status it joins with
	url    int    // owned by run: index of the URL of the current session
	proto  protocol
	onEv   func(*event) // c.onEvent, made once

	mu     sync.Mutex // guards ws, wbuf and nextID: the driver and the reader both send
	ws     *wsConn    // nil between sessions
	wbuf   []byte
	nextID uint32

	// Owned by run (the reader).
	welcomed  bool
	joined    bool // this session has the room's state (sync, or a resumed diff)
	resuming  bool // the hello resumed the room: a diff from cur means it worked
	inSync    bool // the events of a sync are being reported
	cur       []byte
	retryMS   int64  // the last bye's retry_ms, -1: none
	everJoin  bool   // joined its room once
	settled   bool   // counted in worker.settled (joined, or gave up)
	joinID    uint32 // the session's join command (0: resumed instead)
	view      view
	typingWas uint64 // typing: the set before the current message
	typingNow uint64

	// Used by the driver.
	inRoom atomic.Bool   // churn: joined (toggled by the driver)
	pendID atomic.Uint32 // churn: the command whose ack is timed
	pendAt atomic.Int64  // churn: when it was sent, unix ns
	wasCut atomic.Bool   // leave: cut on purpose, never reopened
	viewOK bool          // reconnect: the view was true after the last message (owned by run)
}

// send builds a command with build (given the next command id) and sends
// it; it returns the id, or 0 when the client has no session.
func (c *client) send(build func(dst []byte, id uint32) []byte) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws == nil {
		return 0, nil
	}
	c.nextID++
	id := c.nextID
	c.wbuf = build(c.wbuf[:0], id)
	return id, c.ws.writeText(c.wbuf)
}

// sendRaw sends p (a reply the protocol built).
func (c *client) sendRaw(p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws == nil {
		return nil
	}
	return c.ws.writeText(p)
}

// closeWS closes the current session's socket (cut: with an RST).
func (c *client) closeWS(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws == nil {
		return
	}
	if cut {
		c.ws.cut()
	} else {
		c.ws.close()
	}
}

// run is the client's life: the first connection (up to three attempts,
// each failure an error), then sessions until the worker stops.
func (c *client) run(ctx context.Context) {
	w := c.w
	c.retryMS = -1
	for attempt := 0; ; attempt++ {
		if !w.admit(ctx) {
			c.settle()
			return
		}
		err := c.open(ctx, false)
		w.release()
		if err == nil {
			break
		}
		if w.stopping() {
			c.settle()
			return
		}
		w.fail(c, "connect", err)
		if attempt == 2 {
			c.settle()
			return
		}
		sleepCtx(ctx, backoff(attempt))
	}
	defer c.settle() // a client that never joins does not hold up ready
	for {
		err := c.read()
		c.lost()
		if w.stopping() || c.wasCut.Load() {
			return
		}
		var ce *closeError
		if errors.As(err, &ce) && !reconnectAllowed(ce.code) {
			w.fail(c, "closed", err)
			return
		}
		if !w.sc.storm {
			w.fail(c, "connection lost", err)
		}
		wait := backoff(0)
		if c.retryMS >= 0 {
			wait = time.Duration(c.retryMS)*time.Millisecond + rand.N(250*time.Millisecond)
		}
		for n := 1; ; n++ {
			if !sleepCtx(ctx, wait) || w.stopping() {
				return
			}
			if len(w.urls) > 1 { // another node, when there is one
				c.url = (c.url + 1) % len(w.urls)
			}
			if err := c.open(ctx, true); err == nil {
				w.live.reconnects.Add(1)
				break
			}
			wait = backoff(n)
		}
	}
}

// reconnectAllowed reads the contract's close code table: 1000, protocol
// errors and 4100-4199 forbid a reconnect.
func reconnectAllowed(code int) bool {
	switch {
	case code == 1000, code == 1002, code == 1003, code == 1007, code == 1009:
		return false
	case code >= 4100 && code <= 4199:
		return false
	}
	return true
}

var errStopping = errors.New("the run is over")

// backoff is a random delay in [0, min(30 s, 0.5 s · 2^n)].
func backoff(n int) time.Duration {
	limit := min(30*time.Second, 500*time.Millisecond<<min(n, 6))
	return rand.N(limit + 1)
}

// sleepCtx sleeps for d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// open starts a session: dial, hello (resuming the room when the protocol
// can and reopen is set), join, and read until the welcome.
func (c *client) open(ctx context.Context, reopen bool) error {
	w := c.w
	start := time.Now()
	// Dial on a goroutine of its own: the deep stack of dialing and the
	// upgrade goes with it, and this long-lived goroutine, which only
	// reads, keeps a small one.
	type dialed struct {
		ws  *wsConn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		ws, err := dialWS(ctx, w.urls[c.url], w.source(c.g), 10*time.Second)
		ch <- dialed{ws, err}
	}()
	d := <-ch
	ws, err := d.ws, d.err
	if err != nil {
		return err
	}
	token, err := w.token(c.user)
	if err != nil {
		ws.close()
		return err
	}
	c.welcomed, c.joined, c.inSync = false, false, false
	c.retryMS = -1
	r, canResume := c.proto.(resumer)
	c.resuming = reopen && canResume
	c.joinID = 0
	c.mu.Lock()
	if w.stopping() { // worker.run closes the sessions it sees: do not start one after
		c.mu.Unlock()
		ws.close()
		return errStopping
	}
	c.ws = ws
	if c.resuming {
		c.wbuf = r.HelloResume(c.wbuf[:0], c.user, token, c.room, c.cur, c.status)
		err = ws.writeText(c.wbuf)
	} else {
		c.wbuf = c.proto.Hello(c.wbuf[:0], c.user, token)
		if err = ws.writeText(c.wbuf); err == nil && (!w.sc.churn || c.inRoom.Load() || !reopen) {
			c.nextID++
			c.joinID = c.nextID
			c.wbuf = c.proto.Join(c.wbuf[:0], c.nextID, c.room, c.status)
			err = ws.writeText(c.wbuf)
		}
	}
	c.mu.Unlock()
	w.live.open.Add(1)
	if !reopen {
		atomicMin(&w.firstDial, start.UnixNano())
	}
	ws.nc.SetReadDeadline(time.Now().Add(30 * time.Second)) // cleared once joined
	for err == nil && !c.welcomed {
		err = c.readOne()
	}
	if err != nil {
		c.lost()
		return err
	}
	if !reopen {
		atomicMax(&w.lastConnect, time.Now().UnixNano())
		w.live.connected.Add(1)
	}
	return nil
}

// lost ends the session.
func (c *client) lost() {
	c.mu.Lock()
	ws := c.ws
	c.ws = nil
	c.mu.Unlock()
	if ws == nil {
		return
	}
	ws.close()
	c.w.live.open.Add(-1)
	c.w.sc.onLost(c)
}

// read reads the session until it ends.
func (c *client) read() error {
	for {
		if err := c.readOne(); err != nil {
			return err
		}
	}
}

// readOne reads one message and reports its events.
func (c *client) readOne() error {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws == nil {
		return errors.New("no session")
	}
	msg, err := ws.next()
	if err != nil {
		return err
	}
	w := c.w
	if w.measuring() {
		w.live.messages.Add(1)
	}
	c.inSync = false
	reply, err := c.proto.Parse(msg, c.onEv)
	if err != nil {
		w.fail(c, "parse", err)
		return nil
	}
	w.sc.afterMessage(c)
	if reply != nil {
		return c.sendRaw(reply)
	}
	return nil
}
