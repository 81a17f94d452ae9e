package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/presenced/presenced/internal/wire"
)

// errClosing is returned by writes after the client sent its close frame.
var errClosing = errors.New("client: connection closing")

// session is one WebSocket connection, from dial to close.
type session struct {
	// Static after connect.
	conn         net.Conn
	br           *bufio.Reader // the handshake's buffered reader, or nil
	writeTimeout time.Duration
	resumed      bool          // the hello carried resume
	resumeSets   []string      // rooms whose state differs from the hello's state
	hb           time.Duration // heartbeat interval from welcome; 0: none announced
	welcomed     time.Time
	welcome      wire.Event

	// token is the token the connection is authenticated with. Guarded by
	// Client.mu once the session is adopted (a refresh replaces it).
	token string

	// Owned by the goroutine reading the connection (Dial's, then run).
	rd      wsutil.Reader
	ctrl    wsutil.FrameHandlerFunc
	in      bytes.Buffer
	byeSeen bool
	bye     time.Duration

	wmu       sync.Mutex
	closeSent bool         // guarded by wmu
	out       bytes.Buffer // guarded by wmu
}

func newSession(conn net.Conn, br *bufio.Reader, token string, writeTimeout time.Duration) *session {
	s := &session{conn: conn, br: br, token: token, writeTimeout: writeTimeout}
	var src io.Reader = conn
	if br != nil {
		src = br
	}
	s.ctrl = wsutil.ControlFrameHandler(controlWriter{s}, ws.StateClientSide)
	s.rd = wsutil.Reader{
		Source:         src,
		State:          ws.StateClientSide,
		CheckUTF8:      true,
		MaxMessageSize: maxMessage,
		OnIntermediate: s.ctrl,
	}
	return s
}

// write sends p as one text frame. A failed write closes the connection,
// which ends the read loop and starts a reconnect.
func (s *session) write(p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closeSent {
		return errClosing
	}
	s.out.Reset()
	if err := wsutil.WriteClientMessage(&s.out, ws.OpText, p); err != nil {
		return err
	}
	return s.flushLocked(s.out.Bytes())
}

func (s *session) flushLocked(b []byte) error {
	s.conn.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	_, err := s.conn.Write(b)
	if err != nil {
		s.conn.Close()
	}
	return err
}

// sendClose sends a close frame with code, once.
func (s *session) sendClose(code ws.StatusCode) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closeSent {
		return
	}
	s.closeSent = true
	s.out.Reset()
	if err := wsutil.WriteClientMessage(&s.out, ws.OpClose, ws.NewCloseFrameBody(code, "")); err != nil {
		return
	}
	_ = s.flushLocked(s.out.Bytes())
}

// controlWriter is where the frame reader answers control frames (pong
// frames, the close echo): serialized with the client's writes, and
// silent once the client sent its own close frame.
type controlWriter struct{ s *session }

func (w controlWriter) Write(p []byte) (int, error) {
	w.s.wmu.Lock()
	defer w.s.wmu.Unlock()
	if w.s.closeSent {
		return len(p), nil
	}
	if err := w.s.flushLocked(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// next returns the next text message, valid until the following call.
// Control frames are answered on the way; binary messages are skipped.
func (s *session) next() ([]byte, error) {
	for {
		hdr, err := s.rd.NextFrame()
		if err != nil {
			return nil, err
		}
		if hdr.OpCode.IsControl() {
			if err := s.ctrl(hdr, &s.rd); err != nil {
				return nil, err
			}
			continue
		}
		if hdr.OpCode != ws.OpText {
			if err := s.rd.Discard(); err != nil {
				return nil, err
			}
			continue
		}
		s.in.Reset()
		if _, err := s.in.ReadFrom(&s.rd); err != nil {
			return nil, err
		}
		return s.in.Bytes(), nil
	}
}

// release closes the connection and returns the handshake buffer.
func (s *session) release() {
	s.conn.Close()
	if s.br != nil {
		ws.PutReader(s.br)
		s.br = nil
	}
}

// aLongTimeAgo is a deadline in the past: it interrupts a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// connect dials, sends hello and waits for welcome. token "" means: get one
// from the configuration. It returns the token used, also on failure.
func (c *Client) connect(ctx context.Context, token string) (*session, string, error) {
	c.stats.dials.Add(1)
	if token == "" {
		var err error
		if token, err = c.token(ctx); err != nil {
			return nil, "", err
		}
	}
	d := ws.Dialer{Timeout: c.cfg.DialTimeout}
	if len(c.cfg.Header) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(c.cfg.Header)
	}
	conn, br, _, err := d.Dial(ctx, c.cfg.URL)
	if err != nil {
		return nil, token, fmt.Errorf("client: dial %s: %w", c.cfg.URL, err)
	}
	s := newSession(conn, br, token, c.cfg.HeartbeatTimeout)
	hello, err := c.hello(s)
	if err == nil {
		err = s.write(hello)
	}
	if err != nil {
		s.release()
		return nil, token, fmt.Errorf("client: hello: %w", err)
	}

	conn.SetReadDeadline(time.Now().Add(c.cfg.DialTimeout))
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(aLongTimeAgo) })
	msg, err := s.next()
	if !stop() && err == nil {
		err = ctx.Err()
	}
	var ev wire.Event
	if err == nil {
		err = wire.DecodeEvent(msg, &ev)
	}
	if err == nil && ev.T != wire.TWelcome {
		err = fmt.Errorf("client: expected welcome, got %q", ev.T)
	}
	if err != nil {
		s.release()
		if ctx.Err() != nil {
			return nil, token, ctx.Err()
		}
		if err = readError(err); errors.Is(err, ErrServerSilent) {
			err = fmt.Errorf("client: no welcome within %v", c.cfg.DialTimeout)
		}
		return nil, token, err
	}
	s.hb = time.Duration(ev.HB) * time.Millisecond
	s.welcome = ev
	s.welcomed = time.Now()
	return s, token, nil
}

// token returns the token for a new connection.
func (c *Client) token(ctx context.Context) (string, error) {
	if c.cfg.TokenFunc == nil {
		return c.cfg.Token, nil
	}
	tok, err := c.cfg.TokenFunc(ctx)
	if err != nil {
		return "", fmt.Errorf("client: token: %w", err)
	}
	return tok, nil
}

// hello encodes the hello of s: the token (or user), and every joined
// room with its last cursor. The hello's state is the one most rooms share;
// rooms whose state differs are listed in s.resumeSets and get a set right
// after welcome.
func (c *Client) hello(s *session) ([]byte, error) {
	h := wire.Hello{Token: s.token}
	if h.Token == "" {
		h.User = c.cfg.User
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rooms) > 0 {
		names := make([]string, 0, len(c.rooms))
		h.Resume = make(map[string]string, len(c.rooms))
		count := make(map[string]int)
		for name, r := range c.rooms {
			names = append(names, name)
			h.Resume[name] = r.cursor
			count[stateKey(r.state)]++
		}
		slices.Sort(names)
		best := ""
		for _, name := range names { // the largest group; ties go to the first room's
			if k := stateKey(c.rooms[name].state); best == "" || count[k] > count[best] {
				best = k
				h.State = cloneState(c.rooms[name].state)
			}
		}
		for _, name := range names {
			if stateKey(c.rooms[name].state) != best {
				s.resumeSets = append(s.resumeSets, name)
			}
		}
	}
	s.resumed = len(h.Resume) > 0
	return wire.MarshalHello(h)
}

// readError turns a read error into the reason of a disconnect.
func readError(err error) error {
	if ce, ok := errors.AsType[wsutil.ClosedError](err); ok {
		return &CloseError{Code: CloseCode(ce.Code), Reason: ce.Reason}
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return ErrServerSilent
	}
	return err
}

// adopt makes s, just welcomed, the client's connection: it sends the
// resume sets and re-sends the commands pending from the last connection.
// It reports false when the client is closing; the caller then releases s.
func (c *Client) adopt(s *session) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	first := c.welcome.T == ""
	c.sess = s
	c.state = StateConnected
	c.welcome = s.welcome
	var out [][]byte
	for _, name := range s.resumeSets {
		r := c.rooms[name]
		if r == nil {
			continue
		}
		id := c.nextIDLocked()
		p := &pending{id: id, kind: cmdResumeSet, room: name}
		p.msg = wire.AppendSet(nil, id, name, fullState(r.state))
		c.pending[id] = p
		out = append(out, p.msg)
	}
	var resend []*pending
	for _, p := range c.pending {
		if p.resend {
			resend = append(resend, p)
		}
	}
	slices.SortFunc(resend, func(a, b *pending) int { return int(a.id - b.id) })
	for _, p := range resend {
		out = append(out, p.msg)
	}
	c.mu.Unlock()

	c.stats.connects.Add(1)
	if !first {
		c.stats.reconnects.Add(1)
	}
	c.log.Info("client: connected", logKeyURL, c.cfg.URL, "node", s.welcome.Node, "conn", s.welcome.Conn, "resumed", s.resumed)
	c.emit(Event{Kind: EventConnected, Node: s.welcome.Node, Conn: s.welcome.Conn, User: s.welcome.User, Resumed: s.resumed})
	for _, m := range out {
		if s.write(m) != nil {
			break
		}
	}
	return true
}

// loss is why a connection ended or an attempt failed.
type loss struct {
	code    CloseCode // from the server's close frame; 0 without one
	err     error
	token   string // the token the connection used
	byeSeen bool
	bye     time.Duration // bye.retry_ms
}

func lossOf(err error, token string) loss {
	l := loss{err: err, token: token}
	if ce, ok := errors.AsType[*CloseError](err); ok {
		l.code = ce.Code
	}
	return l
}

// serve reads s until it ends. It runs on the client's run goroutine.
func (c *Client) serve(s *session) loss {
	defer s.release()
	if s.hb <= 0 {
		s.conn.SetReadDeadline(time.Time{})
	}
	for {
		if s.hb > 0 {
			s.conn.SetReadDeadline(time.Now().Add(s.hb + c.cfg.HeartbeatTimeout))
		}
		msg, err := s.next()
		if err != nil {
			err = readError(err)
			c.mu.Lock()
			tok := s.token
			c.mu.Unlock()
			l := lossOf(err, tok)
			l.byeSeen, l.bye = s.byeSeen, s.bye
			return l
		}
		c.handle(s, msg)
	}
}

// handle processes one server message.
func (c *Client) handle(s *session, msg []byte) {
	ev := new(wire.Event)
	if err := wire.DecodeEvent(msg, ev); err != nil {
		c.log.Warn("client: bad server message", logKeyErr, err)
		return
	}
	switch ev.T {
	case wire.TPing:
		c.stats.pings.Add(1)
		_ = s.write(wire.AppendPong(nil, ev.TS))
	case wire.TAck:
		if !c.answer(ev.ID, nil) {
			c.log.Debug("client: ack for no command", logKeyID, ev.ID)
		}
	case wire.TErr:
		c.stats.commandErrors.Add(1)
		cerr := &CommandError{Code: ev.Code, Msg: ev.Msg}
		if ev.ID == 0 || !c.answer(ev.ID, cerr) {
			c.emit(Event{Kind: EventError, Err: cerr})
		}
	case wire.TSync:
		c.onSync(ev.Room, newSync(ev))
	case wire.TDiff:
		c.onDiff(s, ev.Room, newDiff(ev))
	case wire.TRefresh:
		c.startRefresh(s)
	case wire.TBye:
		s.byeSeen = true
		s.bye = max(0, time.Duration(ev.RetryMS)*time.Millisecond)
		c.log.Info("client: server draining", "reason", ev.Reason, logKeyDelay, s.bye)
		c.emit(Event{Kind: EventBye, RetryIn: s.bye})
	case wire.TPong, wire.TWelcome:
	default:
		c.log.Debug("client: unknown server message", logKeyType, ev.T)
	}
}

func (c *Client) onSync(room string, sy *Sync) {
	c.mu.Lock()
	r := c.rooms[room]
	if r == nil {
		c.mu.Unlock()
		return
	}
	r.applySync(sy)
	c.mu.Unlock()
	c.stats.syncs.Add(1)
	c.emit(Event{Kind: EventSynced, Room: room, Sync: sy})
}

// onDiff applies a diff that continues the room's cursor chain; any other
// diff is ignored and the room is synced again.
func (c *Client) onDiff(s *session, room string, d *Diff) {
	c.mu.Lock()
	r := c.rooms[room]
	if r == nil {
		c.mu.Unlock()
		return
	}
	if r.synced && d.From == r.cursor {
		r.applyDiff(d)
		c.mu.Unlock()
		c.stats.diffs.Add(1)
		c.emit(Event{Kind: EventChanged, Room: room, Diff: d})
		return
	}
	c.stats.gaps.Add(1)
	var msg []byte
	if !r.syncing {
		r.syncing = true
		id := c.nextIDLocked()
		p := &pending{id: id, kind: cmdGapSync, room: room, rollback: func() { r.syncing = false }}
		p.msg = wire.AppendSyncRequest(nil, id, room)
		c.pending[id] = p
		msg = p.msg
	}
	cur := r.cursor
	c.mu.Unlock()
	c.log.Debug("client: cursor gap", logKeyRoom, room, "cursor", cur, "from", d.From)
	if msg != nil {
		_ = s.write(msg)
	}
}

// startRefresh renews the token in a goroutine of its own, one at a time:
// the read loop must keep reading to see the auth's answer.
func (c *Client) startRefresh(s *session) {
	if !c.refreshing.CompareAndSwap(false, true) {
		return
	}
	c.wg.Go(func() {
		err := c.refresh(s)
		c.refreshing.Store(false)
		switch {
		case c.ctx.Err() != nil:
		case err != nil:
			c.log.Warn("client: token refresh failed", logKeyErr, err)
			c.emit(Event{Kind: EventError, Err: err})
		default:
			c.emit(Event{Kind: EventRefreshed})
		}
	})
}

// refresh gets a token from TokenFunc, sends auth on s and waits for the
// answer.
func (c *Client) refresh(s *session) error {
	if c.cfg.TokenFunc == nil {
		return ErrNoTokenFunc
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
	defer cancel()
	tok, err := c.cfg.TokenFunc(ctx)
	if err != nil {
		return fmt.Errorf("client: token refresh: %w", err)
	}
	c.mu.Lock()
	if c.sess != s {
		c.mu.Unlock()
		return ErrDisconnected // the next hello carries a fresh token
	}
	id := c.nextIDLocked()
	p := &pending{id: id, kind: cmdAuth, done: make(chan error, 1)}
	p.msg = wire.AppendAuth(nil, id, tok)
	c.pending[id] = p
	c.mu.Unlock()
	_ = s.write(p.msg)
	select {
	case err = <-p.done:
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("client: token refresh: %w", err)
	}
	c.mu.Lock()
	s.token = tok
	c.mu.Unlock()
	c.stats.refreshes.Add(1)
	return nil
}
