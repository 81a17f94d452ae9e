package client

import (
	"context"
	"fmt"

	"github.com/presenced/presenced/internal/wire"
)

// cmdKind names a command, for logs and for the answer's special cases.
type cmdKind uint8

const (
	cmdJoin cmdKind = iota + 1
	cmdLeave
	cmdSet
	cmdSync
	cmdGapSync   // internal: a diff broke the cursor chain
	cmdResumeSet // internal: restores a room's state after a resume
	cmdAuth      // internal: token refresh
)

func (k cmdKind) String() string {
	switch k {
	case cmdJoin:
		return "join"
	case cmdLeave:
		return "leave"
	case cmdSet, cmdResumeSet:
		return "set"
	case cmdSync, cmdGapSync:
		return "sync"
	case cmdAuth:
		return "auth"
	}
	return "unknown"
}

// pending is a command waiting for its ack or err. Guarded by Client.mu
// while it sits in Client.pending.
type pending struct {
	id     int64
	kind   cmdKind
	room   string
	msg    []byte // the encoded command
	resend bool   // re-sent after a reconnect instead of failing with ErrDisconnected
	// done receives the answer (nil for ack); nil for internal commands
	// nobody waits for, whose errors become Error events.
	done chan error
	// rollback undoes the command's local effect when the server answers
	// err; called with Client.mu held. May be nil.
	rollback func()
}

// Join joins room with state st (nil: the server's default state, status
// "online") and waits for the server's ack. The room is part of the
// client's state from the call on: it is resumed after a reconnect even
// while the ack is outstanding, and the pending join is re-sent. An err
// answer returns a *CommandError and forgets the room (or restores its
// previous state when it was already joined). When ctx ends first Join
// returns ctx.Err() and the join may still take effect: Leave to be sure.
// The room's view fills when the server's sync arrives (View.Synced).
func (c *Client) Join(ctx context.Context, room string, state *State) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	st := wireState(state)
	return c.do(ctx, cmdJoin, room, func(id int64) ([]byte, func()) {
		r := c.rooms[room]
		var rollback func()
		if r == nil {
			r = &roomState{name: room, members: make(map[string]Member)}
			c.rooms[room] = r
			rollback = func() {
				if c.rooms[room] == r {
					delete(c.rooms, room)
				}
			}
		} else {
			prev := r.state
			rollback = func() {
				if c.rooms[room] == r && r.state == st {
					r.state = prev
				}
			}
		}
		r.state = st
		return wire.AppendJoin(nil, id, room, st), rollback
	})
}

// Leave leaves room and waits for the ack. The client forgets the room at
// once (no resume, no more view); an err answer restores it and returns a
// *CommandError, except not_joined, which means the room is left and
// returns nil. A Leave pending during a reconnect is re-sent.
func (c *Client) Leave(ctx context.Context, room string) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	return c.do(ctx, cmdLeave, room, func(id int64) ([]byte, func()) {
		r := c.rooms[room]
		delete(c.rooms, room)
		rollback := func() {
			if r != nil && c.rooms[room] == nil {
				c.rooms[room] = r
			}
		}
		return wire.AppendLeave(nil, id, room), rollback
	})
}

// Set sets the user's state in a joined room and waits for the ack. The
// state is remembered for resumes from the call on; an err answer restores
// the previous one and returns a *CommandError (not_joined when the room
// is not joined). A Set pending during a reconnect is re-sent.
func (c *Client) Set(ctx context.Context, room string, st State) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	stp := wireState(&st)
	return c.do(ctx, cmdSet, room, func(id int64) ([]byte, func()) {
		var rollback func()
		if r := c.rooms[room]; r != nil {
			prev := r.state
			// As on the server, a set keeps what it leaves out.
			if prev != nil {
				if stp.Status == "" {
					stp.Status = prev.Status
				}
				if len(stp.Meta) == 0 {
					stp.Meta = prev.Meta
				}
			}
			r.state = stp
			rollback = func() {
				if c.rooms[room] == r && r.state == stp {
					r.state = prev
				}
			}
		}
		return wire.AppendSet(nil, id, room, *stp), rollback
	})
}

// Sync asks the server for a full sync of room and waits for the ack; the
// sync itself arrives as an EventSynced right after. The client already
// asks on its own when a diff breaks the cursor chain. A Sync pending
// during a reconnect is re-sent.
func (c *Client) Sync(ctx context.Context, room string) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	return c.do(ctx, cmdSync, room, func(id int64) ([]byte, func()) {
		return wire.AppendSyncRequest(nil, id, room), nil
	})
}

// Typing tells the room the user is (on) or stopped (off) typing. It is
// fire and forget, like the protocol's typing message: no answer, lost when
// no connection is up (ErrDisconnected).
func (c *Client) Typing(room string, on bool) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	c.mu.Lock()
	if err := c.stoppedLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return ErrDisconnected
	}
	if err := s.write(wire.AppendTyping(nil, room, on)); err != nil {
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	return nil
}

func checkRoom(room string) error {
	if !wire.ValidID(room) {
		return &CommandError{Code: ErrCodeBadRequest, Msg: fmt.Sprintf("room %.140q is not 1-128 bytes of [A-Za-z0-9._:@/-]", room)}
	}
	return nil
}

// do registers a command, sends it when a connection is up (otherwise the
// next welcome sends it) and waits for its answer. prepare runs with c.mu
// held: it applies the command's local effect and returns the encoded
// command and its rollback.
func (c *Client) do(ctx context.Context, kind cmdKind, room string, prepare func(id int64) ([]byte, func())) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := &pending{kind: kind, room: room, resend: true, done: make(chan error, 1)}
	c.mu.Lock()
	if err := c.stoppedLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	p.id = c.nextIDLocked()
	p.msg, p.rollback = prepare(p.id)
	c.pending[p.id] = p
	s := c.sess
	c.mu.Unlock()
	c.stats.commands.Add(1)
	if s != nil {
		// A failed write ends the connection; p is then re-sent after the
		// next welcome.
		_ = s.write(p.msg)
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, p.id)
		c.mu.Unlock()
		select {
		case err := <-p.done: // answered meanwhile
			return err
		default:
		}
		return ctx.Err()
	}
}

func (c *Client) nextIDLocked() int64 {
	c.lastID++
	return c.lastID
}

// answer resolves the pending command id with err (nil for ack). It reports
// false when no command waits for id.
func (c *Client) answer(id int64, cerr *CommandError) bool {
	c.mu.Lock()
	p := c.pending[id]
	if p == nil {
		c.mu.Unlock()
		return false
	}
	delete(c.pending, id)
	var err error
	if cerr != nil && !(p.kind == cmdLeave && cerr.Code == ErrCodeNotJoined) {
		err = cerr
		if p.rollback != nil {
			p.rollback()
		}
	}
	c.mu.Unlock()
	if p.done != nil {
		p.done <- err
		return true
	}
	if err != nil {
		c.log.Warn("client: command refused", logKeyType, p.kind.String(), logKeyRoom, p.room, logKeyErr, err)
		c.emit(Event{Kind: EventError, Room: p.room, Err: fmt.Errorf("%s %s: %w", p.kind, p.room, err)})
	}
	return true
}
