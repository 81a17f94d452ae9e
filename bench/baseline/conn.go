package main

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// conn is one client connection: the HTTP handler's goroutine reads it
// (serve), a writer goroutine of its own writes it from the queue and
// sends the pings.
type conn struct {
	s  *Server
	ws *websocket.Conn
	id string

	qmu sync.Mutex
	q   [][]byte // queued messages, grown as needed; guarded by qmu
	// wake has room for one signal: the queue has messages.
	wake     chan struct{}
	quit     chan struct{} // closed when the reader is done: the writer stops
	dropOnce sync.Once

	// Owned by the reader goroutine.
	readErr error // what ended the reads
	user    string
	rooms   map[string]*room
}

// send queues msg without waiting. A connection with SendBuffer messages
// queued already is dropped (its reader then sees the closed socket).
func (c *conn) send(msg []byte) {
	c.qmu.Lock()
	if len(c.q) >= c.s.cfg.SendBuffer {
		c.qmu.Unlock()
		c.drop()
		return
	}
	c.q = append(c.q, msg)
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // a signal is pending already
	}
}

// takeQueue returns the queued messages and empties the queue (the next
// send grows a new one: a drained queue keeps no memory).
func (c *conn) takeQueue() [][]byte {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	q := c.q
	c.q = nil
	return q
}

func (c *conn) drop() { c.dropOnce.Do(func() { c.ws.NetConn().Close() }) }

// closeWith sends a close frame with code, best effort.
func (c *conn) closeWith(code int) {
	msg := websocket.FormatCloseMessage(code, "")
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

// serve runs the connection to its end and cleans up after it.
func (c *conn) serve() {
	c.ws.SetReadLimit(c.s.cfg.MaxMessage)
	clean := false
	if c.hello() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.writeLoop()
		}()
		clean = c.readLoop()
		close(c.quit)
		c.drop()
		<-done
	}
	c.drop()
	for _, r := range c.rooms {
		switch {
		case clean:
			if r.leave(c) {
				c.s.removeIfEmpty(r)
			}
		case r.detach(c):
			c.s.graceRelease(r, c.user)
		}
	}
}

// hello reads the first message and answers welcome.
func (c *conn) hello() bool {
	c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.HelloTimeout))
	m, code := c.read()
	switch {
	case code != 0:
		c.closeWith(code)
		return false
	case m == nil:
		return false
	case m.T != "hello":
		c.closeWith(4100)
		return false
	case m.V != 1:
		c.closeWith(4105)
		return false
	}
	c.user = m.User
	if m.Token != "" {
		c.user = tokenSubject(m.Token)
	}
	if c.user == "" {
		c.user = "anon-" + c.id
	}
	c.rooms = make(map[string]*room)
	c.send(mustJSON(welcomeOut{T: "welcome", V: 1, Node: "baseline", Conn: c.id, User: c.user,
		HB: c.s.cfg.HB.Milliseconds(), Max: c.s.cfg.MaxMessage}))
	for name := range m.Resume {
		c.join(0, name, m.State)
	}
	return true
}

// read reads one message. It returns a close code to send when the
// message or the read calls for one, and a nil message when the
// connection is gone.
func (c *conn) read() (*inMsg, int) {
	typ, p, err := c.ws.ReadMessage()
	if err != nil {
		c.readErr = err
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if c.rooms == nil {
				return nil, 4004
			}
			return nil, 4001
		}
		return nil, 0
	}
	if typ != websocket.TextMessage {
		return nil, websocket.CloseUnsupportedData
	}
	var m inMsg
	if json.Unmarshal(p, &m) != nil || m.T == "" {
		return nil, websocket.CloseInvalidFramePayloadData
	}
	return &m, 0
}

// readLoop handles messages until the connection ends. It reports whether
// it ended cleanly (a close frame 1000 or 1001 from the client).
func (c *conn) readLoop() bool {
	for {
		c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.HB + c.s.cfg.HBTimeout))
		m, code := c.read()
		if code != 0 {
			c.closeWith(code)
			return false
		}
		if m == nil {
			return websocket.IsCloseError(c.readErr, websocket.CloseNormalClosure, websocket.CloseGoingAway)
		}
		c.handle(m)
	}
}

func (c *conn) handle(m *inMsg) {
	switch m.T {
	case "pong":
	case "ping":
		c.send(mustJSON(pongOut{T: "pong", TS: m.TS}))
	case "join":
		if c.needID(m) {
			c.join(m.ID, m.Room, m.State)
		}
	case "leave":
		if !c.needID(m) {
			return
		}
		c.send(mustJSON(ackOut{T: "ack", ID: m.ID}))
		if r := c.rooms[m.Room]; r != nil {
			delete(c.rooms, m.Room)
			if r.leave(c) {
				c.s.removeIfEmpty(r)
			}
		}
	case "set":
		if !c.needID(m) {
			return
		}
		r := c.rooms[m.Room]
		if r == nil {
			c.send(mustJSON(errOut{T: "err", ID: m.ID, Code: "not_joined", Msg: "room not joined"}))
			return
		}
		r.set(c, m.ID, m.State)
	case "typing":
		if r := c.rooms[m.Room]; r != nil {
			r.setTyping(c, m.On)
		}
	case "sync":
		if !c.needID(m) {
			return
		}
		r := c.rooms[m.Room]
		if r == nil {
			c.send(mustJSON(errOut{T: "err", ID: m.ID, Code: "not_joined", Msg: "room not joined"}))
			return
		}
		r.mu.Lock()
		c.send(mustJSON(ackOut{T: "ack", ID: m.ID}))
		c.send(r.syncLocked())
		r.mu.Unlock()
	default:
		c.send(mustJSON(errOut{T: "err", ID: m.ID, Code: "bad_request", Msg: "unknown message type " + m.T}))
	}
}

// needID answers bad_request to a command without id or room.
func (c *conn) needID(m *inMsg) bool {
	if m.ID > 0 && m.Room != "" && len(m.Room) <= 128 {
		return true
	}
	c.send(mustJSON(errOut{T: "err", ID: m.ID, Code: "bad_request", Msg: "id and room are required"}))
	return false
}

func (c *conn) join(id int64, name string, st *inState) {
	if st != nil && len(st.Meta) > 512 {
		c.send(mustJSON(errOut{T: "err", ID: id, Code: "bad_request", Msg: "meta too large"}))
		return
	}
	if r := c.rooms[name]; r != nil && r.join(c, id, st) {
		return
	}
	if len(c.rooms) >= 64 {
		c.send(mustJSON(errOut{T: "err", ID: id, Code: "too_many_rooms", Msg: "too many rooms"}))
		return
	}
	for {
		r := c.s.room(name)
		if r.join(c, id, st) {
			c.rooms[name] = r
			return
		}
	}
}

// writeLoop writes the queued messages and the pings (the first at a
// random point in [hb/2, hb], then every hb) until quit.
func (c *conn) writeLoop() {
	hb := c.s.cfg.HB
	ping := time.NewTimer(hb/2 + rand.N(hb/2+1))
	defer ping.Stop()
	for {
		var batch [][]byte
		select {
		case <-c.wake:
			batch = c.takeQueue()
		case now := <-ping.C:
			batch = [][]byte{mustJSON(pingOut{T: "ping", TS: now.UnixMilli()})}
			ping.Reset(hb)
		case <-c.quit:
			return
		}
		for _, msg := range batch {
			c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
				c.drop()
				return
			}
		}
	}
}
