package poller

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Calls into the Handler. Each recovers a panic of the callback (see
// Handler): the deferred recover costs a few nanoseconds and nothing is
// allocated unless a panic happens.

func (c *Conn) callOpen() {
	defer c.recoverHandler("OnOpen")
	c.sh.handler.OnOpen(c)
}

func (c *Conn) callMessage(op ws.OpCode, msg []byte) {
	defer c.recoverHandler("OnMessage")
	c.sh.handler.OnMessage(c, op, msg)
}

func (c *Conn) callDeadline() {
	defer c.recoverHandler("OnDeadline")
	c.sh.handler.OnDeadline(c)
}

func (c *Conn) callClose(info CloseInfo) {
	defer c.recoverHandler("OnClose")
	c.sh.handler.OnClose(c, info)
}

// recoverHandler is deferred around every Handler call.
func (c *Conn) recoverHandler(callback string) {
	if v := recover(); v != nil {
		c.handlerPanicked(callback, v)
	}
}

// handlerPanicked logs a recovered panic with its stack, reports it to
// Config.OnPanic and starts closing c with 1011. It runs on the goroutine
// of the callback, which then goes on as if the callback had returned: a
// batch in progress ends and its frames are flushed.
func (c *Conn) handlerPanicked(callback string, v any) {
	c.sh.panics.log(c, callback, v)
	if f := c.sh.cfg.OnPanic; f != nil {
		f(v)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateOpen {
		err := fmt.Errorf("poller: %s panicked: %v", callback, v)
		c.startCloseLocked(CloseInfo{Reason: ClosePanic, Code: ws.StatusInternalServerError, Err: err},
			closeFrame(ws.StatusInternalServerError, "internal error"))
	}
}

// panicLog rate-limits the logs of recovered panics: a handler bug that a
// client can trigger must not flood the log. Every panic is still reported
// to Config.OnPanic.
type panicLog struct {
	mu         sync.Mutex
	next       time.Time // guarded by mu: no record before this
	suppressed int       // guarded by mu: panics not logged since the last record
}

// panicLogEvery is the least time between two panic records.
const panicLogEvery = time.Second

// log writes one record with the stack, unless one was written less than
// panicLogEvery ago. Called from the deferred recover, so the stack is the
// panicking callback's.
func (p *panicLog) log(c *Conn, callback string, v any) {
	now := time.Now()
	p.mu.Lock()
	if now.Before(p.next) {
		p.suppressed++
		p.mu.Unlock()
		return
	}
	p.next = now.Add(panicLogEvery)
	suppressed := p.suppressed
	p.suppressed = 0
	p.mu.Unlock()
	args := []any{"callback", callback, "conn", c.id, "remote", c.remote.String(),
		"panic", fmt.Sprint(v), "stack", string(debug.Stack())}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	c.sh.cfg.Logger.Error("poller: handler panicked; closing its connection with 1011", args...)
}
