package main

import (
	"bytes"
	"encoding/json"
	"sort"
	"strconv"
	"sync"
	"time"
)

// room is one presence room. Every change is encoded once and queued at
// once, under mu, to every joined connection: there is no coalescing, so
// the diffs of a room form one chain on every connection.
type room struct {
	name string
	hub  *Server

	mu      sync.Mutex
	dead    bool                   // removed from the hub: join again through the hub
	seq     uint64                 // the cursor is "c<seq>"
	subs    map[*conn]struct{}     // connections joined: they receive the diffs
	members map[string]*member     // by user
	typing  map[string]*time.Timer // users typing, each with its typing_ttl timer
}

// member is a user in a room. refs counts the connections that joined it
// plus the ones lost less than leave_grace ago.
type member struct {
	status string
	meta   json.RawMessage
	refs   int
}

func newRoom(hub *Server, name string) *room {
	return &room{
		name:    name,
		hub:     hub,
		subs:    make(map[*conn]struct{}),
		members: make(map[string]*member),
		typing:  make(map[string]*time.Timer),
	}
}

func (r *room) cursorLocked() string { return "c" + strconv.FormatUint(r.seq, 10) }

// broadcastLocked advances the cursor and queues d to every joined
// connection.
func (r *room) broadcastLocked(d diffOut) {
	d.T, d.Room = "diff", r.name
	d.From = r.cursorLocked()
	r.seq++
	d.Cur = r.cursorLocked()
	d.Count = len(r.members)
	msg := mustJSON(d)
	for c := range r.subs {
		c.send(msg)
	}
}

func (r *room) typingSetLocked() []string {
	set := make([]string, 0, len(r.typing))
	for u := range r.typing {
		set = append(set, u)
	}
	sort.Strings(set)
	return set
}

// join adds c (user) to the room: ack (when id > 0) then a full sync to c,
// and a join (or update) diff to the others. It reports false when the
// room was removed from the hub meanwhile.
func (r *room) join(c *conn, id int64, st *inState) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		return false
	}
	_, already := r.subs[c]
	m := r.members[c.user]
	switch {
	case m == nil:
		m = &member{status: "online", meta: json.RawMessage("{}"), refs: 1}
		m.apply(st)
		r.members[c.user] = m
		r.broadcastLocked(diffOut{Join: []memberOut{m.out(c.user)}})
	default:
		if !already {
			m.refs++
		}
		if m.apply(st) {
			r.broadcastLocked(diffOut{Update: []memberOut{m.out(c.user)}})
		}
	}
	r.subs[c] = struct{}{}
	if id > 0 {
		c.send(mustJSON(ackOut{T: "ack", ID: id}))
	}
	c.send(r.syncLocked())
	return true
}

func (r *room) syncLocked() []byte {
	ms := make([]memberOut, 0, len(r.members))
	for u, m := range r.members {
		ms = append(ms, m.out(u))
	}
	return mustJSON(syncOut{T: "sync", Room: r.name, Cur: r.cursorLocked(), Count: len(r.members), Members: ms, Typing: r.typingSetLocked()})
}

// set changes the state of c's member: ack, then an update diff to every
// joined connection when the state changed.
func (r *room) set(c *conn, id int64, st *inState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.members[c.user]
	if _, ok := r.subs[c]; !ok || m == nil {
		c.send(mustJSON(errOut{T: "err", ID: id, Code: "not_joined", Msg: "room not joined"}))
		return
	}
	c.send(mustJSON(ackOut{T: "ack", ID: id}))
	if m.apply(st) {
		r.broadcastLocked(diffOut{Update: []memberOut{m.out(c.user)}})
	}
}

// setTyping marks c's user typing or not; a change of the typing set is a
// diff to every joined connection.
func (r *room) setTyping(c *conn, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.subs[c]; !ok {
		return
	}
	user := c.user
	t, typing := r.typing[user]
	switch {
	case on && typing:
		t.Reset(r.hub.cfg.TypingTTL)
		return
	case on:
		var timer *time.Timer
		timer = time.AfterFunc(r.hub.cfg.TypingTTL, func() { r.typingExpired(user, timer) })
		r.typing[user] = timer
	case typing:
		t.Stop()
		delete(r.typing, user)
	default:
		return
	}
	set := r.typingSetLocked()
	r.broadcastLocked(diffOut{Typing: &set})
}

func (r *room) typingExpired(user string, t *time.Timer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.typing[user] != t {
		return
	}
	delete(r.typing, user)
	set := r.typingSetLocked()
	r.broadcastLocked(diffOut{Typing: &set})
}

// leave removes c at once (an explicit leave or a clean close). It
// reports whether the room is now empty.
func (r *room) leave(c *conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.subs[c]; !ok {
		return false
	}
	delete(r.subs, c)
	r.releaseLocked(c.user)
	return r.emptyLocked()
}

// detach stops sending to a lost connection; its member stays until
// release, leave_grace later.
func (r *room) detach(c *conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.subs[c]
	delete(r.subs, c)
	return ok
}

// release drops one reference of user's member (a lost connection's, once
// leave_grace has passed). It reports whether the room is now empty.
func (r *room) release(user string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked(user)
	return r.emptyLocked()
}

func (r *room) releaseLocked(user string) {
	m := r.members[user]
	if m == nil {
		return
	}
	if m.refs--; m.refs > 0 {
		return
	}
	delete(r.members, user)
	d := diffOut{Leave: []string{user}}
	if t, ok := r.typing[user]; ok {
		t.Stop()
		delete(r.typing, user)
		set := r.typingSetLocked()
		d.Typing = &set
	}
	r.broadcastLocked(d)
}

func (r *room) emptyLocked() bool { return len(r.subs) == 0 && len(r.members) == 0 }

// stopTimers stops the typing timers (at shutdown).
func (r *room) stopTimers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.typing {
		t.Stop()
	}
}

// apply sets the fields st has; it reports whether the state changed.
func (m *member) apply(st *inState) bool {
	if st == nil {
		return false
	}
	changed := false
	if st.Status != "" && st.Status != m.status {
		m.status, changed = st.Status, true
	}
	if len(st.Meta) > 0 && !bytes.Equal(st.Meta, m.meta) {
		m.meta, changed = st.Meta, true
	}
	return changed
}

func (m *member) out(user string) memberOut { return memberOut{U: user, S: m.status, M: m.meta} }
