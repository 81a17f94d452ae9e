package main

import (
	"bytes"
	"errors"
	"strconv"
	"sync"

	"github.com/presenced/presenced/internal/wire"
)

// centrifugoProto speaks Centrifugo's client protocol (v2, JSON over
// WebSocket, as Centrifugo v6 serves it on /connection/websocket) so that
// the scenarios can run against Centrifugo with bench/centrifugo/config.json.
//
// The mapping onto the protocol abstraction:
//   - Hello is a connect command {"id":…,"connect":{"token":T,"name":"presence-load"}};
//     the user comes from the token's "sub" claim (mint it with the secret of the
//     config), the user argument is not sent. Its reply is evWelcome.
//   - Join subscribes to the channel named room (the config's channel options
//     without namespace have presence and join/leave on); status is not sent.
//     Its reply is evAck then evSync (room nil, members 0: the reply carries
//     neither the channel nor the presence; match it by id).
//   - Leave unsubscribes; Set and Typing publish {"u":user,"s":status,"ts":ns}
//     and {"u":user,"typing":on,"ts":ns} into the channel. Set's reply is evAck.
//   - Pushes: a publication with "s" is evChange, with "typing" evTyping, any
//     other publication evOther; join and leave pushes are evJoin and evLeave
//     (user = info.user); a server unsubscribe is evErr with id 0 and the room;
//     a disconnect push is evBye.
//   - An error reply is evErr with the command's id and code "<code> <message>".
//
// Commands that the contract gives no id (Hello, Typing) carry the ids
// centrifugoHelloID and centrifugoTypingID, at or above 1<<31: the
// successful reply to a Typing publish is evOther, so the caller's ids (below
// 1<<31) never meet them.
//
// Centrifugo's application ping is the message {} and must be answered with
// {} (or it closes the connection 8 s later): Parse returns that reply.
// A publisher receives its own publication too, before its publish reply
// (both usually in one message). A token with "exp" makes Centrifugo close
// the connection at expiry (it expects a refresh): mint it for the whole run.
//
// A centrifugoProto holds no per-connection state; its methods are safe for
// concurrent use. The zero value is ready; it must not be copied after first use.
type centrifugoProto struct {
	// events recycles the event handed to Parse's callback, so that Parse
	// does not allocate one per message (fn's argument escapes).
	events sync.Pool
}

const (
	centrifugoHelloID  uint32 = 1 << 31
	centrifugoTypingID uint32 = 1<<31 + 1
	centrifugoName            = "presence-load"
)

var errCentrifugoSyntax = errors.New("presence-load: centrifugo: malformed JSON")

func (*centrifugoProto) Hello(dst []byte, user, token string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, uint64(centrifugoHelloID), 10)
	dst = append(dst, `,"connect":{`...)
	if token != "" {
		dst = append(dst, `"token":`...)
		dst = wire.AppendString(dst, token)
		dst = append(dst, ',')
	}
	return append(dst, `"name":"`+centrifugoName+`"}}`...)
}

func (*centrifugoProto) Join(dst []byte, id uint32, room, status string) []byte {
	return appendChannelCommand(dst, id, "subscribe", room)
}

func (*centrifugoProto) Leave(dst []byte, id uint32, room string) []byte {
	return appendChannelCommand(dst, id, "unsubscribe", room)
}

func (*centrifugoProto) Set(dst []byte, id uint32, room, user, status string, sentNs int64) []byte {
	dst = appendPublish(dst, id, room, user)
	dst = append(dst, `,"s":`...)
	dst = wire.AppendString(dst, status)
	return appendTS(dst, sentNs)
}

func (*centrifugoProto) Typing(dst []byte, room, user string, on bool, sentNs int64) []byte {
	dst = appendPublish(dst, centrifugoTypingID, room, user)
	dst = append(dst, `,"typing":`...)
	dst = strconv.AppendBool(dst, on)
	return appendTS(dst, sentNs)
}

// appendChannelCommand appends {"id":id,"<method>":{"channel":room}}.
func appendChannelCommand(dst []byte, id uint32, method, room string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, `,"`...)
	dst = append(dst, method...)
	dst = append(dst, `":{"channel":`...)
	dst = wire.AppendString(dst, room)
	return append(dst, "}}"...)
}

// appendPublish appends the publish command up to the data's "u" member;
// appendTS closes it.
func appendPublish(dst []byte, id uint32, room, user string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, `,"publish":{"channel":`...)
	dst = wire.AppendString(dst, room)
	dst = append(dst, `,"data":{"u":`...)
	return wire.AppendString(dst, user)
}

func appendTS(dst []byte, sentNs int64) []byte {
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, sentNs, 10)
	return append(dst, "}}}"...)
}

// Parse reads one message: one or more replies separated by newlines. The
// returned reply (the answer to a ping) aliases p: send it before p is reused.
func (c *centrifugoProto) Parse(p []byte, fn func(ev *event)) (reply []byte, err error) {
	ev, _ := c.events.Get().(*event)
	if ev == nil {
		ev = new(event)
	}
	defer func() {
		*ev = event{} // keep no slice of p alive in the pool
		c.events.Put(ev)
	}()
	for len(p) > 0 {
		line := p
		p = nil
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, p = line[:i], line[i+1:]
		}
		s := jsonScanner{b: line}
		if s.ws(); s.i == len(s.b) {
			continue
		}
		if isEmptyObject(line[s.i:]) {
			reply = line[s.i : s.i+2]
			continue
		}
		if err := s.reply(ev, fn); err != nil {
			return reply, err
		}
	}
	return reply, nil
}

// isEmptyObject reports whether b is {} followed by nothing but blanks.
func isEmptyObject(b []byte) bool {
	if len(b) < 2 || b[0] != '{' || b[1] != '}' {
		return false
	}
	s := jsonScanner{b: b, i: 2}
	s.ws()
	return s.i == len(b)
}

// The result member a Reply carried.
const (
	resultNone = iota
	resultError
	resultPush
	resultConnect
	resultSubscribe
	resultPublish
	resultOther
)

// reply parses one Reply object and reports its event(s).
func (s *jsonScanner) reply(ev *event, fn func(*event)) error {
	*ev = event{}
	result := resultNone
	var msg []byte
	var errCode int64
	if !s.open() {
		return s.fail()
	}
	for k, ok := s.key(); ok; k, ok = s.key() {
		switch string(k) {
		case "id":
			ev.id = uint32(s.int())
		case "error":
			result = resultError
			for k, ok := s.objectKey(); ok; k, ok = s.key() {
				switch string(k) {
				case "code":
					errCode = s.int()
				case "message":
					msg = s.str()
				default:
					s.skip()
				}
			}
		case "push":
			result = resultPush
			s.push(ev)
		case "connect":
			result = resultConnect
			s.skip()
		case "subscribe":
			result = resultSubscribe
			s.skip()
		case "publish":
			result = resultPublish
			s.skip()
		default:
			if result == resultNone {
				result = resultOther
			}
			s.skip()
		}
	}
	if s.err != nil {
		return s.err
	}
	if s.ws(); s.i != len(s.b) {
		return s.fail()
	}
	switch result {
	case resultError:
		ev.kind = evErr
		ev.code = strconv.FormatInt(errCode, 10) + " " + string(msg)
	case resultPush: // ev is filled
	case resultConnect:
		ev.kind = evWelcome
	case resultSubscribe:
		ev.kind = evAck
		fn(ev)
		*ev = event{kind: evSync, id: ev.id}
	case resultPublish:
		ev.kind = evAck
		if ev.id == centrifugoTypingID {
			ev.kind = evOther
		}
	default: // unsubscribe, presence, …: an ack when it answers a command
		ev.kind = evAck
		if ev.id == 0 {
			ev.kind = evOther
		}
	}
	fn(ev)
	return nil
}

// push parses a Push object, {"channel":…, "pub"|"join"|"leave"|…:{…}}, into ev.
func (s *jsonScanner) push(ev *event) {
	ev.kind = evOther
	for k, ok := s.objectKey(); ok; k, ok = s.key() {
		switch string(k) {
		case "channel":
			ev.room = s.str()
		case "pub":
			var publisher []byte
			for k, ok := s.objectKey(); ok; k, ok = s.key() {
				switch string(k) {
				case "data":
					s.data(ev)
				case "info":
					publisher = s.infoUser()
				default:
					s.skip()
				}
			}
			if ev.user == nil { // data without "u": the publisher's user
				ev.user = publisher
			}
		case "join", "leave":
			ev.kind = evJoin
			if k[0] == 'l' {
				ev.kind = evLeave
			}
			for k, ok := s.objectKey(); ok; k, ok = s.key() {
				if string(k) == "info" {
					ev.user = s.infoUser()
				} else {
					s.skip()
				}
			}
		case "unsubscribe", "disconnect":
			ev.kind = evErr
			if k[0] == 'd' {
				ev.kind = evBye
			}
			var code int64
			var reason []byte
			for k, ok := s.objectKey(); ok; k, ok = s.key() {
				switch string(k) {
				case "code":
					code = s.int()
				case "reason":
					reason = s.str()
				default:
					s.skip()
				}
			}
			ev.code = strconv.FormatInt(code, 10) + " " + string(reason)
		default:
			s.skip()
		}
	}
}

// data reads a publication's data: {"u":…,"s":…,"ts":…} is a status change,
// {"u":…,"typing":…,"ts":…} a typing signal; anything else leaves ev.kind.
func (s *jsonScanner) data(ev *event) {
	for k, ok := s.objectKey(); ok; k, ok = s.key() {
		switch string(k) {
		case "u":
			ev.user = s.str()
		case "s":
			ev.status = s.str()
			ev.kind = evChange
		case "typing":
			ev.kind = evTyping
			v := s.skip()
			ev.on = len(v) > 0 && v[0] == 't'
		case "ts":
			ev.sentNs = s.int()
		default:
			s.skip()
		}
	}
}

// infoUser reads a ClientInfo object and returns its "user".
func (s *jsonScanner) infoUser() (user []byte) {
	for k, ok := s.objectKey(); ok; k, ok = s.key() {
		if string(k) == "user" {
			user = s.str()
		} else {
			s.skip()
		}
	}
	return user
}
