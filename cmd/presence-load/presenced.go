package main

import (
	"errors"
	"strconv"

	"github.com/presenced/presenced/internal/wire"
)

// presencedProto speaks presenced's protocol v1 (docs/protocol.md). Its
// only field is scratch: the event Parse passes to fn, kept here so that
// Parse allocates nothing for diffs and syncs.
type presencedProto struct {
	ev event
}

var (
	_ protocol = (*presencedProto)(nil)
	_ resumer  = (*presencedProto)(nil)
)

// errBadMessage is Parse's answer to a message it cannot read.
var errBadMessage = errors.New("presenced: bad server message")

func (*presencedProto) Hello(dst []byte, user, token string) []byte {
	return append(appendHello(dst, user, token), '}')
}

func (*presencedProto) HelloResume(dst []byte, user, token, room string, cursor []byte, status string) []byte {
	dst = appendHello(dst, user, token)
	dst = append(dst, `,"resume":{`...)
	dst = wire.AppendString(dst, room)
	dst = append(dst, ':', '"')
	dst = append(dst, cursor...) // cursors are base-36 and dots: nothing to escape
	dst = append(dst, `"},"state":{"status":`...)
	dst = wire.AppendString(dst, status)
	return append(dst, "}}"...)
}

func appendHello(dst []byte, user, token string) []byte {
	dst = append(dst, `{"t":"hello","v":1`...)
	if token != "" {
		dst = append(dst, `,"token":`...)
		return wire.AppendString(dst, token)
	}
	dst = append(dst, `,"user":`...)
	return wire.AppendString(dst, user)
}

func appendCommand(dst []byte, t string, id uint32, room string) []byte {
	dst = append(dst, `{"t":"`...)
	dst = append(dst, t...)
	dst = append(dst, `","id":`...)
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, `,"room":`...)
	return wire.AppendString(dst, room)
}

func (*presencedProto) Join(dst []byte, id uint32, room, status string) []byte {
	dst = appendCommand(dst, "join", id, room)
	dst = append(dst, `,"state":{"status":`...)
	dst = wire.AppendString(dst, status)
	return append(dst, "}}"...)
}

func (*presencedProto) Leave(dst []byte, id uint32, room string) []byte {
	return append(appendCommand(dst, "leave", id, room), '}')
}

// Set sends the status with the send time in the meta: {"ts":<unix ns>}.
func (*presencedProto) Set(dst []byte, id uint32, room, _, status string, sentNs int64) []byte {
	dst = appendCommand(dst, "set", id, room)
	dst = append(dst, `,"state":{"status":`...)
	dst = wire.AppendString(dst, status)
	dst = append(dst, `,"meta":{"ts":`...)
	dst = strconv.AppendInt(dst, sentNs, 10)
	return append(dst, "}}}"...)
}

// Typing carries no send time: presenced's typing has no meta.
func (*presencedProto) Typing(dst []byte, room, _ string, on bool, _ int64) []byte {
	return wire.AppendTyping(dst, room, on)
}

// msgFields is where the top-level fields of a server message are: values
// as raw strings or numbers, arrays as offsets into the message (-1: absent).
type msgFields struct {
	t, room, from, cur, code, reason []byte
	id, ts, retryMS                  int64
	members, join, update, leave     int
	typing                           int
	partial                          bool
}

// Parse reads one server message. Pings are answered with a pong (the only
// allocation); every other message allocates nothing unless it is an err
// or a bye (their code is a string).
func (pp *presencedProto) Parse(p []byte, fn func(ev *event)) ([]byte, error) {
	f := msgFields{members: -1, join: -1, update: -1, leave: -1, typing: -1}
	s := jscan{p: p}
	s.object(func(key []byte) {
		switch string(key) {
		case "t":
			f.t = s.str()
		case "room":
			f.room = s.str()
		case "from":
			f.from = s.str()
		case "cur":
			f.cur = s.str()
		case "code":
			f.code = s.str()
		case "reason":
			f.reason = s.str()
		case "id":
			f.id = s.int()
		case "ts":
			f.ts = s.int()
		case "retry_ms":
			f.retryMS = s.int()
		case "partial":
			f.partial = s.literal()
		case "members", "join", "update", "leave", "typing":
			at := s.i
			if s.peek() == 'n' { // null: as if absent
				s.literal()
				return
			}
			s.skip()
			switch string(key) {
			case "members":
				f.members = at
			case "join":
				f.join = at
			case "update":
				f.update = at
			case "leave":
				f.leave = at
			case "typing":
				f.typing = at
			}
		default:
			s.skip()
		}
	})
	if s.bad || !s.end() || f.t == nil {
		return nil, errBadMessage
	}
	ev := &pp.ev
	*ev = event{room: f.room}
	switch string(f.t) {
	case "ping":
		return wire.AppendPong(nil, f.ts), nil
	case "welcome":
		ev.kind = evWelcome
		fn(ev)
	case "ack":
		ev.kind, ev.id = evAck, uint32(f.id)
		fn(ev)
	case "err":
		ev.kind, ev.id, ev.code = evErr, uint32(f.id), string(f.code)
		fn(ev)
	case "bye":
		ev.kind, ev.code, ev.retryMS = evBye, string(f.reason), f.retryMS
		fn(ev)
	case "sync":
		ev.kind, ev.cur, ev.partial = evSync, f.cur, f.partial
		if f.members >= 0 {
			s.i = f.members
			s.array(func() { ev.members++; s.skip() })
		}
		fn(ev)
		if !pp.members(p, f.members, evJoin, fn) || !pp.typing(p, f.typing, fn) {
			return nil, errBadMessage
		}
	case "diff":
		ev.kind, ev.from, ev.cur = evDiff, f.from, f.cur
		fn(ev)
		if !pp.members(p, f.join, evJoin, fn) || !pp.members(p, f.update, evChange, fn) {
			return nil, errBadMessage
		}
		if f.leave >= 0 {
			s := jscan{p: p, i: f.leave}
			s.array(func() {
				*ev = event{kind: evLeave, room: f.room, user: s.str()}
				if !s.bad {
					fn(ev)
				}
			})
			if s.bad {
				return nil, errBadMessage
			}
		}
		if !pp.typing(p, f.typing, fn) {
			return nil, errBadMessage
		}
	default:
		ev.kind = evOther
		fn(ev)
	}
	return nil, nil
}

// members reports each member object of the array at offset at (-1:
// none) as an event of kind k; false when they are not member objects.
func (pp *presencedProto) members(p []byte, at int, k eventKind, fn func(ev *event)) bool {
	if at < 0 {
		return true
	}
	room := pp.ev.room
	s := jscan{p: p, i: at}
	s.array(func() {
		ev := &pp.ev
		*ev = event{kind: k, room: room}
		s.object(func(key []byte) {
			switch string(key) {
			case "u":
				ev.user = s.str()
			case "s":
				ev.status = s.str()
			case "m":
				if s.peek() != '{' {
					s.skip()
					return
				}
				s.object(func(key []byte) {
					if string(key) == "ts" && s.peek() != '"' {
						ev.sentNs = s.int()
						return
					}
					s.skip()
				})
			default:
				s.skip()
			}
		})
		if !s.bad {
			fn(ev)
		}
	})
	return !s.bad
}

// typing reports the typing list at offset at (-1: absent): the reset,
// then one event per user; false when it is not a list of strings.
func (pp *presencedProto) typing(p []byte, at int, fn func(ev *event)) bool {
	if at < 0 {
		return true
	}
	room := pp.ev.room
	pp.ev = event{kind: evTyping, room: room}
	fn(&pp.ev)
	s := jscan{p: p, i: at}
	s.array(func() {
		pp.ev = event{kind: evTyping, room: room, user: s.str(), on: true}
		if !s.bad {
			fn(&pp.ev)
		}
	})
	return !s.bad
}
