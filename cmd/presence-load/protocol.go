package main

import (
	"fmt"
	"slices"
	"strings"
)

// A protocol builds the messages of one server's wire protocol and reads its replies.
// It holds no per-connection state beyond what is passed in; calls for one connection
// come from one goroutine.
//
// The load generator builds one protocol value per connection (see protocols), so an
// implementation may keep scratch space in it (presencedProto keeps the event it
// passes to fn, so that Parse allocates nothing), never state that outlives a call.
type protocol interface {
	Hello(dst []byte, user, token string) []byte // first message of a session
	Join(dst []byte, id uint32, room, status string) []byte
	Leave(dst []byte, id uint32, room string) []byte
	Set(dst []byte, id uint32, room, user, status string, sentNs int64) []byte
	Typing(dst []byte, room, user string, on bool, sentNs int64) []byte
	// Parse reads one text message from the server and calls fn once per event in it
	// (Centrifugo packs several newline-separated replies into one frame). It returns a
	// reply to send at once (an answer to an application ping) or nil.
	Parse(p []byte, fn func(ev *event)) (reply []byte, err error)
}

// A resumer is a protocol whose hello can rejoin a room from a cursor
// (presenced's hello "resume"). A reconnecting client of a protocol without
// it sends Hello, then Join.
type resumer interface {
	// HelloResume is Hello that also rejoins room with status, resuming from
	// cursor (empty: the server sends a full sync).
	HelloResume(dst []byte, user, token, room string, cursor []byte, status string) []byte
}

// eventKind is what an event reports.
type eventKind uint8

const (
	evOther   eventKind = iota // anything the scenarios do not look at (pong, refresh, ...)
	evWelcome                  // the session is open (presenced welcome, Centrifugo connect reply)
	evAck                      // command id succeeded
	evErr                      // command id (0: none) failed with code
	evSync                     // the full state of room follows: forget what you knew of it
	evChange                   // user's status changed
	evLeave                    // user left room
	evJoin                     // user is a member of room (a join, or a member listed by a sync)
	evTyping                   // user started (on) or stopped typing; an empty user: see below
	evBye                      // the server is going away: reconnect after retryMS
	evDiff                     // presenced only: the events of one diff of room follow (from, cur)
)

// event is one thing the server said. Byte slices may alias the message
// passed to Parse: copy to keep.
//
// A sync is reported as evSync (room, cur, members, partial), then one evJoin
// per member it lists, then its typing list. A typing list that replaces the
// whole set (presenced) is reported as evTyping with an empty user and on
// false ("nobody types"), then one evTyping with on true per user listed;
// protocols that send one user's change (Centrifugo) report just that.
type event struct {
	kind    eventKind
	id      uint32 // evAck/evErr: the command
	room    []byte // may alias p: copy to keep; an evSync without one answers the client's own join
	user    []byte // evChange/evJoin/evLeave/evTyping: the member (one event per member)
	status  []byte // evChange/evJoin/evSync: its status
	sentNs  int64  // evChange/evTyping: the "ts" the sender embedded, 0 when absent
	on      bool   // evTyping
	members int    // evSync: how many members the sync listed
	code    string // evErr code / close reason

	// Extensions of LOAD4.md's event (zero for protocols that do not fill them).
	from, cur []byte // evDiff: the diff's cursors; evSync: cur
	partial   bool   // evSync: the server listed only some members (room over its list limit)
	retryMS   int64  // evBye: when to come back
}

// protocols maps each -target to the constructor of its protocol: one value
// per connection. A new target adds one line.
func protocols() map[string]func() protocol {
	centrifugo := new(centrifugoProto) // safe for concurrent use; holds a pool
	return map[string]func() protocol{
		"presenced":  func() protocol { return new(presencedProto) },
		"centrifugo": func() protocol { return centrifugo },
	}
}

// protocolFor returns the constructor of target's protocol.
func protocolFor(target string) (func() protocol, error) {
	all := protocols()
	if mk, ok := all[target]; ok {
		return mk, nil
	}
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	slices.Sort(names)
	return nil, fmt.Errorf("-target %q: unknown; available: %s", target, strings.Join(names, ", "))
}
