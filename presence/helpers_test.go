package presence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

var (
	errSinkFull   = errors.New("fake sink: outbox full")
	errSinkClosed = errors.New("fake sink: closing")
)

// fakeSink is a Sink that records what a Session hands to its connection.
// Config.Frame defaults to the payload as is, so each frame is one JSON
// message. Safe for concurrent use: room flushers send from the hub's
// goroutines while the test reads.
type fakeSink struct {
	mu       sync.Mutex
	frames   [][]byte // queued and not yet taken
	full     bool     // Send refuses with errSinkFull (a full outbox)
	maxFrame int      // if > 0, Send refuses larger frames with errSinkFull (an outbox with little room)
	closed   bool     // Close was called: Send refuses
	closes   []wire.CloseCode
	deadline time.Time // the last SetDeadline
	sent     int       // frames accepted, in all
	bytes    int       // bytes of those frames
}

var _ Sink = (*fakeSink)(nil)

// Send keeps a copy of frame: the caller reuses it.
func (f *fakeSink) Send(frame []byte) error { return f.queue(frame, true) }

// Offer keeps frame itself: room frames are shared and never modified.
func (f *fakeSink) Offer(frame []byte) error { return f.queue(frame, false) }

func (f *fakeSink) queue(frame []byte, copied bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return errSinkClosed
	case f.full, f.maxFrame > 0 && len(frame) > f.maxFrame:
		return errSinkFull
	}
	if copied {
		frame = bytes.Clone(frame)
	}
	f.frames = append(f.frames, frame)
	f.sent++
	f.bytes += len(frame)
	return nil
}

func (f *fakeSink) Close(code wire.CloseCode, reason string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closes = append(f.closes, code)
	started := !f.closed
	f.closed = true
	return started
}

func (f *fakeSink) SetDeadline(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deadline = t
}

func (f *fakeSink) Buffered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, fr := range f.frames {
		n += len(fr)
	}
	return n
}

func (f *fakeSink) setFull(full bool) {
	f.mu.Lock()
	f.full = full
	f.mu.Unlock()
}

func (f *fakeSink) isFull() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.full
}

func (f *fakeSink) take() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	fr := f.frames
	f.frames = nil
	return fr
}

func (f *fakeSink) closeCodes() []wire.CloseCode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.closes)
}

func (f *fakeSink) getDeadline() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deadline
}

// Ends a test's transport reports to HandleClose.
var (
	endNormal = ConnEnd{Cause: EndPeer, Code: wire.CloseNormal} // the client closed with 1000
	endLost   = ConnEnd{Cause: EndLost}                         // the connection dropped
)

// endOf is endNormal if clean, else endLost.
func endOf(clean bool) ConnEnd {
	if clean {
		return endNormal
	}
	return endLost
}

// nopSink accepts every frame and keeps none (benchmarks, allocation tests).
type nopSink struct {
	mu    sync.Mutex
	sends int
}

func (n *nopSink) Send([]byte) error {
	n.mu.Lock()
	n.sends++
	n.mu.Unlock()
	return nil
}
func (n *nopSink) Offer(frame []byte) error        { return n.Send(frame) }
func (*nopSink) Close(wire.CloseCode, string) bool { return true }
func (*nopSink) SetDeadline(time.Time)             {}
func (*nopSink) Buffered() int                     { return 0 }

// view is a client's picture of one room, built from its syncs and diffs.
type view struct {
	cur     string
	count   int
	partial bool
	members map[string]wire.Member
	typing  []string
}

// client drives one Session through its fake sink, the way a transport
// would, and keeps the views its syncs and diffs build.
type client struct {
	t     testing.TB
	name  string
	sink  *fakeSink
	s     *Session
	views map[string]*view
}

// open opens a session that has not said hello.
func open(t testing.TB, h *Hub, name string) *client {
	sink := &fakeSink{}
	return &client{t: t, name: name, sink: sink, s: h.Open(sink), views: map[string]*view{}}
}

// dial opens a session and says hello as user (the hub must be insecure).
func dial(t testing.TB, h *Hub, user string) *client {
	t.Helper()
	c := open(t, h, user)
	c.send(`{"t":"hello","v":1,"user":%q}`, user)
	c.expect("welcome")
	return c
}

// send hands one text message to the session; with args, msg is a format.
func (c *client) send(msg string, args ...any) {
	if len(args) > 0 {
		msg = fmt.Sprintf(msg, args...)
	}
	c.s.HandleText([]byte(msg))
}

// events takes the frames queued since the last call, decodes them (each
// must be one valid JSON message) and applies syncs and diffs to the
// client's views, checking the cursor chain.
func (c *client) events() []wire.Event {
	c.t.Helper()
	var evs []wire.Event
	for _, fr := range c.sink.take() {
		if !json.Valid(fr) {
			c.t.Fatalf("%s: frame is not valid JSON: %s", c.name, fr)
		}
		var e wire.Event
		if err := wire.DecodeEvent(fr, &e); err != nil {
			c.t.Fatalf("%s: %v: %s", c.name, err, fr)
		}
		c.apply(&e, fr)
		evs = append(evs, e)
	}
	return evs
}

func (c *client) apply(e *wire.Event, raw []byte) {
	c.t.Helper()
	switch e.T {
	case wire.TSync:
		v := &view{cur: e.Cur, count: e.Count, partial: e.Partial, members: map[string]wire.Member{}}
		if e.Typing == nil {
			c.t.Errorf("%s: sync without typing: %s", c.name, raw)
		} else {
			v.typing = *e.Typing
		}
		for _, m := range e.Members {
			v.members[m.U] = m
		}
		c.views[e.Room] = v
	case wire.TDiff:
		v := c.views[e.Room]
		if v == nil {
			c.t.Errorf("%s: diff before any sync of %s: %s", c.name, e.Room, raw)
			return
		}
		if e.From != v.cur {
			c.t.Errorf("%s: diff from %s, want the previous cur %s: %s", c.name, e.From, v.cur, raw)
		}
		v.cur, v.count = e.Cur, e.Count
		for _, m := range e.Join {
			if _, ok := v.members[m.U]; ok {
				c.t.Errorf("%s: join of %s, already a member: %s", c.name, m.U, raw)
			}
			v.members[m.U] = m
		}
		for _, m := range e.Update {
			if _, ok := v.members[m.U]; !ok && !v.partial {
				c.t.Errorf("%s: update of %s, not a member: %s", c.name, m.U, raw)
			}
			v.members[m.U] = m
		}
		for _, u := range e.Leave {
			if _, ok := v.members[u]; !ok && !v.partial {
				c.t.Errorf("%s: leave of %s, not a member: %s", c.name, u, raw)
			}
			delete(v.members, u)
		}
		if e.Typing != nil {
			v.typing = *e.Typing
		}
	}
}

// expect takes the pending events and checks their types, in order.
func (c *client) expect(types ...string) []wire.Event {
	c.t.Helper()
	evs := c.events()
	if got := typesOf(evs); !slices.Equal(got, types) {
		c.t.Fatalf("%s: events %v, want %v (%+v)", c.name, got, types, evs)
	}
	return evs
}

// expectNone checks that nothing was sent.
func (c *client) expectNone() {
	c.t.Helper()
	c.expect()
}

// lastClose is the last close code the session gave its sink, 0 if none.
func (c *client) lastClose() wire.CloseCode {
	codes := c.sink.closeCodes()
	if len(codes) == 0 {
		return 0
	}
	return codes[len(codes)-1]
}

// join joins room (state is a JSON object or "") and checks the ack.
func (c *client) join(room string, id int, state string) {
	c.t.Helper()
	if state == "" {
		c.send(`{"t":"join","id":%d,"room":%q}`, id, room)
	} else {
		c.send(`{"t":"join","id":%d,"room":%q,"state":%s}`, id, room, state)
	}
	evs := c.events()
	if len(evs) == 0 || evs[0].T != wire.TAck || evs[0].ID != int64(id) {
		c.t.Fatalf("%s: join %s: events %+v, want ack %d first", c.name, room, evs, id)
	}
}

// fire waits until the deadline the session last asked for and runs its
// timers, as the transport does. Ticks due at the same instant run first.
func (c *client) fire() {
	c.t.Helper()
	d := c.sink.getDeadline()
	if d.IsZero() {
		c.t.Fatalf("%s: no deadline set", c.name)
	}
	time.Sleep(time.Until(d))
	synctest.Wait()
	c.s.HandleDeadline()
}

func typesOf(evs []wire.Event) []string {
	var ts []string
	for _, e := range evs {
		ts = append(ts, e.T)
	}
	return ts
}

func users(ms []wire.Member) []string {
	var us []string
	for _, m := range ms {
		us = append(us, m.U)
	}
	slices.Sort(us)
	return us
}

// env is a running Hub inside a synctest bubble. Fake time starts half a
// tick after the hub's start, so the test acts between ticks.
type env struct {
	t *testing.T
	h *Hub
}

// startHub creates and runs a hub; it stops when the test ends. Call it
// inside synctest.Test. cfg.Node defaults to "n1".
func startHub(t *testing.T, cfg Config) *env {
	t.Helper()
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	if cfg.Workers == 0 {
		cfg.Workers = 3
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	time.Sleep(h.cfg.Tick / 2)
	synctest.Wait()
	return &env{t: t, h: h}
}

// tick advances fake time by one tick: exactly one flush runs.
func (e *env) tick() { e.sleep(e.h.cfg.Tick) }

func (e *env) ticks(n int) {
	for range n {
		e.tick()
	}
}

func (e *env) sleep(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// lookupRoom returns the live room named name, or nil.
func (h *Hub) lookupRoom(name string) *room {
	sh := &h.rooms[maphash.String(h.seed, name)&(roomShards-1)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.rooms[name]
}

// roomState is a room's actual members and published typing list, as
// wire members (meta nil as {}).
func roomState(h *Hub, name string) (members map[string]wire.Member, typing []string) {
	members = map[string]wire.Member{}
	r := h.lookupRoom(name)
	if r == nil {
		return members, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for m := range r.members.all() {
		u := m.user
		meta := m.st.meta
		if meta == "" {
			meta = "{}"
		}
		members[u] = wire.Member{U: u, S: m.st.status, M: []byte(meta)}
	}
	return members, slices.Clone(r.typingSent)
}

// sameMembers compares member maps, meta by its compact JSON.
func sameMembers(a, b map[string]wire.Member) bool {
	return maps.EqualFunc(a, b, func(x, y wire.Member) bool {
		return x.U == y.U && x.S == y.S && compact(x.M) == compact(y.M)
	})
}

func compact(m json.RawMessage) string {
	if len(m) == 0 {
		return "{}"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, m); err != nil {
		return "invalid:" + string(m)
	}
	return b.String()
}

func describe(ms map[string]wire.Member) string {
	var parts []string
	for _, u := range slices.Sorted(maps.Keys(ms)) {
		parts = append(parts, u+"="+ms[u].S+compact(ms[u].M))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// counter is a fake Counter.
type counter struct {
	mu sync.Mutex
	n  float64
}

func (c *counter) Add(v float64) {
	if c == nil { // a test that does not watch this metric
		return
	}
	c.mu.Lock()
	c.n += v
	c.mu.Unlock()
}

func (c *counter) value() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// labels is a fake LabeledCounter.
type labels struct {
	mu sync.Mutex
	m  map[string]int
}

func (l *labels) Inc(label string) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]int{}
	}
	l.m[label]++
	l.mu.Unlock()
}

func (l *labels) get() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m)
}

// observer is a fake Observer.
type observer struct {
	mu   sync.Mutex
	vals []float64
}

func (o *observer) Observe(v float64) {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.vals = append(o.vals, v)
	o.mu.Unlock()
}

func (o *observer) values() []float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.vals)
}

// authFunc is a fake Authenticator.
type authFunc func(token string) (Identity, error)

func (f authFunc) Authenticate(token string) (Identity, error) { return f(token) }

// prefixRooms allows the rooms that start with it.
type prefixRooms string

func (p prefixRooms) Allows(room string) bool { return strings.HasPrefix(room, string(p)) }

// tokenAuth accepts tokens "user" and "user+prefix" (rooms limited to the
// prefix); "bad" is refused, "broken" fails internally.
var tokenAuth = authFunc(func(token string) (Identity, error) {
	switch token {
	case "bad":
		return Identity{}, fmt.Errorf("fake: %w: signature", ErrUnauthorized)
	case "broken":
		return Identity{}, errors.New("fake: key server unreachable")
	}
	user, prefix, ok := strings.Cut(token, "+")
	id := Identity{User: user}
	if ok {
		id.Rooms = prefixRooms(prefix)
	}
	return id, nil
})
