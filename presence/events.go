package presence

import "time"

// Events receives the membership transitions of rooms: a room became
// occupied or vacated, a member was added or removed (users, not
// connections, with the leave grace applied: a connection lost and back
// within LeaveGrace produces nothing). internal/webhook implements it.
//
// On a single node (Config.Bus nil) the Hub calls RoomEvents from a room's
// flush, at most once per room per tick, with the room's lock held: it
// must queue and return at once (never wait, never call back into the
// Hub) and must not keep evs. With a Bus the Hub never calls it: each
// node's view lags the others', so the transitions are decided where every
// node's holds meet (internal/redisbus calls it, see docs/webhooks.md).
type Events interface {
	RoomEvents(room string, evs []Event)
}

// EventType is what an Event reports.
type EventType uint8

// The event types, in the order a room's events of one tick are given.
const (
	EventRoomOccupied  EventType = iota + 1 // the room's first member
	EventMemberAdded                        // a user became a member
	EventMemberRemoved                      // a user is a member no more
	EventRoomVacated                        // the room's last member was removed
)

// String is the type's name in webhooks: room_occupied, member_added,
// member_removed, room_vacated.
func (t EventType) String() string {
	switch t {
	case EventRoomOccupied:
		return "room_occupied"
	case EventMemberAdded:
		return "member_added"
	case EventMemberRemoved:
		return "member_removed"
	case EventRoomVacated:
		return "room_vacated"
	}
	return "unknown"
}

// Event is one transition of a room.
type Event struct {
	Type EventType
	User string    // "" for the room's events
	ID   string    // unique id when the producer has one ("": the consumer numbers it)
	Time time.Time // when it happened (wall clock)
}

// emitLocked hands the room's transitions of this publish to
// Config.Events: count is the room's member count after changes. Only on
// a single node.
func (r *room) emitLocked(changes []change, count int) {
	ev := r.hub.cfg.Events
	if ev == nil || r.cl != nil || r.hub.cfg.Bus != nil {
		return
	}
	var joins, leaves int
	for _, c := range changes {
		switch {
		case c.isJoin():
			joins++
		case c.isLeave():
			leaves++
		}
	}
	if joins+leaves == 0 {
		return
	}
	now := time.Now()
	evs := make([]Event, 0, joins+leaves+2)
	before := count - joins + leaves
	if before == 0 {
		evs = append(evs, Event{Type: EventRoomOccupied, Time: now})
	}
	// Removals first: a tick where the only member left and another came
	// never empties the room, and its events must not say it did.
	for _, c := range changes {
		if c.isLeave() {
			evs = append(evs, Event{Type: EventMemberRemoved, User: c.user, Time: now})
		}
	}
	for _, c := range changes {
		if c.isJoin() {
			evs = append(evs, Event{Type: EventMemberAdded, User: c.user, Time: now})
		}
	}
	if count == 0 {
		evs = append(evs, Event{Type: EventRoomVacated, Time: now})
	}
	ev.RoomEvents(r.name, evs)
}
