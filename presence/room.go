package presence

import (
	"strings"
	"sync"

	"github.com/presenced/presenced/coalesce"
	"github.com/presenced/presenced/internal/wire"
)

// maxTyping is the most typing users a sync or diff lists.
const maxTyping = 10

// memberState is a member's status and meta; both are immutable once set
// (a change replaces them), so versions and history share them.
type memberState struct {
	status string
	meta   string // a compact JSON object; "" encodes as {}
}

// snap is a member as a diff sees it: absent, or present with a state.
type snap struct {
	present bool
	st      memberState
}

func (a snap) equal(b snap) bool {
	if a.present != b.present {
		return false
	}
	return !a.present || a.st.status == b.st.status && a.st.meta == b.st.meta
}

// member is a user in a room: present while at least one of its
// connections joined (or during the leave grace of the last one), or,
// with a Bus, another node holds it (see cluster.go). Its fields are
// guarded by the room's mu. (Two int32 indexes share the padding after
// conns, keeping a member in the 80-byte size class.)
type member struct {
	user       string
	st         memberState
	conns      int32    // connections of this node that joined the room
	gracedAt   int32    // position in r.graced; -1 when not there
	graceUntil int64    // hub clock; non-zero while a lost connection's grace runs
	typingAt   int32    // position of its entry in r.typing; -1 when not typing
	cl         *holders // the holds of this and other nodes; nil without a Bus
}

func (m *member) typingOn() bool { return m.typingAt >= 0 }

// typist is an entry of r.typing: a typing member and when its typing
// ends. m is nil for an entry whose member stopped; such holes are
// compacted away by the next flush, so stopping is O(1) and the list keeps
// the order in which members started typing.
type typist struct {
	m     *member
	until int64 // hub clock
}

// sub is one connection's membership of a room. A sub is in exactly one of
// r.subs (in sync: it gets diffs) and r.owed (owed a full sync).
type sub struct {
	s   *Session // static
	r   *room    // static
	idx int32    // position in r.subs, or in r.owed when owed; guarded by r.mu

	// sendMu orders a room frame's delivery with the leave: it is held
	// across the check of gone and the Send in deliver, and when leaveLocked
	// sets gone, so no room frame is queued after the leave's ack.
	sendMu sync.Mutex
	gone   bool // it left; written with r.mu and sendMu held, read with either
	owed   bool // guarded by r.mu: in r.owed
	missed bool // guarded by r.mu: set and cleared within one settleLocked
}

// deliver hands a room frame to sb's connection unless sb left. Called by
// the room's flusher without r.mu, or on the event loop with it. left
// reports that sb had left (nothing was sent and nothing is owed).
func (sb *sub) deliver(frame []byte) (ok, left bool) {
	sb.sendMu.Lock()
	defer sb.sendMu.Unlock()
	if sb.gone {
		return false, true
	}
	return sb.s.deliver(frame), false
}

// owedSub is an entry of r.owed: a subscription that must get a full sync
// before any diff, since when, and how often it was asked for one.
type owedSub struct {
	sb    *sub
	since int64  // hub clock time it became owed: 4002 once SlowTimeout passes without a sync delivered
	asks  uint32 // bumped by each request for a sync; a sync sent during an unlocked fan-out settles only the asks it saw
}

// change is one member's net change in one version: whether it was
// present before, and its state after.
type change struct {
	user       string
	wasPresent bool
	new        snap
}

func (c change) isJoin() bool  { return !c.wasPresent && c.new.present }
func (c change) isLeave() bool { return c.wasPresent && !c.new.present }

// version is one published diff, kept for resume.
type version struct {
	seq     uint64
	at      int64 // hub clock
	partial bool  // the room was over ListLimit or crossed it: no resume across it
	changes []change
}

// room is the state of one room on this node. All fields after mu are
// guarded by it, except the fan-out scratch (owned by the room's flusher).
// No frame is handed to a sink by the flusher with mu held: see flush.
type room struct {
	name  string     // static
	hub   *Hub       // static
	shard *roomShard // static
	epoch uint32     // static

	mu          sync.Mutex
	dead        bool // dropped from its shard; lockRoom retries
	marked      bool // scheduled for the next tick
	seq         uint64
	members     memberSet
	subs        []*sub    // in sync: they get the diffs
	owed        []owedSub // owed a full sync; retried every tick
	pending     coalesce.Changes[string, snap]
	typing      []typist  // typing users in the order they started, with holes (m == nil)
	typingHoles int       // entries of typing with m == nil
	typingSent  []string  // the typing list last published
	graced      []*member // members in their leave grace, in no order
	partial     bool      // the last published diff was partial
	agedAt      int32     // position in shard.aged, -1 when not there; guarded by shard.mu (history.go)
	count       int       // members at the published cursor (r.members may hold unpublished changes)
	history     []version // oldest first; at most Config.History
	firstChange int64     // hub clock time of the first pending change, 0 if none
	buf         []byte    // payload scratch; released when the room is idle
	fanning     bool      // a fan-out runs without the lock: immediate syncs wait for the next flush
	syncFrame   []byte    // the sync frame of version syncSeq (immutable once sent); released when idle
	syncSeq     uint64
	typingBuf   []string // scratch for the typing list

	cl *roomCluster // nil without a Bus

	out *fanout // the flusher's scratch, nil while the room is idle; owned by the room's flusher (flushes of a room never overlap)
}

func newRoom(h *Hub, sh *roomShard, name string) *room {
	r := &room{name: name, hub: h, shard: sh, epoch: newEpoch(), agedAt: -1}
	if h.cfg.Bus != nil {
		r.cl = &roomCluster{}
	}
	return r
}

func (r *room) cursor() wire.Cursor { return wire.Cursor{Epoch: r.epoch, Seq: r.seq} }

func (r *room) markLocked() {
	if !r.marked {
		r.marked = true
		r.hub.sched.Mark(r)
	}
}

func (r *room) changeLocked(user string, old, new snap) {
	if r.pending.Put(user, old, new) {
		r.hub.cfg.Metrics.Coalesced.Add(1)
	}
	if r.firstChange == 0 {
		r.firstChange = r.hub.now()
	}
	r.markLocked()
}

// joinLocked adds s to the room; st (may be nil) is its state.
func (r *room) joinLocked(s *Session, st *wire.State) *sub {
	sb := &sub{s: s, r: r, idx: int32(len(r.subs))}
	r.subs = append(r.subs, sb)
	m := r.members.get(s.user)
	if m == nil {
		m = &member{user: s.user, st: memberState{status: wire.DefaultStatus}, gracedAt: -1, typingAt: -1}
		applyState(&m.st, st)
		r.members.put(m)
		r.hub.nMembers.Add(1)
		r.changeLocked(m.user, snap{}, snap{present: true, st: m.st})
		if r.cl != nil {
			m.cl = &holders{}
			r.setLocalLocked(m, m.st)
			if st == nil || st.Status == "" && len(st.Meta) == 0 {
				// The default state was not set by anyone: it loses to a
				// state another node's connection of the user set.
				m.cl.ver = 0
			}
		}
		m.conns++
	} else {
		adopt := false
		if r.cl != nil && !m.localHeld() {
			// Held by other nodes only: this node holds it now, with the
			// state they show at their version (adopted below, once it
			// holds it), so it neither wins over theirs nor falls back to
			// a default.
			m.cl.ver = 0
			r.dirtyLocked(m)
			adopt = true
		}
		if m.graceUntil != 0 {
			r.endGraceLocked(m)
		}
		m.conns++
		if adopt {
			r.effectiveLocked(m)
		}
		r.setStateLocked(m, st)
	}
	if r.cl != nil {
		r.watchLocked()
	}
	return sb
}

// setStateLocked applies st to m: fields st leaves out keep their values.
func (r *room) setStateLocked(m *member, st *wire.State) {
	if st == nil {
		return
	}
	ns := m.st
	applyState(&ns, st)
	if m.cl != nil {
		if ns != m.st {
			r.setLocalLocked(m, ns)
		}
		return
	}
	old, new := snap{present: true, st: m.st}, snap{present: true, st: ns}
	if old.equal(new) {
		return
	}
	m.st = ns
	r.changeLocked(m.user, old, new)
}

// applyState applies st to dst. st may alias a client's message (see
// wire.Request): what dst keeps is copied, and only when it changed, so an
// unchanged state or a common status allocates nothing.
func applyState(dst *memberState, st *wire.State) {
	if st == nil {
		return
	}
	if st.Status != "" && st.Status != dst.status {
		dst.status = internStatus(st.Status)
	}
	if len(st.Meta) > 0 {
		// A decoded meta is at most wire.MaxMetaLen bytes: its compact
		// form fits the stack buffer.
		var buf [wire.MaxMetaLen]byte
		m := wire.AppendCompactMeta(buf[:0], st.Meta)
		switch {
		case string(m) == "{}":
			dst.meta = "" // the same as no meta: encoded {}
		case string(m) != dst.meta:
			dst.meta = string(m)
		}
	}
}

// internStatus returns status as a string of its own: a constant for the
// statuses clients commonly send, else a copy.
func internStatus(status string) string {
	switch status {
	case "online":
		return "online"
	case "away":
		return "away"
	case "busy":
		return "busy"
	case "idle":
		return "idle"
	case "offline":
		return "offline"
	case "dnd":
		return "dnd"
	case "active":
		return "active"
	case "inactive":
		return "inactive"
	case "invisible":
		return "invisible"
	}
	return strings.Clone(status)
}

// leave removes sb (see leaveLocked).
func (r *room) leave(sb *sub, hold, now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leaveLocked(sb, hold, now)
}

// set applies st to user's state, if user is a member.
func (r *room) set(user string, st *wire.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.members.get(user); m != nil {
		r.setStateLocked(m, st)
	}
}

// setTyping marks user typing or not, if user is a member; it reports whether
// it was applied.
func (r *room) setTyping(user string, on bool, now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.members.get(user)
	if m != nil {
		r.typingLocked(m, on, now)
	}
	return m != nil
}

// leaveLocked removes sb. With a hold > 0 (a lost connection: its leave
// grace, see Session.HandleClose) its member stays until now+hold even if
// its last connection is gone; with 0 (an explicit leave), it goes at once
// unless an earlier loss's grace is still running; with a negative hold
// (an operator's close that forbids a reconnect) it goes at once, ending
// that grace too.
func (r *room) leaveLocked(sb *sub, hold, now int64) {
	sb.sendMu.Lock()
	sb.gone = true
	sb.sendMu.Unlock()
	if sb.owed {
		r.unowe(sb)
	} else {
		r.unsub(sb)
	}
	if r.cl != nil && len(r.subs)+len(r.owed) == 0 {
		r.markLocked() // the flush starts the watch's linger
	}
	m := r.members.get(sb.s.user)
	if m == nil {
		return
	}
	switch {
	case hold > 0:
		// Kept even while other connections remain: if they leave
		// before it ends, the member still waits for the lost one.
		m.graceUntil = max(m.graceUntil, now+hold)
	case hold < 0:
		m.graceUntil = 0 // an operator's 41xx: no earlier loss's grace either
	}
	if m.conns--; m.conns > 0 {
		return
	}
	if m.graceUntil > now {
		r.graceLocked(m)
		return
	}
	m.graceUntil = 0
	if m.cl != nil {
		r.unholdLocked(m, now)
		return
	}
	r.removeMemberLocked(m)
}

// unholdLocked: this node no longer holds m (its last connection left, or
// the grace of a lost one ended).
func (r *room) unholdLocked(m *member, now int64) {
	if m.cl.x != nil {
		m.cl.x.typingUntil = 0
	}
	r.dirtyLocked(m)
	r.releaseLocked(m, now)
}

// graceLocked puts m, whose m.graceUntil is set, in r.graced, and records
// it in the hub's index of held rooms (Hub.Disconnect). O(1).
func (r *room) graceLocked(m *member) {
	m.gracedAt = int32(len(r.graced))
	r.graced = append(r.graced, m)
	r.hub.addHeld(m.user, r)
	r.markLocked()
}

// endGraceLocked ends m's grace: a connection of its user is back, the
// grace is over, or an operator ended it. O(the user's held rooms).
func (r *room) endGraceLocked(m *member) {
	m.graceUntil = 0
	if m.cl != nil {
		if m.cl.x != nil {
			m.cl.x.downGrace = false
		}
	}
	if i := m.gracedAt; i >= 0 {
		last := len(r.graced) - 1
		r.graced[i] = r.graced[last]
		r.graced[i].gracedAt = i
		r.graced[last] = nil
		r.graced = r.graced[:last]
		m.gracedAt = -1
		r.hub.removeHeld(m.user, r)
	}
}

// dropGracedLocked ends the grace of m (in r.graced) and its member, as
// when the grace is over: this node's hold ends (with a Bus the other
// nodes are told; a dead node's hold just ends), and the member leaves
// unless another node holds it.
func (r *room) dropGracedLocked(m *member, now int64) {
	if m.cl != nil {
		local := !m.cl.downGrace()
		r.endGraceLocked(m)
		if local {
			r.unholdLocked(m, now)
		} else {
			r.releaseLocked(m, now)
		}
		return
	}
	r.endGraceLocked(m)
	r.removeMemberLocked(m)
}

// unsub removes sb from r.subs. O(1): the last sub takes its place.
func (r *room) unsub(sb *sub) {
	last := len(r.subs) - 1
	r.subs[sb.idx] = r.subs[last]
	r.subs[sb.idx].idx = sb.idx
	r.subs[last] = nil
	r.subs = r.subs[:last]
}

// unowe removes sb from r.owed. O(1).
func (r *room) unowe(sb *sub) {
	last := len(r.owed) - 1
	r.owed[sb.idx] = r.owed[last]
	r.owed[sb.idx].sb.idx = sb.idx
	r.owed[last] = owedSub{}
	r.owed = r.owed[:last]
	sb.owed = false
}

func (r *room) removeMemberLocked(m *member) {
	r.members.del(m.user)
	r.hub.nMembers.Add(-1)
	if m.typingOn() {
		r.stopTypingLocked(m)
	}
	r.changeLocked(m.user, snap{present: true, st: m.st}, snap{})
}

// typingLocked marks m typing until now + TypingTTL, or not typing. O(1).
func (r *room) typingLocked(m *member, on bool, now int64) {
	until := now + int64(r.hub.cfg.TypingTTL)
	if m.cl != nil {
		if !on && m.cl.typingUntil() == 0 {
			return
		}
		x := m.cl.more()
		x.typingUntil = 0
		if on {
			x.typingUntil = until
		}
		r.dirtyLocked(m)
		r.retypeLocked(m, now)
		return
	}
	switch {
	case on && m.typingOn():
		r.typing[m.typingAt].until = until
	case on:
		m.typingAt = int32(len(r.typing))
		r.typing = append(r.typing, typist{m: m, until: until})
		r.typingChangedLocked()
	case m.typingOn():
		r.stopTypingLocked(m)
	}
}

// stopTypingLocked leaves a hole at m's entry (compactTypingLocked closes
// it), so the others keep their order at O(1) cost.
func (r *room) stopTypingLocked(m *member) {
	r.typing[m.typingAt].m = nil
	m.typingAt = -1
	r.typingHoles++
	r.typingChangedLocked()
}

// typingChangedLocked schedules the typing list's publication and, like
// changeLocked, starts the fan-out latency clock of the tick.
func (r *room) typingChangedLocked() {
	if r.firstChange == 0 {
		r.firstChange = r.hub.now()
	}
	r.markLocked()
}

// typingListLocked is the typing list to publish, in r.typingBuf.
func (r *room) typingListLocked() []string {
	r.typingBuf = r.typingBuf[:0]
	for _, e := range r.typing {
		if len(r.typingBuf) == maxTyping {
			break
		}
		if e.m != nil {
			r.typingBuf = append(r.typingBuf, e.m.user)
		}
	}
	return r.typingBuf
}

// expireLocked ends the leave graces and typing that are over.
func (r *room) expireLocked(now int64) {
	for i := 0; i < len(r.graced); {
		m := r.graced[i]
		if m.graceUntil > now {
			i++
			continue
		}
		r.dropGracedLocked(m, now)
	}
	for _, e := range r.typing {
		if e.m != nil && e.until <= now {
			if x := e.m.cl.extra(); x != nil {
				x.typingUntil = 0 // every holder's typing is over
				e.m.cl.trim()
			}
			r.stopTypingLocked(e.m)
		}
	}
	r.compactTypingLocked()
}

// compactTypingLocked closes the holes of r.typing, keeping its order. It
// runs once per flush, whose expiry scan is already O(len(r.typing)).
func (r *room) compactTypingLocked() {
	if r.typingHoles == 0 {
		return
	}
	kept := r.typing[:0]
	for _, e := range r.typing {
		if e.m != nil {
			e.m.typingAt = int32(len(kept))
			kept = append(kept, e)
		}
	}
	clear(r.typing[len(kept):])
	r.typing = kept
	r.typingHoles = 0
	if len(kept) == 0 && cap(kept) > 64 {
		r.typing = nil
	}
}

func (r *room) emptyLocked() bool {
	return r.members.len() == 0 && len(r.subs) == 0 && len(r.owed) == 0 && r.pending.Len() == 0
}
