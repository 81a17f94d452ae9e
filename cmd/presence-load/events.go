package main

import (
	"errors"
	"strconv"
	"time"
)

// onEvent is the part of the event handling common to every scenario; the
// rest is the scenario's.
func (c *client) onEvent(ev *event) {
	w := c.w
	switch ev.kind {
	case evWelcome:
		c.welcomed = true
		return
	case evErr:
		w.fail(c, "err", errors.New(ev.code))
		if ev.id != 0 && ev.id == c.joinID {
			c.settle() // its room refused it: do not wait for it
		}
		return
	case evBye:
		c.retryMS = ev.retryMS
		return
	case evAck:
		if id := ev.id; id != 0 && id == c.pendID.Load() { // churn
			c.pendID.Store(0)
			w.latency.add(time.Duration(time.Now().UnixNano() - c.pendAt.Load()))
			if c.inRoom.Load() {
				w.live.joins.Add(1)
			}
		}
		return
	}
	if ev.kind == evSync && len(ev.room) == 0 {
		// Centrifugo's subscribe reply names no channel: it answers this
		// client's join, and a client joins only its own room.
		ev.room = append(ev.room, c.room...)
	}
	if string(ev.room) != c.room {
		return
	}
	switch ev.kind {
	case evSync:
		c.inSync = true
		c.cur = append(c.cur[:0], ev.cur...)
		if ev.partial {
			w.live.partial.Add(1)
		}
		c.view.reset()
		c.typingNow = 0
		c.gotRoom()
	case evDiff:
		c.inSync = false
		if c.resuming && string(ev.from) == string(c.cur) {
			w.live.resumes.Add(1)
			c.gotRoom()
		} else if c.joined && string(ev.from) != string(c.cur) {
			w.fail(c, "diff", errors.New("broken cursor chain"))
		}
		c.cur = append(c.cur[:0], ev.cur...)
	case evJoin, evChange, evLeave:
		if ev.kind == evJoin {
			w.joinEvents.Add(1)
		}
		if ev.kind != evLeave && c.view.seen != nil {
			w.sc.markSeen(c, ev.user)
		}
		if !c.inSync && c.g < w.cfg.conns && w.measuring() && w.sc.isDelivery(ev) { // changers are not counted
			w.live.deliveries.Add(1)
		}
		w.sc.onMember(c, ev)
	case evTyping:
		if len(ev.user) == 0 {
			c.typingNow = 0
		} else if k, ok := changerIndex(ev.user); ok && k < 64 {
			if ev.on {
				c.typingNow |= 1 << k
			} else {
				c.typingNow &^= 1 << k
			}
		}
	}
}

// gotRoom records that the session holds the room's state.
func (c *client) gotRoom() {
	if c.joined {
		return
	}
	c.joined, c.resuming = true, false
	c.w.live.joins.Add(1)
	c.mu.Lock()
	if c.ws != nil {
		c.ws.nc.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
	if !c.everJoin {
		c.everJoin = true
		c.w.live.joined.Add(1)
		c.settle()
	}
}

// settle counts c in worker.settled, once.
func (c *client) settle() {
	if !c.settled {
		c.settled = true
		c.w.settle()
	}
}

// memberIndex parses "u<i>".
func memberIndex(user []byte) (int, bool) { return indexAfter(user, 'u') }

// changerIndex parses "c<k>".
func changerIndex(user []byte) (int, bool) { return indexAfter(user, 'c') }

func indexAfter(user []byte, prefix byte) (int, bool) {
	if len(user) < 2 || user[0] != prefix || len(user) > 11 {
		return 0, false
	}
	n := 0
	for _, b := range user[1:] {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int(b-'0')
	}
	return n, true
}

// statusIndex parses "s<j>", the status of change j; -1 for any other.
func statusIndex(status []byte) int64 {
	if j, ok := indexAfter(status, 's'); ok {
		return int64(j)
	}
	return -1
}

func userName(cfg *config, g int) string {
	if g < cfg.conns {
		return "u" + strconv.Itoa(g)
	}
	return "c" + strconv.Itoa(g-cfg.conns)
}
