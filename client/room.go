package client

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"

	"github.com/presenced/presenced/internal/wire"
)

// Member is one member of a room as the client last heard of it.
type Member struct {
	User   string
	Status string
	Meta   json.RawMessage // a JSON object ({} when none)
}

// View is a snapshot of one joined room, returned by Client.Room. It is a
// copy: the caller may keep and modify it.
type View struct {
	Room    string
	Cursor  string            // the cursor of the last sync or diff applied ("" before the first sync)
	Count   int               // members in the room; more than len(Members) when Partial
	Partial bool              // Members is a subset: the room is larger than the server's list_limit (its diffs carry only Count and Typing) or its sync was cut to fit the server's size budget
	Members map[string]Member // by user
	Typing  []string          // users typing now
	Synced  bool              // a sync has been applied since the room was joined
}

// room is the client's state of one joined room. Guarded by Client.mu.
type roomState struct {
	name    string
	state   *wire.State // last state sent in join or set; nil: the server's default
	cursor  string
	count   int
	partial bool
	synced  bool
	members map[string]Member
	typing  []string
	syncing bool // a gap sync is outstanding on the current connection
}

// applySync replaces the room's view with a full sync.
func (r *roomState) applySync(sy *Sync) {
	r.cursor = sy.Cursor
	r.count = sy.Count
	r.partial = sy.Partial
	r.synced = true
	r.syncing = false
	r.members = make(map[string]Member, len(sy.Members))
	for _, m := range sy.Members {
		r.members[m.User] = m
	}
	r.typing = slices.Clone(sy.Typing)
}

// applyDiff applies a diff whose from is the room's cursor.
func (r *roomState) applyDiff(d *Diff) {
	for _, m := range d.Join {
		r.members[m.User] = m
	}
	for _, m := range d.Update {
		r.members[m.User] = m
	}
	for _, u := range d.Leave {
		delete(r.members, u)
	}
	if d.TypingChanged {
		r.typing = slices.Clone(d.Typing)
	}
	r.count = d.Count
	r.cursor = d.Cursor
}

// view copies the room into a View.
func (r *roomState) view() View {
	v := View{
		Room:    r.name,
		Cursor:  r.cursor,
		Count:   r.count,
		Partial: r.partial,
		Members: make(map[string]Member, len(r.members)),
		Typing:  slices.Clone(r.typing),
		Synced:  r.synced,
	}
	for u, m := range r.members {
		m.Meta = bytes.Clone(m.Meta)
		v.Members[u] = m
	}
	return v
}

// Room returns a snapshot of a joined room, false when the room is not
// joined (never joined, left, or its join was refused).
func (c *Client) Room(name string) (View, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rooms[name]
	if r == nil {
		return View{}, false
	}
	return r.view(), true
}

// Rooms returns the names of the joined rooms, sorted.
func (c *Client) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.rooms))
}

// stateKey groups equal states for the resume hello: nil and an empty
// status mean the default status.
func stateKey(st *wire.State) string {
	if st == nil {
		return wire.DefaultStatus + "\x00"
	}
	status := st.Status
	if status == "" {
		status = wire.DefaultStatus
	}
	return status + "\x00" + string(st.Meta)
}

// fullState is the whole state a set must carry to restore st after a
// resume: the server keeps what a set leaves out, and after the hello that
// is the hello's state, so the default status and an empty meta are sent
// too.
func fullState(st *wire.State) wire.State {
	full := wire.State{Status: wire.DefaultStatus, Meta: json.RawMessage(`{}`)}
	if st != nil && st.Status != "" {
		full.Status = st.Status
	}
	if st != nil && len(st.Meta) > 0 {
		full.Meta = st.Meta
	}
	return full
}

func cloneState(st *wire.State) *wire.State {
	if st == nil {
		return nil
	}
	return &wire.State{Status: st.Status, Meta: bytes.Clone(st.Meta)}
}

// wireState converts a State of the API to the protocol's, copying Meta
// so that the caller may reuse its bytes.
func wireState(st *State) *wire.State {
	if st == nil {
		return nil
	}
	return &wire.State{Status: st.Status, Meta: bytes.Clone(st.Meta)}
}
