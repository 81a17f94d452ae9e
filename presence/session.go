package presence

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/presenced/presenced/internal/wire"
)

type sessionState uint8

const (
	awaitingHello sessionState = iota // opened, no hello yet
	active                            // welcomed
	ended                             // HandleClose ran: the connection is gone
)

// Session is the protocol v1 state machine of one connection. The
// transport calls its Handle methods, never two at once for one Session
// (the poller's per-connection guarantee); the room flushers only use sink
// and closeWith.
type Session struct {
	hub    *Hub   // static
	sink   Sink   // static
	seq    uint64 // static: connection number on this node
	opened int64  // static: hub clock

	// Owned by the Handle methods. (Fields are ordered to pack the struct
	// into the 208-byte size class: an idle connection costs its Session.)
	user      string
	rooms     RoomMatcher // nil: every room
	expires   int64       // the token's exp; 0: none
	expSec    int64       // the token's exp in unix seconds
	subs      []*sub      // joined rooms, at most Config.MaxRooms
	lastSeen  int64       // hub clock time of the last client message
	nextPing  int64       // hub clock
	deadline  int64       // the deadline last given to the sink
	refreshAt int64       // hub clock time when refresh is due; 0 once sent (until the next auth)
	lim       limiter
	heldRoom  string // the room of a typing the rate limit held back; "" if none

	state  sessionState  // owned by the Handle methods
	heldOn bool          // owned by the Handle methods: the held typing's on
	closed atomic.Uint32 // the closeRecord of the first close this side started (closeWith), 0 if none

	prev, next *Session // guarded by the hub's session shard mu
}

// deliver hands a room frame to the sink. Called by a room's flusher
// without the room's lock, or on the event loop with it; it only uses the
// sink. A frame not taken leaves its subscription owed a sync (the room
// tracks how long: see room.settleLocked).
func (s *Session) deliver(frame []byte) bool {
	if s.sink.Offer(frame) == nil {
		return true
	}
	s.hub.cfg.Metrics.SendFailures.Add(1)
	return false
}

// send frames the payload encoded in rb, hands the frame to the sink
// (which copies it) and returns rb to the hub.
func (s *Session) send(rb *replyBuf) {
	rb.frame = s.hub.cfg.Frame(rb.frame[:0], rb.payload)
	if s.sink.Send(rb.frame) != nil {
		s.hub.cfg.Metrics.SendFailures.Add(1)
	} else {
		s.hub.countSent(1, len(rb.frame))
	}
	s.hub.putReply(rb)
}

func (s *Session) ack(id int64) {
	rb := s.hub.reply()
	rb.payload = wire.AppendAck(rb.payload, id)
	s.send(rb)
}

func (s *Session) fail(id int64, code, msg string) {
	rb := s.hub.reply()
	rb.payload = wire.AppendErr(rb.payload, id, code, msg)
	s.send(rb)
}

// badRequest is the err message for a command DecodeCommand refused: the
// *wire.Error's, or a generic one should another error type reach it.
func badRequest(err error) string {
	if we, ok := errors.AsType[*wire.Error](err); ok {
		return we.Msg
	}
	return "bad request"
}

func (s *Session) helloFailed(code wire.CloseCode, reason CloseReason, text, label string) {
	s.hub.cfg.Metrics.HelloFailures.Inc(label)
	s.closeWith(code, reason, text)
}

// HandleText processes one client message.
func (s *Session) HandleText(msg []byte) {
	if s.closing() {
		return
	}
	now := s.hub.now()
	s.lastSeen = now
	// c is on the stack and its strings alias msg: what outlives this call
	// is copied where it is kept (the user in hello, a new room's name in
	// lockRoom, statuses and meta in applyState, a held typing's room).
	var c wire.Request
	err := wire.DecodeRequest(msg, &c)
	if errors.Is(err, wire.ErrSyntax) {
		if s.state == awaitingHello {
			s.hub.cfg.Metrics.HelloFailures.Inc("bad_request")
		}
		s.closeWith(wire.CloseInvalidPayload, CloseProtocol, "invalid JSON")
		return
	}
	if s.state == awaitingHello {
		switch {
		case c.T != wire.THello:
			s.helloFailed(wire.CloseBadRequest, CloseProtocol, "hello must come first", "bad_request")
		case c.V != wire.Version:
			s.helloFailed(wire.CloseVersion, CloseProtocol, "unsupported protocol version", "version")
		case err != nil:
			s.helloFailed(wire.CloseBadRequest, CloseProtocol, badRequest(err), "bad_request")
		default:
			s.hello(&c, now)
		}
		s.rearm()
		return
	}
	interval := int64(float64(time.Second) / s.hub.cfg.Rate)
	if err == nil && c.T == wire.TPong {
		// Answers to our pings are never refused, but a pong flood is
		// ignored beyond the rate and counts as a flood.
		if s.lim.allow(now, interval, s.hub.cfg.Burst) {
			s.pong(c.TS, now)
		} else if s.lim.reject(now, s.hub.cfg.Rate, s.hub.cfg.FloodSeconds) {
			s.closeWith(wire.CloseRateLimited, CloseRate, "rate limited")
		}
		return
	}
	// Malformed commands count against the rate too: a flood of garbage
	// earns 4029 like any other flood.
	if !s.lim.allow(now, interval, s.hub.cfg.Burst) {
		s.limited(&c, err == nil, now)
		return
	}
	if err != nil {
		code := wire.ErrCodeBadRequest
		if we, ok := errors.AsType[*wire.Error](err); ok {
			code = we.Code
		}
		s.fail(c.ID, code, badRequest(err))
		return
	}
	s.applyHeld(now, interval)
	s.command(&c, now)
	s.rearm()
}

// limited handles a command over the rate: typing is held back (and
// coalesced with later ones), others get rate_limited; a flood closes 4029.
func (s *Session) limited(c *wire.Request, valid bool, now int64) {
	s.hub.cfg.Metrics.RateLimited.Add(1)
	if s.lim.reject(now, s.hub.cfg.Rate, s.hub.cfg.FloodSeconds) {
		s.closeWith(wire.CloseRateLimited, CloseRate, "rate limited")
		return
	}
	if valid && c.T == wire.TTyping {
		s.heldRoom, s.heldOn = strings.Clone(c.Room), c.On
		s.rearm()
		return
	}
	s.fail(c.ID, wire.ErrCodeRateLimited, "too many commands: at most "+strconv.FormatFloat(s.hub.cfg.Rate, 'g', -1, 64)+" per second")
}

// applyHeld applies a held typing once a token is available.
func (s *Session) applyHeld(now, interval int64) {
	if s.heldRoom == "" {
		return
	}
	if s.lim.allow(now, interval, s.hub.cfg.Burst) {
		room := s.heldRoom
		s.heldRoom = ""
		s.typing(room, s.heldOn, now)
	}
}

// stateOf is c's state, nil if it carried none.
func stateOf(c *wire.Request) *wire.State {
	if c.HasState {
		return &c.State
	}
	return nil
}

func (s *Session) command(c *wire.Request, now int64) {
	switch c.T {
	case wire.TJoin:
		s.join(c.Room, stateOf(c), c.ID, "", false, now)
	case wire.TLeave:
		s.leave(c.Room, c.ID, now)
	case wire.TSet:
		s.set(c.Room, stateOf(c), c.ID)
	case wire.TTyping:
		s.typing(c.Room, c.On, now)
	case wire.TSync:
		s.syncRoom(c.Room, c.ID, now)
	case wire.TAuth:
		s.auth(strings.Clone(c.Token), c.ID, now) // kept by a caching Authenticator; c.Token aliases the message
	case wire.TPing:
		rb := s.hub.reply()
		rb.payload = wire.AppendPong(rb.payload, c.TS)
		s.send(rb)
	case wire.THello:
		s.fail(c.ID, wire.ErrCodeBadRequest, "hello was already received")
	}
}

func (s *Session) hello(c *wire.Request, now int64) {
	cfg := &s.hub.cfg
	var id Identity
	switch {
	case c.Token != "" && cfg.Auth != nil:
		var err error
		// A copy: an Authenticator may keep the token (a cache), and
		// c.Token aliases the message.
		id, err = cfg.Auth.Authenticate(strings.Clone(c.Token))
		if err != nil && !errors.Is(err, ErrUnauthorized) {
			// The verifier failed, not the token: the client may retry.
			cfg.Logger.Warn("presence: token verification failed", "err", err)
			s.fail(0, wire.ErrCodeInternal, "token verification failed")
			s.helloFailed(wire.CloseInternalError, CloseInternal, "internal error", "internal")
			return
		}
		if err != nil {
			s.helloFailed(wire.CloseUnauthorized, CloseAuth, "invalid token", "unauthorized")
			return
		}
	case c.User != "" && cfg.Insecure:
		id = Identity{User: strings.Clone(c.User)} // kept: c.User aliases the message
	default:
		s.helloFailed(wire.CloseUnauthorized, CloseAuth, "a token is required", "unauthorized")
		return
	}
	if !wire.ValidID(id.User) {
		s.helloFailed(wire.CloseUnauthorized, CloseAuth, "the token's subject is not a valid user id", "unauthorized")
		return
	}
	s.state = active
	s.user = id.User
	s.hub.addUser(s) // Hub.Disconnect finds the session by its user
	s.rooms = id.Rooms
	s.setExpiry(id.Expires, now)
	s.scheduleRefresh(now, false)
	hb := int64(cfg.HeartbeatInterval)
	s.nextPing = now + hb/2 + rand.Int64N(hb/2+1)
	var conn [64]byte
	cid := s.appendConnID(conn[:0])
	rb := s.hub.reply()
	rb.payload = wire.AppendWelcome(rb.payload, cfg.Node, unsafe.String(unsafe.SliceData(cid), len(cid)), s.user,
		cfg.HeartbeatInterval.Milliseconds(), cfg.MaxMessage)
	s.send(rb)
	if s.hub.draining.Load() {
		s.bye()
		return
	}
	if len(c.Resume) == 0 {
		return
	}
	rooms := make([]string, 0, len(c.Resume))
	for room := range c.Resume {
		rooms = append(rooms, room)
	}
	slices.Sort(rooms)
	var forbidden, tooMany []string
	for _, room := range rooms {
		cfg.Metrics.ResumeAttempts.Add(1)
		switch s.join(room, stateOf(c), 0, c.Resume[room], true, now) {
		case wire.ErrCodeForbidden:
			forbidden = append(forbidden, room)
		case wire.ErrCodeTooManyRooms:
			tooMany = append(tooMany, room)
		}
	}
	s.failRooms(wire.ErrCodeForbidden, "the token does not allow", forbidden)
	s.failRooms(wire.ErrCodeTooManyRooms, "a connection joins at most "+strconv.Itoa(cfg.MaxRooms)+" rooms: cannot join", tooMany)
}

// maxListed bounds the room ids an err without id names in its msg, so
// that the answers to one message stay within MaxReplyBytes.
const maxListed = 512

// failRooms sends one err without id for rooms refused by code (resumed
// rooms, or rooms a new token no longer allows): msg is what, then as many
// room ids as fit in maxListed bytes, then how many more there are.
func (s *Session) failRooms(code, what string, rooms []string) {
	if len(rooms) == 0 {
		return
	}
	msg := make([]byte, 0, len(what)+maxListed+32)
	msg = append(msg, what...)
	listed := 0
	for i, room := range rooms {
		if listed > 0 && len(msg)-len(what)+len(room) > maxListed {
			break
		}
		if i > 0 {
			msg = append(msg, ',')
		}
		msg = append(msg, ' ')
		msg = append(msg, room...)
		listed++
	}
	if more := len(rooms) - listed; more > 0 {
		msg = append(msg, " and "...)
		msg = strconv.AppendInt(msg, int64(more), 10)
		msg = append(msg, " more"...)
	}
	rb := s.hub.reply()
	rb.payload = wire.AppendErr(rb.payload, 0, code, unsafe.String(unsafe.SliceData(msg), len(msg)))
	s.send(rb)
}

// MaxReplyBytes bounds the bytes of the frames (with a WebSocket header of
// at most 4 bytes each) a Session Sends in answer to one message: a hello's
// welcome and up to two errs naming refused rooms, or a command's ack or
// err and, for an auth, one err naming the rooms a narrower token left. A
// transport that reads a connection's next message only while this much of
// its outbox is free never drops an answer (poller.Config.ReplyReserve).
const MaxReplyBytes = 2048

// appendConnID appends the connection id: node, "-", seq in base 36.
func (s *Session) appendConnID(dst []byte) []byte {
	dst = append(dst, s.hub.cfg.Node...)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, s.seq, 36)
}

func (s *Session) findSub(room string) *sub {
	for _, sb := range s.subs {
		if sb.r.name == room {
			return sb
		}
	}
	return nil
}

// Every room lock a Session takes is released by a defer: a panic in a
// command (which the transport recovers, closing that connection with
// 1011) must not leave a room locked for every other connection.

// join adds the connection to room (or, if it is in already, applies st
// and sends a fresh sync). Resumed rooms (id 0) continue from cursor when
// the room's history allows, else get a sync. It returns the err code of a
// refusal, "" if joined; a join command (id > 0) is answered here, refused
// resumed rooms are reported by the caller (failRooms).
func (s *Session) join(room string, st *wire.State, id int64, cursor string, resuming bool, now int64) (refused string) {
	if sb := s.findSub(room); sb != nil {
		s.rejoin(sb, st, id, now)
		return ""
	}
	if s.rooms != nil && !s.rooms.Allows(room) {
		if id > 0 {
			s.fail(id, wire.ErrCodeForbidden, "the token does not allow room "+room)
		}
		return wire.ErrCodeForbidden
	}
	if len(s.subs) >= s.hub.cfg.MaxRooms {
		if id > 0 {
			s.fail(id, wire.ErrCodeTooManyRooms, "a connection joins at most "+strconv.Itoa(s.hub.cfg.MaxRooms)+" rooms: cannot join "+room)
		}
		return wire.ErrCodeTooManyRooms
	}
	r := s.hub.lockRoom(room)
	defer r.mu.Unlock()
	sb := r.joinLocked(s, st)
	s.subs = append(s.subs, sb)
	if id > 0 {
		s.ack(id)
	}
	resumed := false
	if resuming {
		if c, ok := wire.ParseCursor(cursor); ok {
			resumed = r.resumeLocked(sb, c, now)
		}
	}
	if resumed {
		s.hub.cfg.Metrics.ResumeSuccesses.Add(1)
	} else {
		r.syncLocked(sb, now)
	}
	return ""
}

// rejoin is a join of a room the connection is in: it applies st and
// sends a fresh sync.
func (s *Session) rejoin(sb *sub, st *wire.State, id, now int64) {
	r := sb.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.members.get(s.user); m != nil {
		r.setStateLocked(m, st)
	}
	if id > 0 {
		s.ack(id)
	}
	r.syncLocked(sb, now)
}

// leave is idempotent: leaving a room the connection is not in is acked.
func (s *Session) leave(room string, id, now int64) {
	if sb := s.findSub(room); sb != nil {
		s.dropSub(sb, 0, now)
	}
	s.ack(id)
}

// dropSub leaves sb's room; hold > 0 keeps the member that long (see
// room.leaveLocked).
func (s *Session) dropSub(sb *sub, hold, now int64) {
	sb.r.leave(sb, hold, now)
	if i := slices.Index(s.subs, sb); i >= 0 {
		s.subs = slices.Delete(s.subs, i, i+1)
	}
}

func (s *Session) set(room string, st *wire.State, id int64) {
	sb := s.findSub(room)
	if sb == nil {
		s.fail(id, wire.ErrCodeNotJoined, "join "+room+" before set")
		return
	}
	sb.r.set(s.user, st)
	s.ack(id)
}

// typing in a room the connection has not joined is ignored (typing has no
// answer).
func (s *Session) typing(room string, on bool, now int64) {
	sb := s.findSub(room)
	if sb == nil {
		return
	}
	if sb.r.setTyping(s.user, on, now) {
		s.hub.cfg.Metrics.TypingEvents.Add(1)
	}
}

func (s *Session) syncRoom(room string, id, now int64) {
	sb := s.findSub(room)
	if sb == nil {
		s.fail(id, wire.ErrCodeNotJoined, "join "+room+" before sync")
		return
	}
	r := sb.r
	r.mu.Lock()
	defer r.mu.Unlock()
	s.ack(id)
	r.syncLocked(sb, now)
}

// auth renews the token. A refused token gets err then 4101; a token for
// another user gets err then 4103 (a connection keeps its identity).
func (s *Session) auth(token string, id, now int64) {
	m := &s.hub.cfg.Metrics
	if s.hub.cfg.Auth == nil {
		m.RefreshFailures.Add(1)
		s.fail(id, wire.ErrCodeUnauthorized, "this server does not verify tokens")
		return
	}
	ident, err := s.hub.cfg.Auth.Authenticate(token)
	switch {
	case errors.Is(err, ErrUnauthorized):
		m.RefreshFailures.Add(1)
		s.fail(id, wire.ErrCodeUnauthorized, "invalid token")
		s.closeWith(wire.CloseUnauthorized, CloseAuth, "invalid token")
		return
	case err != nil:
		m.RefreshFailures.Add(1)
		s.hub.cfg.Logger.Warn("presence: token verification failed", "err", err)
		s.fail(id, wire.ErrCodeInternal, "token verification failed")
		return
	case ident.User != s.user:
		m.RefreshFailures.Add(1)
		s.fail(id, wire.ErrCodeForbidden, "the token is for another user")
		s.closeWith(wire.CloseForbidden, CloseAuth, "the token is for another user")
		return
	}
	m.Refreshes.Add(1)
	s.rooms = ident.Rooms
	s.ack(id)
	if s.rooms != nil {
		// A narrower rooms claim: leave what it no longer allows.
		var left []string
		for i := len(s.subs) - 1; i >= 0; i-- {
			if room := s.subs[i].r.name; !s.rooms.Allows(room) {
				s.dropSub(s.subs[i], 0, now)
				left = append(left, room)
			}
		}
		slices.Sort(left)
		s.failRooms(wire.ErrCodeForbidden, "the new token does not allow these rooms, left:", left)
	}
	s.setExpiry(ident.Expires, now)
	s.scheduleRefresh(now, true)
}

// setExpiry records the token's exp: on the hub's clock, measured from now
// (so a wall-clock step later does not move it), and in unix seconds for
// refresh. The zero time, or one beyond maxTokenLife, is no expiry.
func (s *Session) setExpiry(exp time.Time, now int64) {
	s.expires, s.expSec = 0, 0
	if left := time.Until(exp); !exp.IsZero() && left < maxTokenLife {
		s.expires = now + int64(left)
		s.expSec = exp.Unix()
	}
}

// scheduleRefresh plans the refresh of the current token, RefreshBefore
// its exp (at once for a hello whose token is already that close). After
// an auth it is never sooner than half the new token's remaining life, so a
// client whose tokens are shorter than RefreshBefore is asked once per
// token, not at every deadline.
func (s *Session) scheduleRefresh(now int64, renewed bool) {
	s.refreshAt = 0
	if s.expires == 0 {
		return
	}
	s.refreshAt = s.expires - int64(s.hub.cfg.RefreshBefore)
	if renewed {
		s.refreshAt = max(s.refreshAt, now+(s.expires-now)/2)
	}
}

func (s *Session) pong(ts, now int64) {
	rtt := time.Now().UnixMilli() - ts // ts is the unix ms of our ping
	if ts > 0 && rtt >= 0 && rtt < 3600e3 {
		s.hub.cfg.Metrics.HeartbeatRTT.Observe(float64(rtt) / 1e3)
	}
}

// HandleDeadline runs the session's timers: hello timeout, heartbeats,
// token refresh and expiry, held typing.
func (s *Session) HandleDeadline() {
	if s.closing() {
		return
	}
	cfg := &s.hub.cfg
	now := s.hub.now()
	s.deadline = 0
	if s.state == awaitingHello {
		if now >= s.opened+int64(cfg.HelloTimeout) {
			s.helloFailed(wire.CloseHelloTimeout, CloseHelloTimeout, "no hello", "timeout")
			return
		}
		s.rearm()
		return
	}
	if now >= s.lastSeen+int64(cfg.HeartbeatInterval+cfg.HeartbeatTimeout) {
		s.closeWith(wire.CloseHeartbeat, CloseHeartbeat, "heartbeat timeout")
		return
	}
	if s.expires != 0 && now >= s.expires+int64(cfg.AuthGrace) {
		s.closeWith(wire.CloseTokenExpired, CloseTokenExpired, "token expired")
		return
	}
	if now >= s.nextPing {
		cfg.Metrics.OutboxDepth.Observe(float64(s.sink.Buffered()))
		rb := s.hub.reply()
		rb.payload = wire.AppendPing(rb.payload, time.Now().UnixMilli())
		s.send(rb)
		s.nextPing = now + int64(cfg.HeartbeatInterval)
	}
	if s.refreshAt != 0 && now >= s.refreshAt {
		rb := s.hub.reply()
		rb.payload = wire.AppendRefresh(rb.payload, s.expSec)
		s.send(rb)
		s.refreshAt = 0
	}
	if s.heldRoom != "" {
		s.applyHeld(now, int64(float64(time.Second)/cfg.Rate))
	}
	s.rearm()
}

// rearm gives the sink the earliest of the session's timers.
func (s *Session) rearm() {
	if s.closing() {
		return
	}
	cfg := &s.hub.cfg
	var t int64
	if s.state == awaitingHello {
		t = s.opened + int64(cfg.HelloTimeout)
	} else {
		t = min(s.nextPing, s.lastSeen+int64(cfg.HeartbeatInterval+cfg.HeartbeatTimeout))
		if s.expires != 0 {
			if s.refreshAt != 0 {
				t = min(t, s.refreshAt)
			}
			t = min(t, s.expires+int64(cfg.AuthGrace))
		}
		if s.heldRoom != "" {
			t = min(t, s.lim.nextToken(int64(float64(time.Second)/cfg.Rate), cfg.Burst))
		}
	}
	if t != s.deadline {
		s.deadline = t
		s.sink.SetDeadline(s.hub.wall(t))
	}
}

// HandleBinary closes the connection with 1003: the protocol is text only.
func (s *Session) HandleBinary() {
	s.closeWith(wire.CloseUnsupported, CloseProtocol, "binary messages are not supported")
}

// HandleClose ends the session once the connection is gone; end is what
// the transport saw. It returns why the connection ended (also counted in
// Config.Metrics.Closes) and decides the leave mode of its rooms (see
// ending): members leave at once when the client closed with 1000, broke
// the protocol, or the session closed with a code that forbids a reconnect
// (1003, 1007, 41xx); otherwise (a lost connection, heartbeat timeout,
// slow consumer, token expiry, flood, drain, shutdown, internal error) they
// stay for Config.LeaveGrace. A connection the drain closed keeps them for
// its bye's retry_ms plus Config.LeaveGrace: its client was told to come
// back (elsewhere) only after retry_ms; so does a 40xx Disconnect that
// took over the drain's close (the client saw the bye).
// An operator's close that forbids a reconnect (41xx) also ends the grace
// an earlier lost connection of the user left in the same rooms.
func (s *Session) HandleClose(end ConnEnd) CloseReason {
	now := s.hub.now()
	// Claim and read in one swap: a flusher's 4002 or a Disconnect's
	// takeDrain either came before (and is the session's own close) or
	// finds the session ended.
	own := closeRecord(s.closed.Swap(endedRecord))
	reason, grace := ending(end, own)
	var hold int64
	switch {
	case grace:
		hold = int64(s.hub.cfg.LeaveGrace)
		if reason == CloseDrain || own&overDrain != 0 { // the client saw bye's retry_ms
			hold += int64(s.hub.drainRetry(s.seq))
		}
	case reason == CloseAdmin:
		hold = -1 // 41xx: an earlier lost connection's grace ends too (room.leaveLocked)
	}
	s.state = ended
	for len(s.subs) > 0 {
		s.dropSub(s.subs[len(s.subs)-1], hold, now)
	}
	s.subs = nil
	s.hub.unregister(s)
	s.hub.cfg.Metrics.Closes.Inc(reason)
	s.hub.cfg.Metrics.ConnLifetime.Observe(float64(now-s.opened) / 1e9)
	return reason
}

// bye tells the client this node is draining, with its retry_ms
// (Hub.drainRetry: uniform over [0, the drain window)), then closes 1001,
// unless the session already closed. Safe from any goroutine: it only uses
// the sink and closeWith's record.
func (s *Session) bye() {
	if !s.claimClose(wire.CloseGoingAway, CloseDrain) {
		return
	}
	rb := s.hub.reply()
	rb.payload = wire.AppendBye(rb.payload, "draining", s.hub.drainRetry(s.seq).Milliseconds())
	s.send(rb)
	s.sink.Close(wire.CloseGoingAway, "draining")
}
