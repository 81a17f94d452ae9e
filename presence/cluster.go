package presence

import (
	"sync/atomic"
	"time"
)

// This file holds what a Hub with a Bus adds to the single node: the other
// nodes' holds on each member, the version of this node's own hold, and
// the bookkeeping of what to publish. Without a Bus, room.cl and member.cl
// stay nil and none of it runs.
//
// A member is present while a holder holds it: local connections
// (conns > 0), a local lost connection's leave grace, another node, or the
// grace a node's death leaves behind (downGrace). Its state (m.st, what
// clients see) is the newest holder's, by Holding.Version; a holding
// node adopts a newer state set elsewhere and publishes it, so every
// holder keeps the member's last state (it survives the node that set
// it).

// holders is a member's cluster state. Guarded by the room's mu. While
// this node holds the member, m.st is also this node's state of it, at
// version ver: a holder adopts any newer state (effectiveLocked), so its
// own and the member's are the same. The rest is allocated only while
// needed: an idle member only this node holds costs 16 bytes.
type holders struct {
	ver uint64    // the version of m.st as this node holds it
	x   *holdersX // nil while all its fields would be zero
}

// holdersX is the part of holders an idle local member does without.
type holdersX struct {
	remote      []remoteHold // other nodes holding the member
	typingUntil int64        // hub clock: this node's typing ends; 0 when not typing here
	dirty       bool         // in r.cl.dirty: the local holding changed since the last publish
	downGrace   bool         // the grace running is a dead node's, not a local hold
}

func (h *holders) remote() []remoteHold {
	if h.x == nil {
		return nil
	}
	return h.x.remote
}

func (h *holders) typingUntil() int64 {
	if h.x == nil {
		return 0
	}
	return h.x.typingUntil
}

func (h *holders) dirty() bool { return h.x != nil && h.x.dirty }

func (h *holders) downGrace() bool { return h.x != nil && h.x.downGrace }

// extra is h.x when h is not nil (a member with a Bus), else nil.
func (h *holders) extra() *holdersX {
	if h == nil {
		return nil
	}
	return h.x
}

// more is h.x, allocated if needed, to write.
func (h *holders) more() *holdersX {
	if h.x == nil {
		h.x = &holdersX{}
	}
	return h.x
}

// trim frees h.x once every field is zero.
func (h *holders) trim() {
	if x := h.x; x != nil && len(x.remote) == 0 && x.typingUntil == 0 && !x.dirty && !x.downGrace {
		h.x = nil
	}
}

// dropRemote removes the remote hold at i.
func (h *holders) dropRemote(i int) {
	x := h.x
	x.remote = append(x.remote[:i], x.remote[i+1:]...)
	if len(x.remote) == 0 {
		x.remote = nil
	}
}

// remoteHold is another node's hold on a member.
type remoteHold struct {
	node        string
	st          memberState
	ver         uint64
	typingUntil int64 // hub clock; 0 when not typing there
}

// roomCluster is a room's cluster state. Guarded by the room's mu.
type roomCluster struct {
	dirty      []*member // members whose local holding changed this tick, in order (possibly since removed)
	full       bool      // publish every local holding at the next flush (Hub.Republish)
	watched    bool      // Bus.Watch was called, Bus.Unwatch not yet
	loadUntil  int64     // hub clock: syncs wait for Hub.Loaded until then; 0 once loaded
	unsubbedAt int64     // hub clock: the last local subscriber left; 0 while there are subscribers
}

// hlc is a hybrid logical clock: wall milliseconds in the high 48 bits and
// a counter in the low 16, never going back and always above every
// version observed from other nodes, so versions order a member's states
// across nodes even with skewed clocks.
type hlc struct{ last atomic.Uint64 }

func (c *hlc) next() uint64 {
	wall := uint64(time.Now().UnixMilli()) << 16
	for {
		old := c.last.Load()
		v := max(wall, old+1)
		if c.last.CompareAndSwap(old, v) {
			return v
		}
	}
}

func (c *hlc) observe(v uint64) {
	for {
		old := c.last.Load()
		if v <= old || c.last.CompareAndSwap(old, v) {
			return
		}
	}
}

// newer reports whether state a at version va beats b at vb. Equal versions
// are ordered by content, so every node picks the same.
func newer(a memberState, va uint64, b memberState, vb uint64) bool {
	if va != vb {
		return va > vb
	}
	if a.status != b.status {
		return a.status > b.status
	}
	return a.meta > b.meta
}

// localHeld reports whether this node holds m: a local connection joined,
// or a local lost connection's grace runs.
func (m *member) localHeld() bool {
	return m.conns > 0 || m.graceUntil != 0 && !m.cl.downGrace()
}

// held reports whether anyone holds m, or a grace keeps it.
func (m *member) held() bool {
	return m.conns > 0 || m.graceUntil != 0 || len(m.cl.remote()) > 0
}

func (m *member) remoteAt(node string) int {
	for i, h := range m.cl.remote() {
		if h.node == node {
			return i
		}
	}
	return -1
}

// dirtyLocked records that m's local holding changed: the next flush
// publishes it.
func (r *room) dirtyLocked(m *member) {
	if !m.cl.dirty() {
		m.cl.more().dirty = true
		r.cl.dirty = append(r.cl.dirty, m)
		r.markLocked()
	}
}

// setLocalLocked makes st, at a new version (the newest), this node's
// state of m and so the member's.
func (r *room) setLocalLocked(m *member, st memberState) {
	m.cl.ver = r.hub.clock.next()
	r.dirtyLocked(m)
	old, new := snap{present: true, st: m.st}, snap{present: true, st: st}
	if !old.equal(new) {
		m.st = st
		r.changeLocked(m.user, old, new)
	}
}

// effectiveLocked sets m.st to its newest holder's state and records the
// change. A member nobody holds (in a grace) keeps its state.
func (r *room) effectiveLocked(m *member) {
	var st memberState
	var ver uint64
	found := false
	if m.localHeld() {
		st, ver, found = m.st, m.cl.ver, true
	}
	for _, h := range m.cl.remote() {
		if !found || newer(h.st, h.ver, st, ver) {
			st, ver, found = h.st, h.ver, true
		}
	}
	if !found {
		return
	}
	if m.localHeld() && (ver != m.cl.ver || st != m.st) {
		// The member's state is one register that every holder keeps:
		// this node adopts the newest and publishes it, so the state
		// survives the death of the node that set it.
		m.cl.ver = ver
		r.dirtyLocked(m)
	}
	old, new := snap{present: true, st: m.st}, snap{present: true, st: st}
	if !old.equal(new) {
		m.st = st
		r.changeLocked(m.user, old, new)
	}
}

// retypeLocked sets m's typing entry to the latest typing of its holders.
func (r *room) retypeLocked(m *member, now int64) {
	if x := m.cl.x; x != nil && x.typingUntil != 0 && x.typingUntil <= now {
		x.typingUntil = 0 // this node's typing is over
	}
	until := m.cl.typingUntil()
	for _, h := range m.cl.remote() {
		until = max(until, h.typingUntil)
	}
	switch {
	case until > now && m.typingOn():
		r.typing[m.typingAt].until = until
	case until > now:
		m.typingAt = int32(len(r.typing))
		r.typing = append(r.typing, typist{m: m, until: until})
		r.typingChangedLocked()
	case m.typingOn():
		r.stopTypingLocked(m)
	}
}

// releaseLocked is called when a hold on m ended: m goes if nobody holds it
// any more, else shows its newest remaining holder's state.
func (r *room) releaseLocked(m *member, now int64) {
	defer m.cl.trim()
	if !m.held() {
		r.removeMemberLocked(m)
		return
	}
	r.effectiveLocked(m)
	r.retypeLocked(m, now)
}

// holding is this node's holding of m, as published.
func (m *member) holding(now int64) Holding {
	if !m.localHeld() {
		return Holding{User: m.user}
	}
	h := Holding{User: m.user, Held: true, Status: m.st.status, Meta: m.st.meta, Version: m.cl.ver}
	if until := m.cl.typingUntil(); until > now {
		h.Typing = time.Duration(until - now)
	}
	return h
}

// publishBusLocked hands the tick's changed local holdings (or all of
// them, after Republish) to the bus.
func (r *room) publishBusLocked(now int64) {
	cl := r.cl
	if !cl.full && len(cl.dirty) == 0 {
		return
	}
	var hs []Holding
	if cl.full {
		for m := range r.members.all() {
			if m.localHeld() {
				hs = append(hs, m.holding(now))
			}
		}
	} else {
		hs = make([]Holding, 0, len(cl.dirty))
		for _, m := range cl.dirty {
			hs = append(hs, m.holding(now))
		}
	}
	for _, m := range cl.dirty {
		m.cl.x.dirty = false
		m.cl.trim()
	}
	clear(cl.dirty)
	cl.dirty = cl.dirty[:0]
	r.hub.cfg.Bus.Publish(r.name, hs, cl.full)
	cl.full = false
}

// watchLocked follows the room's local subscribers: the first one starts
// watching the other nodes' members (the syncs wait for them, at most
// WatchTimeout).
func (r *room) watchLocked() {
	r.cl.unsubbedAt = 0
	if r.cl.watched {
		return
	}
	r.cl.watched = true
	r.cl.loadUntil = r.hub.now() + int64(r.hub.cfg.WatchTimeout)
	r.hub.cfg.Bus.Watch(r.name)
}

// loadingLocked reports whether syncs still wait for the other nodes'
// members.
func (r *room) loadingLocked(now int64) bool {
	if r.cl == nil || r.cl.loadUntil == 0 {
		return false
	}
	if now >= r.cl.loadUntil {
		r.cl.loadUntil = 0
		return false
	}
	return true
}

// lingerLocked stops watching a room LeaveGrace after its last local
// subscriber left (a client that reconnects within its grace finds the
// room as it was): the other nodes' holds are forgotten. It reports
// whether the room must be visited again.
func (r *room) lingerLocked(now int64) (again bool) {
	cl := r.cl
	if !cl.watched || len(r.subs) > 0 || len(r.owed) > 0 {
		return false
	}
	if cl.unsubbedAt == 0 {
		cl.unsubbedAt = now
	}
	if now-cl.unsubbedAt < int64(r.hub.cfg.LeaveGrace) && r.members.len() > 0 {
		return true
	}
	r.unwatchLocked(now)
	return false
}

func (r *room) unwatchLocked(now int64) {
	cl := r.cl
	cl.watched, cl.loadUntil, cl.unsubbedAt = false, 0, 0
	r.hub.cfg.Bus.Unwatch(r.name)
	for m := range r.members.all() {
		if len(m.cl.remote()) == 0 && !m.cl.downGrace() {
			continue
		}
		m.cl.x.remote = nil
		if m.cl.downGrace() {
			r.endGraceLocked(m)
		}
		r.releaseLocked(m, now)
	}
}

// Apply records node's holdings of room (a node incarnation, as the bus
// names it). With full, they are node's whole part of the room: its holds
// not listed end. Rooms this node does not watch are ignored. Called by
// the bus.
func (h *Hub) Apply(room, node string, hs []Holding, full bool) {
	r := h.findRoom(room)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if r.cl == nil || !r.cl.watched {
		return
	}
	now := h.now()
	if full {
		listed := make(map[string]bool, len(hs))
		for _, x := range hs {
			listed[x.User] = true
		}
		for m := range r.members.all() {
			if !listed[m.user] && m.remoteAt(node) >= 0 {
				r.applyLocked(m, node, Holding{User: m.user}, now)
			}
		}
	}
	for _, x := range hs {
		h.clock.observe(x.Version)
		m := r.members.get(x.User)
		if m == nil {
			if !x.Held {
				continue
			}
			m = r.newMemberLocked(x.User, memberState{status: x.Status, meta: x.Meta})
		}
		r.applyLocked(m, node, x, now)
	}
}

// applyLocked records one holding of node.
func (r *room) applyLocked(m *member, node string, x Holding, now int64) {
	i := m.remoteAt(node)
	if !x.Held {
		if i < 0 {
			return
		}
		m.cl.dropRemote(i)
		r.releaseLocked(m, now)
		return
	}
	hold := remoteHold{node: node, st: memberState{status: x.Status, meta: x.Meta}, ver: x.Version}
	if x.Typing > 0 {
		hold.typingUntil = now + int64(x.Typing)
	}
	if i < 0 {
		m.cl.more().remote = append(m.cl.remote(), hold)
	} else {
		m.cl.x.remote[i] = hold
	}
	if m.cl.downGrace() {
		r.endGraceLocked(m) // held again: the dead node's grace is over
	}
	r.effectiveLocked(m)
	r.retypeLocked(m, now)
}

// newMemberLocked adds a member with state st, a join; the caller adds
// the hold.
func (r *room) newMemberLocked(user string, st memberState) *member {
	m := &member{user: user, st: st, gracedAt: -1, typingAt: -1, cl: &holders{}}
	r.members.put(m)
	r.hub.nMembers.Add(1)
	r.changeLocked(user, snap{}, snap{present: true, st: st})
	return m
}

// Loaded tells the Hub that the other nodes' holdings of room are loaded:
// its first local subscribers get their syncs. Called by the bus.
func (h *Hub) Loaded(room string) {
	r := h.findRoom(room)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if r.cl != nil && r.cl.loadUntil != 0 {
		r.cl.loadUntil = 0
		r.markLocked()
	}
}

// NodeDown tells the Hub that node (an incarnation, as in Apply) is dead:
// the members only it held get their leave grace, as if their connection
// here had been lost. Called by the bus.
func (h *Hub) NodeDown(node string) {
	now := h.now()
	h.eachRoom(func(r *room) {
		if r.cl == nil {
			return
		}
		for m := range r.members.all() {
			i := m.remoteAt(node)
			if i < 0 {
				continue
			}
			m.cl.dropRemote(i)
			if !m.held() {
				m.graceUntil = now + int64(h.cfg.LeaveGrace)
				m.cl.more().downGrace = true
				r.graceLocked(m)
			}
			r.effectiveLocked(m)
			r.retypeLocked(m, now)
			m.cl.trim()
		}
	})
}

// Republish makes the next flush of room publish every local holding of
// it, replacing what the bus holds for this node; "" does it for every
// room. Called by the bus when what it published may be lost (Redis lost
// its data, this node was declared dead, a write failed).
func (h *Hub) Republish(name string) {
	mark := func(r *room) {
		if r.cl != nil {
			r.cl.full = true
			r.markLocked()
		}
	}
	if name != "" {
		sh := h.shardOf(name)
		sh.mu.Lock()
		if sh.rooms[name] == nil {
			// Dropped: this node holds nobody there (what the bus lost may
			// have been the last leaves). Published under the shard lock,
			// so a room created again meanwhile publishes after this.
			h.cfg.Bus.Publish(name, nil, true)
			sh.mu.Unlock()
			return
		}
		sh.mu.Unlock()
		if r := h.findRoom(name); r != nil {
			mark(r)
			r.mu.Unlock()
		} else {
			h.Republish(name) // dropped in between
		}
		return
	}
	h.eachRoom(mark)
}

// findRoom returns the live room named name with its lock held, or nil.
func (h *Hub) findRoom(name string) *room {
	sh := h.shardOf(name)
	sh.mu.Lock()
	r := sh.rooms[name]
	sh.mu.Unlock()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	if r.dead {
		r.mu.Unlock()
		return nil
	}
	return r
}

// eachRoom calls fn with every live room, its lock held, one at a time.
func (h *Hub) eachRoom(fn func(*room)) {
	var batch []*room
	for i := range h.rooms {
		sh := &h.rooms[i]
		sh.mu.Lock()
		batch = batch[:0]
		for _, r := range sh.rooms {
			batch = append(batch, r)
		}
		sh.mu.Unlock()
		for _, r := range batch {
			r.mu.Lock()
			if !r.dead {
				fn(r)
			}
			r.mu.Unlock()
		}
	}
}
