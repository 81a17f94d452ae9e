package client

import (
	"encoding/json"

	"github.com/presenced/presenced/internal/wire"
)

// The protocol's types, as the client's API exposes them. They are the
// client's own: the client converts them from and to the protocol's
// messages, so that programs outside this module can name them.

// State is a member's state as the client sends it in join and set. A
// field left empty is left out: the member keeps its value, and a new
// member gets status "online" and meta {}.
type State struct {
	Status string          // 1–32 bytes
	Meta   json.RawMessage // a JSON object of at most 512 bytes
}

// Sync is a room's full state as the server sent it, carried by an
// EventSynced event.
type Sync struct {
	Cursor  string   // the room's cursor
	Count   int      // members in the room; more than len(Members) when Partial
	Partial bool     // Members is a subset (see View.Partial)
	Members []Member // the members, or a subset of them when Partial
	Typing  []string // users typing
}

// Diff is a room's change as the server sent it, carried by an
// EventChanged event: what happened between the cursors From and Cursor.
type Diff struct {
	From   string   // the cursor the diff continues (the view's cursor before it)
	Cursor string   // the room's cursor after it
	Count  int      // members in the room after it
	Join   []Member // members who joined
	Update []Member // members whose state changed
	Leave  []string // users who left
	// Typing is the new typing set when TypingChanged; diffs carry it only
	// when it changed.
	Typing        []string
	TypingChanged bool
}

// newSync converts a sync message.
func newSync(ev *wire.Event) *Sync {
	s := &Sync{Cursor: ev.Cur, Count: ev.Count, Partial: ev.Partial, Members: wireMembers(ev.Members)}
	if ev.Typing != nil {
		s.Typing = *ev.Typing
	}
	return s
}

// newDiff converts a diff message.
func newDiff(ev *wire.Event) *Diff {
	d := &Diff{
		From:   ev.From,
		Cursor: ev.Cur,
		Count:  ev.Count,
		Join:   wireMembers(ev.Join),
		Update: wireMembers(ev.Update),
		Leave:  ev.Leave,
	}
	if ev.Typing != nil {
		d.Typing, d.TypingChanged = *ev.Typing, true
	}
	return d
}

func wireMembers(ms []wire.Member) []Member {
	if len(ms) == 0 {
		return nil
	}
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = Member{User: m.U, Status: m.S, Meta: m.M}
	}
	return out
}

// CloseCode is a WebSocket close code of the protocol.
type CloseCode uint16

// String names the code as the protocol's contract does ("slow_consumer"
// for 4002), or "unknown".
func (c CloseCode) String() string { return wire.CloseCode(c).String() }

// Close codes of the protocol (see the contract's table).
const (
	CloseNormal          CloseCode = 1000 // the client closed; no reconnect
	CloseGoingAway       CloseCode = 1001 // the server is draining: reconnect after the bye's retry_ms
	CloseProtocolError   CloseCode = 1002
	CloseUnsupported     CloseCode = 1003 // a binary frame
	CloseInvalidPayload  CloseCode = 1007 // invalid UTF-8 or JSON
	ClosePolicyViolation CloseCode = 1008 // the client sent far more than it read: reconnect with backoff
	CloseTooBig          CloseCode = 1009
	CloseInternalError   CloseCode = 1011 // the server failed: reconnect with backoff
	CloseHeartbeat       CloseCode = 4001 // no client message for hb + hb_timeout
	CloseSlowConsumer    CloseCode = 4002 // the client did not read fast enough
	CloseTokenExpired    CloseCode = 4003 // the token expired and was not renewed in time
	CloseHelloTimeout    CloseCode = 4004 // no hello in time
	CloseRateLimited     CloseCode = 4029 // far over the command rate for seconds
	CloseBadRequest      CloseCode = 4100 // a bad hello, or a message other than hello first
	CloseUnauthorized    CloseCode = 4101 // bad or expired token
	CloseForbidden       CloseCode = 4103
	CloseVersion         CloseCode = 4105 // unsupported protocol version
)

// Error codes of err answers (CommandError.Code).
const (
	ErrCodeBadRequest   = "bad_request"
	ErrCodeUnauthorized = "unauthorized"
	ErrCodeForbidden    = "forbidden"
	ErrCodeNotJoined    = "not_joined"
	ErrCodeTooManyRooms = "too_many_rooms"
	ErrCodeRateLimited  = "rate_limited"
	ErrCodeTooLarge     = "too_large"
	ErrCodeInternal     = "internal"
)
