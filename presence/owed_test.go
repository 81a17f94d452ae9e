package presence

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/presenced/presenced/internal/wire"
)

// TestOwedSyncIsPerRoom: a session whose small diffs keep arriving in a
// busy room A, while its room B owes it a sync that never fits its outbox,
// is closed 4002 within SlowTimeout (+ one tick) of B's failed delivery:
// deliveries in A do not excuse the debt in B. Once B's sync does fit, the
// debt is settled and nothing is closed.
func TestOwedSyncIsPerRoom(t *testing.T) {
	const slow = time.Second
	for _, drains := range []bool{false, true} {
		t.Run(fmt.Sprintf("drains=%v", drains), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				slowCloses := &counter{}
				e := startHub(t, Config{Insecure: true, SlowTimeout: slow, Metrics: Metrics{SlowCloses: slowCloses}})
				alice := dial(t, e.h, "alice")
				alice.join("A", 1, "")
				alice.join("B", 2, "")
				bob := dial(t, e.h, "bob")
				bob.join("A", 1, "")
				e.tick()
				alice.events()

				// Small frames fit alice's outbox, B's syncs do not.
				alice.sink.mu.Lock()
				alice.sink.maxFrame = 1500
				alice.sink.mu.Unlock()
				meta := `{"bio":"` + strings.Repeat("x", 400) + `"}`
				for i := range 8 {
					c := dial(t, e.h, fmt.Sprintf("crowd%d", i))
					c.join("B", 1, fmt.Sprintf(`{"meta":%s}`, meta))
				}
				e.tick() // B's diff of 8 joins (~3.5 KB) fails: B owes alice a sync
				if sb := alice.s.findSub("B"); !isOwed(sb) {
					t.Fatal("alice is not owed a sync in B after its diff failed")
				}
				failedAt := time.Now()

				status := 0
				for time.Since(failedAt) < slow+2*e.h.cfg.Tick && len(alice.sink.closeCodes()) == 0 {
					status++
					bob.send(`{"t":"set","id":%d,"room":"A","state":{"status":"s%d"}}`, status+10, status)
					if drains && time.Since(failedAt) > slow/2 {
						alice.sink.mu.Lock()
						alice.sink.maxFrame = 0
						alice.sink.mu.Unlock()
					}
					e.tick()
					if evs := alice.events(); !drains && !slices.ContainsFunc(evs, func(ev wire.Event) bool { return ev.T == wire.TDiff && ev.Room == "A" }) {
						if len(alice.sink.closeCodes()) == 0 {
							t.Fatalf("alice got no diff of A at %v: %+v", time.Since(failedAt), evs)
						}
					}
				}
				got := alice.sink.closeCodes()
				if drains {
					if len(got) != 0 || slowCloses.value() != 0 {
						t.Fatalf("closes %v (SlowCloses %v) although B's sync was delivered", got, slowCloses.value())
					}
					if isOwed(alice.s.findSub("B")) {
						t.Fatal("B still owes alice a sync after it fit")
					}
					return
				}
				took := time.Since(failedAt)
				if !slices.Equal(got, []wire.CloseCode{wire.CloseSlowConsumer}) {
					t.Fatalf("closes %v after %v of B owing a sync while A's diffs arrive, want [4002]", got, took)
				}
				if took < slow || took > slow+e.h.cfg.Tick {
					t.Errorf("closed 4002 after %v of debt, want within [%v, %v]", took, slow, slow+e.h.cfg.Tick)
				}
				alice.s.HandleClose(ConnEnd{Cause: EndClosed, Code: wire.CloseSlowConsumer}) // the transport reports the close
				if slowCloses.value() != 1 {
					t.Errorf("SlowCloses = %v, want 1", slowCloses.value())
				}
			})
		})
	}
}

// isOwed reports whether sb is owed a sync, under its room's lock.
func isOwed(sb *sub) bool {
	sb.r.mu.Lock()
	defer sb.r.mu.Unlock()
	return sb.owed
}

// lockProbeSink is a fakeSink that records, for each Send made while
// probing, whether the lock of room was held at that moment.
type lockProbeSink struct {
	fakeSink
	h       *Hub
	room    string
	probing *atomic.Bool
	locked  *atomic.Int32 // Sends made with the room lock held
	sends   *atomic.Int32 // Sends made while probing
}

func (p *lockProbeSink) Offer(frame []byte) error { return p.Send(frame) }

func (p *lockProbeSink) Send(frame []byte) error {
	if p.probing.Load() {
		p.sends.Add(1)
		if r := p.h.lookupRoom(p.room); r != nil {
			if r.mu.TryLock() {
				r.mu.Unlock()
			} else {
				p.locked.Add(1)
			}
		}
	}
	return p.fakeSink.Send(frame)
}

// TestFlushSendsWithoutRoomLock: the room flusher hands no frame to a sink
// with the room's lock held, for diffs and for whole-room resyncs (crossing
// list_limit, a diff larger than the sync budget) and for owed syncs
// retried: commands for the room, which take the lock on an event loop,
// never wait for a fan-out.
func TestFlushSendsWithoutRoomLock(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		act  func(e *env, cs []*client)
	}{
		{name: "diff", act: func(e *env, cs []*client) {
			cs[0].send(`{"t":"set","id":5,"room":"r","state":{"status":"away"}}`)
		}},
		{name: "crossing list_limit", cfg: Config{ListLimit: 4}, act: func(e *env, cs []*client) {
			dial(e.t, e.h, "extra").join("r", 1, "")
		}},
		{name: "diff over the sync budget", cfg: Config{SyncBudget: 600}, act: func(e *env, cs []*client) {
			cs[0].send(`{"t":"set","id":5,"room":"r","state":{"meta":{"bio":%q}}}`, strings.Repeat("x", 500))
			cs[1].send(`{"t":"set","id":5,"room":"r","state":{"meta":{"bio":%q}}}`, strings.Repeat("y", 500))
		}},
		{name: "owed sync", act: func(e *env, cs []*client) {
			cs[0].send(`{"t":"set","id":6,"room":"r","state":{"status":"away"}}`)
			cs[2].send(`{"t":"sync","id":5,"room":"r"}`) // a change is pending: the sync is owed to the flush
			if !isOwed(cs[2].s.findSub("r")) {
				e.t.Fatal("the sync is not owed: the case tests nothing")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := tt.cfg
				cfg.Insecure = true
				e := startHub(t, cfg)
				var probing atomic.Bool
				var locked, sends atomic.Int32
				var cs []*client
				for i := range 4 {
					name := fmt.Sprintf("u%d", i)
					sink := &lockProbeSink{h: e.h, room: "r", probing: &probing, locked: &locked, sends: &sends}
					c := &client{t: t, name: name, sink: &sink.fakeSink, s: e.h.Open(sink), views: map[string]*view{}}
					c.send(`{"t":"hello","v":1,"user":%q}`, name)
					c.expect("welcome")
					c.join("r", 1, "")
					cs = append(cs, c)
				}
				e.ticks(2)
				tt.act(e, cs)
				probing.Store(true)
				e.ticks(2)
				probing.Store(false)
				if sends.Load() == 0 {
					t.Fatal("the flusher sent nothing: the case tests nothing")
				}
				if n := locked.Load(); n != 0 {
					t.Errorf("%d of %d frames were handed to a sink with the room lock held", n, sends.Load())
				}
			})
		})
	}
}

// TestIdleSizes guards what an idle joined connection costs presence: its
// Session, its sub, and (per user) its member. Each fills its allocation
// size class exactly; a field that grows one past it costs every
// connection the next class, so the sizes are exact.
func TestIdleSizes(t *testing.T) {
	for _, tt := range []struct {
		name       string
		size, want uintptr
	}{
		{"Session", unsafe.Sizeof(Session{}), 208},
		{"sub", unsafe.Sizeof(sub{}), 32},
		{"member", unsafe.Sizeof(member{}), 80},
		{"holders (with a Bus)", unsafe.Sizeof(holders{}), 16},
	} {
		if tt.size != tt.want {
			t.Errorf("%s is %d bytes, want %d", tt.name, tt.size, tt.want)
		}
	}
}

// panicSink panics in Send once armed, as a bug under a room lock would.
type panicSink struct {
	fakeSink
	armed atomic.Bool
}

func (p *panicSink) Send(frame []byte) error {
	if p.armed.Load() {
		panic("boom")
	}
	return p.fakeSink.Send(frame)
}

func (p *panicSink) Offer(frame []byte) error { return p.Send(frame) }

// TestPanicUnderRoomLock: a command that panics while it holds a room's
// lock (the transport recovers it and closes that connection with 1011)
// leaves the room usable by every other connection.
func TestPanicUnderRoomLock(t *testing.T) {
	for _, cmd := range []string{
		`{"t":"sync","id":5,"room":"r"}`,
		`{"t":"join","id":5,"room":"r"}`,
		`{"t":"join","id":5,"room":"other"}`,
	} {
		t.Run(cmd, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := startHub(t, Config{Insecure: true})
				ps := &panicSink{}
				victim := &client{t: t, name: "victim", sink: &ps.fakeSink, s: e.h.Open(ps), views: map[string]*view{}}
				victim.send(`{"t":"hello","v":1,"user":"victim"}`)
				victim.expect("welcome")
				victim.join("r", 1, "")
				e.tick()
				ps.armed.Store(true)
				func() {
					defer func() {
						if recover() == nil {
							t.Fatal("the command did not panic")
						}
					}()
					victim.send(cmd)
				}()
				for _, name := range []string{"r", "other"} {
					if r := e.h.lookupRoom(name); r != nil {
						if !r.mu.TryLock() {
							t.Fatalf("room %s is still locked after the panic", name)
						}
						r.mu.Unlock()
					}
				}
				bob := dial(t, e.h, "bob")
				bob.join("r", 1, "")
			})
		})
	}
}

// stallSink stalls its first Offer once armed, until released, telling
// the test when it got there.
type stallSink struct {
	fakeSink
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (p *stallSink) Offer(frame []byte) error {
	if p.armed.CompareAndSwap(true, false) {
		close(p.entered)
		<-p.release
	}
	return p.fakeSink.Offer(frame)
}

// TestNoRoomFrameAfterLeaveAck: a leave that races with the fan-out of a
// diff to the same connection never gets the diff after its ack: the
// client "stops receiving that room's messages at once".
func TestNoRoomFrameAfterLeaveAck(t *testing.T) {
	leaver := &stallSink{entered: make(chan struct{}), release: make(chan struct{})}
	sinks := make([]*fakeSink, 3)
	_, r := loadedRoom(t, 3, Config{}, func(i int) Sink {
		if i == 2 {
			sinks[i] = &leaver.fakeSink
			return leaver
		}
		sinks[i] = &fakeSink{}
		return sinks[i]
	})
	var ls *Session // the leaver's session
	r.mu.Lock()
	for _, sb := range r.subs {
		if sb.s.sink == Sink(leaver) {
			ls = sb.s
		}
	}
	r.mu.Unlock()
	for _, s := range sinks {
		s.take()
	}
	changer(r)()
	leaver.armed.Store(true)
	flushed := make(chan struct{})
	go func() { defer close(flushed); r.flush(time.Now()) }()
	<-leaver.entered // the flusher checked the leaver is still there, and is sending
	left := make(chan struct{})
	go func() { defer close(left); ls.HandleText([]byte(`{"t":"leave","id":9,"room":"r"}`)) }()
	// Wait until the leave either finished (no ordering: the test then
	// fails below) or holds the room lock while it waits for the send in
	// progress (the ordering this test is about); then give an unordered
	// leave a moment more to finish, so that a regression shows.
	var heldSince time.Time
	for done := false; !done; {
		select {
		case <-left:
			done = true
		default:
			switch {
			case !heldSince.IsZero():
				done = time.Since(heldSince) > 50*time.Millisecond
			case !r.mu.TryLock():
				heldSince = time.Now()
			default:
				r.mu.Unlock()
			}
			runtime.Gosched()
		}
	}
	close(leaver.release)
	<-flushed
	<-left
	var types []string
	for _, f := range leaver.take() {
		var e wire.Event
		if err := wire.DecodeEvent(f, &e); err != nil {
			t.Fatal(err)
		}
		types = append(types, e.T)
	}
	if !slices.Equal(types, []string{"diff", "ack"}) {
		t.Fatalf("the leaver got %v, want [diff ack]: nothing of the room after the leave's ack", types)
	}
}

// TestSyncWithinBudget: a sync, typing list and all, is never larger than
// SyncBudget, so one that fits the budget always fits an empty outbox.
func TestSyncWithinBudget(t *testing.T) {
	const budget = 2000
	_, r := loadedRoom(t, 30, Config{SyncBudget: budget}, func(int) Sink { return &nopSink{} })
	r.mu.Lock()
	for i := range 10 {
		m := &member{user: fmt.Sprintf("%03d%s", i, strings.Repeat("t", 125)), st: memberState{status: "online"}, gracedAt: -1, typingAt: -1}
		r.members.put(m)
		r.typingLocked(m, true, 1)
	}
	r.typingSent = append(r.typingSent[:0], r.typingListLocked()...)
	r.seq++
	frame := r.syncFrameLocked()
	r.mu.Unlock()
	if len(frame) > budget {
		t.Fatalf("sync of %d bytes with a budget of %d", len(frame), budget)
	}
	var e wire.Event
	if err := wire.DecodeEvent(frame, &e); err != nil || !e.Partial || e.Typing == nil || len(*e.Typing) != 10 {
		t.Fatalf("sync %s: %v; want a partial sync listing 10 typing users", frame, err)
	}
}

// TestFramesSentCountsDeliveries: FramesSent counts the frames handed to
// sinks, not the targets planned: a subscriber that leaves while the
// fan-out runs is neither sent to nor counted.
func TestFramesSentCountsDeliveries(t *testing.T) {
	stall := &stallSink{entered: make(chan struct{}), release: make(chan struct{})}
	sent := &counter{}
	sinks := make([]*fakeSink, 3)
	_, r := loadedRoom(t, 3, Config{Metrics: Metrics{FramesSent: sent}}, func(i int) Sink {
		if i == 0 {
			sinks[i] = &stall.fakeSink
			return stall
		}
		sinks[i] = &fakeSink{}
		return sinks[i]
	})
	r.mu.Lock()
	first, leaver := r.subs[0], r.subs[2]
	r.mu.Unlock()
	if first.s.sink != Sink(stall) {
		t.Fatal("the stalling sink is not delivered to first")
	}
	for _, s := range sinks {
		s.take()
	}
	changer(r)()
	stall.armed.Store(true)
	before := sent.value()
	flushed := make(chan struct{})
	go func() { defer close(flushed); r.flush(time.Now()) }()
	<-stall.entered
	leaver.s.HandleText([]byte(`{"t":"leave","id":9,"room":"r"}`)) // its ack is a session frame, not counted below
	acks := sent.value() - before
	close(stall.release)
	<-flushed
	got := 0
	for _, s := range sinks {
		got += len(s.take())
	}
	if n := sent.value() - before - acks; int(n) != got-int(acks) {
		t.Fatalf("FramesSent grew by %v for room frames, sinks got %d room frames", n, got-int(acks))
	}
}

// replySink counts what is Sent (answers) apart from what is Offered.
type replySink struct {
	fakeSink
	sent atomic.Int64 // bytes Sent, with a 4-byte WebSocket header each
}

func (p *replySink) Send(frame []byte) error {
	p.sent.Add(int64(len(frame) + 4))
	return p.fakeSink.Send(frame)
}

func (p *replySink) Offer(frame []byte) error { return p.fakeSink.Send(frame) }

type allowAuth struct{ rooms RoomMatcher }

func (a allowAuth) Authenticate(token string) (Identity, error) {
	return Identity{User: token, Rooms: a.rooms}, nil
}

// TestMaxReplyBytes: the answers to the largest hello (ids at their
// limits, hundreds of resumed rooms refused as forbidden or beyond
// max_rooms) and to an auth that leaves hundreds of rooms fit in
// MaxReplyBytes, so a transport that keeps that much free never drops one.
func TestMaxReplyBytes(t *testing.T) {
	long := func(prefix string, i int) string { return fmt.Sprintf("%s%05d%s", prefix, i, strings.Repeat("x", 122)) }
	synctest.Test(t, func(t *testing.T) {
		auth := &allowAuth{rooms: prefixRooms("a")}
		e := startHub(t, Config{Node: long("n", 0), Auth: auth, MaxRooms: 300})
		resume := map[string]string{}
		for i := range 600 {
			resume[long("a", i)] = ""
			resume[long("b", i)] = ""
		}
		hello, err := json.Marshal(map[string]any{"t": "hello", "v": 1, "token": long("u", 0), "resume": resume})
		if err != nil {
			t.Fatal(err)
		}
		sink := &replySink{}
		s := e.h.Open(sink)
		s.HandleText(hello)
		if got := sink.sent.Load(); got > MaxReplyBytes {
			t.Errorf("a hello resuming 1,200 rooms (900 refused) was answered with %d bytes, more than MaxReplyBytes %d", got, MaxReplyBytes)
		}
		var codes []string
		for _, f := range sink.take() {
			var ev wire.Event
			if wire.DecodeEvent(f, &ev) == nil && ev.T == wire.TErr {
				codes = append(codes, ev.Code)
			}
		}
		if !slices.Equal(codes, []string{wire.ErrCodeForbidden, wire.ErrCodeTooManyRooms}) {
			t.Errorf("errs %v, want one forbidden and one too_many_rooms", codes)
		}
		e.tick()
		sink.take()
		// A narrower token: all 300 joined rooms are left.
		auth.rooms = prefixRooms("c")
		sink.sent.Store(0)
		s.HandleText([]byte(`{"t":"auth","id":7,"token":"` + long("u", 0) + `"}`))
		if got := sink.sent.Load(); got > MaxReplyBytes {
			t.Errorf("an auth leaving 300 rooms was answered with %d bytes, more than MaxReplyBytes %d", got, MaxReplyBytes)
		}
		if n := len(s.subs); n != 0 {
			t.Errorf("%d rooms still joined after a token that allows none", n)
		}
	})
}

// TestSlowCloseOnlyWhenSent: SlowCloses counts the 4002s actually started.
// A connection the client is already closing (its close echo waits behind
// a full outbox) may stay owed past SlowTimeout: no 4002 goes out, none is
// counted, and the end is the client's.
func TestSlowCloseOnlyWhenSent(t *testing.T) {
	const slow = time.Second
	synctest.Test(t, func(t *testing.T) {
		slowCloses, closes := &counter{}, &closeCounts{}
		e := startHub(t, Config{Insecure: true, SlowTimeout: slow, Metrics: Metrics{SlowCloses: slowCloses, Closes: closes}})
		alice := dial(t, e.h, "alice")
		alice.join("r", 1, "")
		bob := dial(t, e.h, "bob")
		bob.join("r", 1, "")
		e.tick()
		alice.events()
		alice.sink.mu.Lock()
		alice.sink.closed = true // the client's close frame arrived: the transport is closing
		alice.sink.mu.Unlock()
		bob.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		e.sleep(3 * slow)
		if got := slowCloses.value(); got != 0 {
			t.Errorf("SlowCloses = %v for a connection the client was closing, want 0", got)
		}
		if got := alice.s.HandleClose(ConnEnd{Cause: EndPeer, Code: 1001}); got != ClosePeer {
			t.Errorf("HandleClose = %v, want peer", got)
		}
	})
}

// TestOwedSyncsParallel: a room owing thousands of syncs (after a join
// storm, or a resync most of the room missed) delivers them across the
// workers like a diff; those that took theirs are in sync again, the
// others stay owed.
func TestOwedSyncsParallel(t *testing.T) {
	const n = parallelFanout + 200
	sent := &counter{}
	sinks := make([]*fakeSink, n)
	_, r := loadedRoom(t, n, Config{Workers: 4, ListLimit: 2 * n, SyncBudget: 2048, Metrics: Metrics{FramesSent: sent}}, func(i int) Sink {
		sinks[i] = &fakeSink{}
		return sinks[i]
	})
	for _, s := range sinks {
		s.setFull(true)
	}
	changer(r)()
	r.flush(time.Now()) // every subscriber misses the diff: all owed
	r.mu.Lock()
	owed := len(r.owed)
	r.mu.Unlock()
	if owed != n {
		t.Fatalf("%d owed after a diff nobody took, want %d", owed, n)
	}
	stuck := 0
	for i, s := range sinks {
		s.take()
		if i%3 != 0 {
			s.setFull(false)
		} else {
			stuck++
		}
	}
	before := sent.value()
	r.flush(time.Now())
	r.mu.Lock()
	owed, inSync := len(r.owed), len(r.subs)
	r.mu.Unlock()
	if owed != stuck || inSync != n-stuck {
		t.Fatalf("after the retry: %d owed, %d in sync; want %d and %d", owed, inSync, stuck, n-stuck)
	}
	got := 0
	for i, s := range sinks {
		frames := s.take()
		if i%3 != 0 && (len(frames) != 1 || !isType(frames[0], wire.TSync)) {
			t.Fatalf("sink %d got %d frames, want one sync", i, len(frames))
		}
		got += len(frames)
	}
	if d := sent.value() - before; int(d) != got || got != n-stuck {
		t.Fatalf("FramesSent +%v, sinks got %d, want %d", d, got, n-stuck)
	}
}
