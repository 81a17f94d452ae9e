package presence

import (
	"slices"
	"strings"

	"github.com/presenced/presenced/internal/wire"
)

// MemberInfo is a room member as an operator's query sees it.
type MemberInfo struct {
	User   string
	Status string
	Meta   string // compact JSON object; "" for {}
}

// NodeInfo is a live node and the connections it holds.
type NodeInfo struct {
	ID    string // the node's id (with a Bus, its incarnation "node#epoch")
	Addr  string // its public address, if known
	Conns int64  // open connections (sessions)
}

// RoomMembers returns room's members on this node (with a Bus, the remote
// members of watched rooms too), sorted by user; nil for a room with no
// member. Safe for concurrent use; it takes the room's lock briefly.
func (h *Hub) RoomMembers(room string) []MemberInfo {
	r := h.findRoom(room)
	if r == nil {
		return nil
	}
	out := make([]MemberInfo, 0, r.members.len())
	for m := range r.members.all() {
		out = append(out, MemberInfo{User: m.user, Status: m.st.status, Meta: m.st.meta})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b MemberInfo) int { return strings.Compare(a.User, b.User) })
	return out
}

// RoomCount returns how many members room has on this node (with a Bus,
// the remote members of watched rooms too); 0 for a room with no member.
// It holds the room's lock only to read the count.
func (h *Hub) RoomCount(room string) int {
	r := h.findRoom(room)
	if r == nil {
		return 0
	}
	n := r.members.len()
	r.mu.Unlock()
	return n
}

// RoomNames returns the rooms whose name starts with prefix and that have
// at least one member, sorted.
func (h *Hub) RoomNames(prefix string) []string {
	var out []string
	h.eachRoom(func(r *room) {
		if r.members.len() > 0 && strings.HasPrefix(r.name, prefix) {
			out = append(out, r.name)
		}
	})
	slices.Sort(out)
	return out
}

// UserRooms returns the rooms user is a member of, sorted. It walks every
// room: a query for operators, not for a hot path.
func (h *Hub) UserRooms(user string) []string {
	var out []string
	h.eachRoom(func(r *room) {
		if r.members.get(user) != nil {
			out = append(out, r.name)
		}
	})
	slices.Sort(out)
	return out
}

// Disconnect closes every connection of user on this node with code
// (CloseAdmin). closed is how many closes it started (a connection already
// closing is not counted). With a code the contract says not to reconnect
// after (4100–4199, e.g. 4103) the client's SDK does not come back and the
// memberships end without LeaveGrace: the other members see the leave in
// the next diff. With a code that invites a reconnect (4000–4099) they
// keep LeaveGrace, so a client that comes back causes no leave.
//
// draining is how many of the user's connections were in the drain's
// close (bye and 1001 sent, the closing handshake not over) and now end
// as this close (Session.takeDrain): counted as CloseAdmin, and with
// 4100–4199 without LeaveGrace. Their clients saw 1001, not code (a
// connection has one close frame), so they come back after bye's
// retry_ms, to another node: a disconnect does not reach a connection
// opened after it.
//
// held is, for 4100–4199 only, how many of the user's memberships this
// node kept only for a leave grace (a lost connection's, a drained
// connection's retry_ms + LeaveGrace, or one a departed node's members
// get: NodeDown) that it ended now, as if the grace were over: the
// members leave in the next diff (with a Bus, unless another node holds
// them; the Disconnect's kick ends those there). It costs O(the user's
// sessions and held rooms): an index (users.go), no scan.
//
// Safe from any goroutine: it records the closes and hands them to the
// sinks, like a room flusher's 4002, and takes one room's lock at a time.
func (h *Hub) Disconnect(user string, code wire.CloseCode) (closed, draining, held int) {
	for _, s := range h.sessionsOf(user) { // O(user's sessions): users.go
		switch {
		case s.closeWith(code, CloseAdmin, "disconnected by an operator"):
			closed++ // counted only if this close started it (not a client already closing)
		case s.takeDrain(code):
			draining++
		}
	}
	if wire.Reconnect(code) {
		return closed, draining, 0
	}
	now := h.now()
	for _, r := range h.heldRooms(user) { // O(user's held rooms)
		r.mu.Lock()
		if m := r.members.get(user); m != nil && m.gracedAt >= 0 {
			r.dropGracedLocked(m, now)
			held++
		}
		r.mu.Unlock()
	}
	return closed, draining, held
}

// NodeInfo returns this node's entry for a node list: its id and open
// connections.
func (h *Hub) NodeInfo() NodeInfo {
	return NodeInfo{ID: h.cfg.Node, Conns: h.nSessions.Load()}
}
