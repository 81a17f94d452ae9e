package presence

import (
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// gateSink is a fakeSink whose next Send, once armed, waits for release.
type gateSink struct {
	fakeSink
	armed   atomic.Bool
	release chan struct{}
}

func (g *gateSink) Offer(frame []byte) error { return g.Send(frame) }

func (g *gateSink) Send(frame []byte) error {
	if g.armed.CompareAndSwap(true, false) {
		<-g.release
	}
	return g.fakeSink.Send(frame)
}

// TestFanoutWithoutRoomLock stalls the fan-out of a room in one
// subscriber's Send and checks that the room's commands still run (they are
// on the event loops), that a sync asked for meanwhile comes after the
// diff (at the next flush), and that a subscriber that left meanwhile gets
// no diff. Every fan-out runs without the room lock, whatever the room's
// size.
func TestFanoutWithoutRoomLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true, Workers: 1})
		gate := &client{t: t, name: "gate", sink: &fakeSink{}, views: map[string]*view{}}
		gs := &gateSink{release: make(chan struct{})}
		gate.s = e.h.Open(gs)
		gate.send(`{"t":"hello","v":1,"user":"gate"}`)
		gate.send(`{"t":"join","id":1,"room":"big"}`)
		var listeners []*client
		for i := range 8 {
			c := dial(t, e.h, fmt.Sprintf("u%d", i))
			c.join("big", 1, "")
			listeners = append(listeners, c)
		}
		e.ticks(2)
		for _, c := range listeners {
			c.events()
		}
		gs.take()
		changer, observer, leaver := listeners[0], listeners[1], listeners[2]

		gs.armed.Store(true)
		changer.send(`{"t":"set","id":2,"room":"big","state":{"status":"away"}}`)
		e.tick() // the flusher now waits in the gate's Send, without the room lock

		observer.send(`{"t":"sync","id":3,"room":"big"}`)
		observer.expect("ack") // no sync yet: it would come before the diff
		leaver.send(`{"t":"leave","id":4,"room":"big"}`)
		leaver.expect("ack")

		close(gs.release)
		synctest.Wait()
		if d := observer.expect("diff")[0]; len(d.Update) != 1 || d.Update[0].U != changer.name {
			t.Fatalf("observer diff %+v, want the changer's update", d)
		}
		leaver.expectNone()
		// The next flush publishes the leave, and the observer, owed a
		// sync, gets the sync at that version instead of the diff.
		e.tick()
		observer.expect("sync")
		if _, ok := observer.views["big"].members[leaver.name]; ok {
			t.Fatalf("observer's sync still lists %s, who left", leaver.name)
		}
		observer.checkView(e.h, "big")
		if r := e.h.lookupRoom("big"); r == nil || r.fanning || len(r.owed) != 0 {
			t.Fatalf("room after the fan-out: %+v", r)
		}
	})
}
