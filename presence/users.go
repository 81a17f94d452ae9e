package presence

import (
	"hash/maphash"
	"slices"
	"sync"
)

const userShards = 16 // power of two

// userShard indexes the sessions that said hello by their user, and the
// rooms where a user's member is in its leave grace, so that
// Hub.Disconnect costs O(the user's sessions and held rooms) and never
// walks the session or room shards the event loops lock. Lock order: a
// room's mu, then a userShard's mu (the room's graced list and held change
// together); never a room's mu under a userShard's.
type userShard struct {
	mu    sync.Mutex
	users map[string]userSessions // guarded by mu
	held  map[string][]*room      // guarded by mu: user -> rooms where its member is in r.graced (nil until one is)
}

// userSessions are one user's sessions on this node: most users have one,
// kept without a slice.
type userSessions struct {
	one  *Session
	more []*Session
}

func (h *Hub) userShard(user string) *userShard {
	return &h.users[maphash.String(h.seed, user)&(userShards-1)]
}

// addUser records s under its user (set by hello). Called on the event loop.
func (h *Hub) addUser(s *Session) {
	sh := h.userShard(s.user)
	sh.mu.Lock()
	if sh.users == nil {
		sh.users = map[string]userSessions{}
	}
	us := sh.users[s.user]
	if us.one == nil {
		us.one = s
	} else {
		us.more = append(us.more, s)
	}
	sh.users[s.user] = us
	sh.mu.Unlock()
}

// removeUser forgets s (unregister). Called on the event loop.
func (h *Hub) removeUser(s *Session) {
	if s.user == "" {
		return // no hello
	}
	sh := h.userShard(s.user)
	sh.mu.Lock()
	us := sh.users[s.user]
	if us.one == s {
		us.one = nil
		if n := len(us.more); n > 0 {
			us.one, us.more[n-1] = us.more[n-1], nil
			us.more = us.more[:n-1]
		}
	} else if i := slices.Index(us.more, s); i >= 0 {
		last := len(us.more) - 1
		us.more[i], us.more[last] = us.more[last], nil
		us.more = us.more[:last]
	}
	if us.one == nil {
		delete(sh.users, s.user)
	} else {
		sh.users[s.user] = us
	}
	sh.mu.Unlock()
}

// sessionsOf returns a copy of user's sessions. Safe from any goroutine.
func (h *Hub) sessionsOf(user string) []*Session {
	sh := h.userShard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	us, ok := sh.users[user]
	if !ok {
		return nil
	}
	out := make([]*Session, 0, 1+len(us.more))
	out = append(out, us.one)
	return append(out, us.more...)
}

// addHeld records that user's member of r entered r.graced. Called with
// r.mu held.
func (h *Hub) addHeld(user string, r *room) {
	sh := h.userShard(user)
	sh.mu.Lock()
	if sh.held == nil {
		sh.held = map[string][]*room{}
	}
	sh.held[user] = append(sh.held[user], r)
	sh.mu.Unlock()
}

// removeHeld forgets that user's member of r is in r.graced. Called with
// r.mu held. O(the user's held rooms).
func (h *Hub) removeHeld(user string, r *room) {
	sh := h.userShard(user)
	sh.mu.Lock()
	rs := sh.held[user]
	if i := slices.Index(rs, r); i >= 0 {
		last := len(rs) - 1
		rs[i], rs[last] = rs[last], nil
		rs = rs[:last]
	}
	if len(rs) == 0 {
		delete(sh.held, user)
	} else {
		sh.held[user] = rs
	}
	sh.mu.Unlock()
}

// heldRooms returns a copy of the rooms where user's member is in its
// leave grace. Safe from any goroutine.
func (h *Hub) heldRooms(user string) []*room {
	sh := h.userShard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return slices.Clone(sh.held[user])
}
