package presence

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/presenced/presenced/internal/wire"
)

// R1: FramesSent counts a diff for a sub that left during the unlocked fan-out.
func TestReviewFramesSentGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		frames := &counter{}
		e := startHub(t, Config{Insecure: true, Workers: 1, Metrics: Metrics{FramesSent: frames}})
		gs := &gateSink{release: make(chan struct{})}
		gate := &client{t: t, name: "gate", sink: &gs.fakeSink, views: map[string]*view{}}
		gate.s = e.h.Open(gs)
		gate.send(`{"t":"hello","v":1,"user":"gate"}`)
		gate.send(`{"t":"join","id":1,"room":"big"}`)
		var ls []*client
		for i := range 4 {
			c := dial(t, e.h, fmt.Sprintf("u%d", i))
			c.join("big", 1, "")
			ls = append(ls, c)
		}
		e.ticks(2)
		for _, c := range ls {
			c.events()
		}
		gs.take()
		before := frames.value()
		gs.armed.Store(true)
		ls[0].send(`{"t":"set","id":2,"room":"big","state":{"status":"away"}}`)
		ls[0].events()
		e.tick() // flusher blocked in gate's Send
		ls[1].send(`{"t":"leave","id":4,"room":"big"}`)
		ls[1].events()
		close(gs.release)
		synctest.Wait()
		got := 0
		for _, c := range ls {
			got += len(c.sink.take())
		}
		got += len(gs.take())
		got += 2 // the acks of set and leave, taken by events()
		if d := frames.value() - before; int(d) != got {
			t.Errorf("FramesSent grew by %v, frames actually handed to sinks: %d", d, got)
		}
	})
}

// R2: the "owed sync" case of TestFlushSendsWithoutRoomLock owes nothing.
func TestReviewOwedCaseOwesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true})
		var cs []*client
		for i := range 4 {
			c := dial(t, e.h, fmt.Sprintf("u%d", i))
			c.join("r", 1, "")
			cs = append(cs, c)
		}
		e.ticks(2)
		cs[2].events()
		cs[2].send(`{"t":"sync","id":5,"room":"r"}`)
		cs[0].send(`{"t":"set","id":6,"room":"r","state":{"status":"away"}}`)
		r := e.h.lookupRoom("r")
		r.mu.Lock()
		n := len(r.owed)
		r.mu.Unlock()
		t.Logf("owed before the probed ticks: %d; cs[2] got %v", n, typesOf(cs[2].events()))
		if n == 0 {
			t.Errorf("the 'owed sync' case owes no sync: the owed path is not probed")
		}
	})
}

// R3: a diff arrives after the ack of leave.
func TestReviewDiffAfterLeaveAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true, Workers: 1})
		a := dial(t, e.h, "a")
		a.join("r", 1, "")
		gs := &gateSink{release: make(chan struct{})}
		l := &client{t: t, name: "leaver", sink: &gs.fakeSink, views: map[string]*view{}}
		l.s = e.h.Open(gs)
		l.send(`{"t":"hello","v":1,"user":"leaver"}`)
		l.send(`{"t":"join","id":1,"room":"r"}`)
		e.ticks(2)
		a.events()
		l.events()
		gs.armed.Store(true)
		a.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		e.tick() // flusher passed leaver's gone check, blocked in its Send
		l.send(`{"t":"leave","id":3,"room":"r"}`)
		close(gs.release)
		synctest.Wait()
		evs := l.events()
		t.Logf("leaver got %v", typesOf(evs))
		if len(evs) > 1 && evs[0].T == wire.TAck && evs[1].T == wire.TDiff {
			t.Errorf("diff of r after the ack of leave r: %v", typesOf(evs))
		}
	})
}

// R4: a sync exceeds SyncBudget by the typing list.
func TestReviewSyncOverBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 2000
		e := startHub(t, Config{Insecure: true, SyncBudget: budget})
		var cs []*client
		for i := range 12 {
			c := dial(t, e.h, fmt.Sprintf("%s%02d", strings.Repeat("u", 120), i))
			c.join("r", 1, "")
			c.send(`{"t":"typing","room":"r","on":true}`)
			cs = append(cs, c)
		}
		e.ticks(2)
		r := e.h.lookupRoom("r")
		r.mu.Lock()
		n := len(r.syncFrameLocked())
		r.mu.Unlock()
		if n > budget {
			t.Errorf("sync is %d bytes, SyncBudget %d", n, budget)
		}
	})
}

func TestReviewSizes(t *testing.T) {
	t.Logf("room %d Session %d", unsafe.Sizeof(room{}), unsafe.Sizeof(Session{}))
	_ = time.Second
}
