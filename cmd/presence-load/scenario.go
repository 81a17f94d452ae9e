package main

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync/atomic"
	"time"
)

// scenario is what one -scenario does beyond connecting: the views its
// listeners keep, the driver that sends its changes, and what it checks at
// the end. Schedules are functions of the start time t0 that every
// process is given, so that a process can tell when a change it did not
// send was sent (typing on presenced carries no send time) and what the
// final state must be.
type scenario struct {
	w    *worker
	name string

	storm    bool // reconnect: lost connections are expected, not errors
	churn    bool
	changers int // changers of the run (fanout, typing, cluster), all processes
	nCuts    int // leave: how many conns are cut (victims: u0 .. u<nCuts-1>)

	// reconnect: views that are true now (owned conns); whether one turned
	// false in the measured phase; the first loss and the last time every
	// owned view became true again (unix ns).
	viewsTrue atomic.Int64
	disturbed atomic.Bool
	firstLoss atomic.Int64
	converged atomic.Int64

	// fanout, typing, cluster: the owned listeners, and how many of them
	// have seen every member of their room.
	listeners     int64
	viewsComplete atomic.Int64

	// leave: per cut, when and by how many of this process's observers it
	// was seen, and when this process cut it (its victims only).
	seenMax []atomic.Int64
	seenN   []atomic.Int64
	cutAt   []atomic.Int64
}

func newScenario(w *worker) *scenario {
	cfg := w.cfg
	sc := &scenario{w: w, name: cfg.scenario, storm: cfg.scenario == "reconnect", churn: cfg.scenario == "churn"}
	if cfg.hasChangers() {
		sc.changers = cfg.changers
	}
	if cfg.scenario == "leave" {
		sc.nCuts = min(cfg.conns, int(math.Ceil(cfg.duration.Seconds()*cfg.rate))-1)
		sc.nCuts = max(sc.nCuts, 0)
		sc.seenMax = make([]atomic.Int64, sc.nCuts)
		sc.seenN = make([]atomic.Int64, sc.nCuts)
		sc.cutAt = make([]atomic.Int64, sc.nCuts)
	}
	return sc
}

// view is what a listener knows of its room.
type view struct {
	last  []int64  // fanout, typing, cluster: per changer of the room (k / rooms), its last change index, -1: none
	bits  []uint64 // reconnect: the members present, by g / rooms
	n     int      // reconnect: bits set
	extra int      // reconnect: members outside the truth

	// fanout, typing, cluster: the members seen since connecting (by
	// their index in the room: listeners, then changers), how many, and
	// whether that is all of them. Never reset: nobody leaves before ready.
	seen     []uint64
	nSeen    int
	complete bool
}

func (v *view) reset() {
	for i := range v.last {
		v.last[i] = -1
	}
	clear(v.bits)
	v.n, v.extra = 0, 0
}

// initView sets up c's view.
func (sc *scenario) initView(c *client) {
	cfg := sc.w.cfg
	if c.g >= cfg.conns {
		return // changers keep no view
	}
	switch sc.name {
	case "fanout", "cluster":
		c.view.last = make([]int64, changersIn(cfg, c.g%cfg.rooms))
	case "reconnect":
		c.view.bits = make([]uint64, (membersIn(cfg, c.g%cfg.rooms)+63)/64)
	}
	if sc.changers > 0 {
		r := c.g % cfg.rooms
		c.view.seen = make([]uint64, (membersIn(cfg, r)+changersIn(cfg, r)+63)/64)
		sc.listeners++
		sc.markSeen(c, []byte(c.user)) // itself: not every server lists it
	}
	c.view.reset()
}

// membersIn is how many of the conns are in room r.
func membersIn(cfg *config, r int) int { return (cfg.conns - r + cfg.rooms - 1) / cfg.rooms }

// changersIn is how many changers are in room r.
func changersIn(cfg *config, r int) int { return (cfg.changers - r + cfg.rooms - 1) / cfg.rooms }

// onMember applies a member event to c's view.
func (sc *scenario) onMember(c *client, ev *event) {
	cfg := sc.w.cfg
	if c.g >= cfg.conns {
		return
	}
	room := c.g % cfg.rooms
	switch sc.name {
	case "fanout", "cluster":
		k, ok := changerIndex(ev.user)
		if !ok || k >= cfg.changers || k%cfg.rooms != room || ev.kind == evLeave {
			return
		}
		c.view.last[k/cfg.rooms] = statusIndex(ev.status)
		if c.inSync || ev.sentNs <= 0 || !sc.w.measuring() {
			return
		}
		if sc.name == "cluster" && len(sc.w.urls) > 1 && (cfg.conns+k)%len(sc.w.urls) == c.g%len(sc.w.urls) {
			return // same node: cluster times the changes that cross nodes
		}
		sc.w.latency.add(time.Duration(time.Now().UnixNano() - ev.sentNs))
	case "reconnect":
		i, ok := memberIndex(ev.user)
		if !ok || i >= cfg.conns || i%cfg.rooms != room {
			switch ev.kind {
			case evJoin:
				c.view.extra++
			case evLeave:
				c.view.extra = max(0, c.view.extra-1)
			}
			return
		}
		word, bit := (i/cfg.rooms)/64, uint64(1)<<((i/cfg.rooms)%64)
		switch has := c.view.bits[word]&bit != 0; {
		case ev.kind == evJoin && !has:
			c.view.bits[word] |= bit
			c.view.n++
		case ev.kind == evLeave && has:
			c.view.bits[word] &^= bit
			c.view.n--
		}
	case "leave":
		v, ok := memberIndex(ev.user)
		if ev.kind != evLeave || !ok || v >= sc.nCuts || c.g < sc.nCuts || c.inSync {
			return
		}
		atomicMax(&sc.seenMax[v], time.Now().UnixNano())
		sc.seenN[v].Add(1)
	}
}

// afterMessage runs after each message of c: typing transitions, and the
// truth of reconnect's views.
func (sc *scenario) afterMessage(c *client) {
	w := sc.w
	switch sc.name {
	case "typing":
		if c.g >= w.cfg.conns || c.typingNow == c.typingWas {
			return
		}
		changed := c.typingNow ^ c.typingWas
		c.typingWas = c.typingNow
		if !w.measuring() {
			return
		}
		now := time.Now().UnixNano()
		for k := 0; changed != 0; k++ {
			if changed&1 != 0 {
				w.live.deliveries.Add(1)
				if at := sc.typingSentAt(k, c.typingNow&(1<<k) != 0, now); at > 0 {
					w.latency.add(time.Duration(now - at))
				}
			}
			changed >>= 1
		}
	case "reconnect":
		if c.g >= w.cfg.conns {
			return
		}
		ok := c.joined && c.view.n == membersIn(w.cfg, c.g%w.cfg.rooms) && c.view.extra == 0
		sc.setViewOK(c, ok)
	}
}

func (sc *scenario) setViewOK(c *client, ok bool) {
	if ok == c.viewOK {
		return
	}
	c.viewOK = ok
	if !ok {
		sc.viewsTrue.Add(-1)
		if sc.w.measuring() {
			sc.disturbed.Store(true)
		}
		return
	}
	if sc.viewsTrue.Add(1) == int64(len(sc.w.clients)) && sc.disturbed.Load() {
		sc.converged.Store(time.Now().UnixNano())
	}
}

// onLost runs when c's session ends.
func (sc *scenario) onLost(c *client) {
	if sc.name != "reconnect" || sc.w.stopping() {
		return
	}
	if sc.w.measuring() {
		atomicMin(&sc.firstLoss, time.Now().UnixNano())
	}
	sc.setViewOK(c, false)
}

var errNoSession = errors.New("no session: the change was not sent")

// changeAt is when change j of the run is due.
func (w *worker) changeAt(j int) int64 {
	return w.t0 + int64(float64(j)/w.cfg.rate*1e9)
}

// typingSentAt is when typer k last switched to on (as seen at now): its
// toggles are changes k, k+K, k+2K, ... alternating on, off, on; after the
// run every typer switches off at t0+D.
func (sc *scenario) typingSentAt(k int, on bool, now int64) int64 {
	w, K := sc.w, sc.changers
	end := w.t0 + int64(w.cfg.duration)
	if !on && now >= end {
		return end
	}
	m := int((float64(now-w.t0)/1e9*w.cfg.rate - float64(k)) / float64(K))
	for ; m >= 0; m-- {
		if (m%2 == 0) == on {
			return w.changeAt(k + m*K)
		}
	}
	return 0
}

// drive sends this process's share of the scenario's changes from t0 to
// t0+duration.
func (sc *scenario) drive(ctx context.Context) {
	w, cfg := sc.w, sc.w.cfg
	end := w.t0 + int64(cfg.duration)
	for j := 0; ; j++ {
		at := w.changeAt(j)
		if sc.name == "leave" {
			at = w.changeAt(j + 1) // the first cut one period in
		}
		if at >= end || ctx.Err() != nil || (sc.name == "leave" && j >= sc.nCuts) {
			break
		}
		var g int
		switch sc.name {
		case "fanout", "typing", "cluster":
			g = cfg.conns + j%sc.changers
		case "churn", "leave":
			g = j % cfg.conns
		default:
			return
		}
		c := w.owned(g)
		if c == nil {
			continue
		}
		if !sleepCtx(ctx, time.Until(time.Unix(0, at))) {
			return
		}
		sc.act(c, j, at)
		if sc.changers > 0 { // how late the change left: its write done vs its schedule
			w.sendLag.add(time.Duration(time.Now().UnixNano() - at))
		}
	}
	if sc.name == "typing" { // every typer stops: the final state is nobody typing
		sleepCtx(ctx, time.Until(time.Unix(0, end)))
		for k := range sc.changers {
			if c := w.owned(cfg.conns + k); c != nil {
				sc.send(c, func(dst []byte, _ uint32) []byte {
					return c.proto.Typing(dst, c.room, c.user, false, time.Now().UnixNano())
				})
			}
		}
	}
}

// act is change j, by c, scheduled at (unix ns). A change carries its
// scheduled time, not the time it left: a driver that falls behind (a
// blocked write) shows in the latency, not only in the send lag.
func (sc *scenario) act(c *client, j int, at int64) {
	switch sc.name {
	case "fanout", "cluster":
		status := "s" + strconv.Itoa(j)
		sc.send(c, func(dst []byte, id uint32) []byte {
			return c.proto.Set(dst, id, c.room, c.user, status, at)
		})
	case "typing":
		on := (j/sc.changers)%2 == 0
		sc.send(c, func(dst []byte, _ uint32) []byte {
			return c.proto.Typing(dst, c.room, c.user, on, at)
		})
	case "churn":
		if c.pendID.Load() != 0 {
			return // the previous command of c is still unanswered
		}
		join := !c.inRoom.Load()
		c.inRoom.Store(join)
		c.pendAt.Store(time.Now().UnixNano())
		id, _ := sc.send(c, func(dst []byte, id uint32) []byte {
			c.pendID.Store(id)
			if join {
				return c.proto.Join(dst, id, c.room, c.status)
			}
			return c.proto.Leave(dst, id, c.room)
		})
		if id == 0 {
			c.pendID.Store(0)
		}
	case "leave":
		c.wasCut.Store(true)
		sc.cutAt[j].Store(time.Now().UnixNano())
		c.closeWS(true)
	}
}

// send sends a command of the scenario by c. A changer without a session
// misses its change: an error (listeners would only show it as stale).
func (sc *scenario) send(c *client, build func(dst []byte, id uint32) []byte) (uint32, error) {
	id, err := c.send(build)
	if err == nil && id == 0 && c.g >= sc.w.cfg.conns {
		err = errNoSession
	}
	if err != nil && !sc.w.stopping() {
		sc.w.fail(c, "send", err)
	}
	if id != 0 && err == nil { // written: reached the server's socket
		sc.w.live.sent.Add(1)
	}
	return id, err
}

// stale counts the owned listeners whose view is not the truth at the end.
func (sc *scenario) stale() int64 {
	w, cfg := sc.w, sc.w.cfg
	var n int64
	for _, c := range w.clients {
		if c.g >= cfg.conns {
			continue
		}
		switch sc.name {
		case "fanout", "cluster":
			for i, last := range c.view.last {
				if last != sc.finalChange(c.g%cfg.rooms+i*cfg.rooms) {
					n++
					break
				}
			}
		case "typing":
			if c.typingNow != 0 {
				n++
			}
		case "reconnect":
			if !c.viewOK {
				n++
			}
		}
	}
	return n
}

// finalChange is the last change of changer k (-1: none).
func (sc *scenario) finalChange(k int) int64 {
	cfg := sc.w.cfg
	total := int(math.Ceil(cfg.duration.Seconds() * cfg.rate)) // changes j with j/rate < D
	for total > 0 && sc.w.changeAt(total-1) >= sc.w.t0+int64(cfg.duration) {
		total--
	}
	if total <= k {
		return -1
	}
	return int64(k + (total-1-k)/sc.changers*sc.changers)
}
