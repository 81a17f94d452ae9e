package main

import (
	"bytes"
	"context"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// fanoutWorker is a worker of the fanout scenario with 3 listeners
// (u0..u2) and 2 changers (c0, c1) in one room, not connected.
func fanoutWorker(t *testing.T) *worker {
	t.Helper()
	cfg, err := parseFlags([]string{"-scenario", "fanout", "-conns", "3", "-changers", "2"}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWorker(cfg, 0, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func memberEv(kind eventKind, user, status string) *event {
	return &event{kind: kind, room: []byte("r0"), user: []byte(user), status: []byte(status)}
}

// TestFanoutDeliveries: in the measured phase only the changers' status
// changes count as deliveries, not the joins of the room's fill.
func TestFanoutDeliveries(t *testing.T) {
	w := fanoutWorker(t)
	w.measure.Store(true)
	c := w.clients[0]
	for _, ev := range []*event{
		memberEv(evJoin, "u1", "online"), // a late join push: not a delivery
		memberEv(evJoin, "c0", "online"),
		memberEv(evChange, "u2", "away"), // not a changer
		memberEv(evChange, "c0", "s0"),   // the one delivery
		memberEv(evLeave, "u2", ""),
	} {
		c.onEvent(ev)
	}
	if got := w.live.deliveries.Load(); got != 1 {
		t.Errorf("deliveries %d, want 1 (the changer's change)", got)
	}
}

// TestViewsComplete: a listener's view is complete once it has seen every
// member of its room (itself counted from the start), once.
func TestViewsComplete(t *testing.T) {
	w := fanoutWorker(t)
	if w.sc.listeners != 3 {
		t.Fatalf("listeners %d, want 3", w.sc.listeners)
	}
	c := w.clients[0]
	for _, u := range []string{"u1", "u1", "c0", "x9", "c7", "u2"} {
		c.onEvent(memberEv(evJoin, u, "online"))
	}
	if c.view.complete || w.sc.viewsComplete.Load() != 0 {
		t.Fatalf("complete with %d of 5 members seen", c.view.nSeen)
	}
	c.onEvent(memberEv(evChange, "c1", "s1")) // a change shows the member too
	c.onEvent(memberEv(evJoin, "c1", "online"))
	if !c.view.complete || w.sc.viewsComplete.Load() != 1 {
		t.Errorf("not complete, or counted twice: %d seen, %d complete", c.view.nSeen, w.sc.viewsComplete.Load())
	}
}

// TestAwaitViews: ready waits for the views, or for a second without a
// join event when they cannot complete.
func TestAwaitViews(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := fanoutWorker(t)
		done := make(chan struct{})
		go func() { w.sc.awaitViews(context.Background()); close(done) }()
		// Joins keep arriving for 3 s: no return while they do.
		for range 30 {
			time.Sleep(100 * time.Millisecond)
			w.joinEvents.Add(1)
			select {
			case <-done:
				t.Fatal("returned while joins arrive")
			default:
			}
		}
		time.Sleep(1500 * time.Millisecond)
		select {
		case <-done:
		default:
			t.Fatal("still waiting after a quiet second")
		}
	})
	synctest.Test(t, func(t *testing.T) {
		w := fanoutWorker(t)
		w.sc.viewsComplete.Store(w.sc.listeners)
		w.sc.awaitViews(context.Background()) // returns at once
	})
}

// recordProto records the send time of the changes it builds.
type recordProto struct {
	presencedProto
	sentNs []int64
}

func (p *recordProto) Set(dst []byte, id uint32, room, user, status string, sentNs int64) []byte {
	p.sentNs = append(p.sentNs, sentNs)
	return p.presencedProto.Set(dst, id, room, user, status, sentNs)
}

// TestChangeCarriesSchedule: a change carries its scheduled time, not the
// time it left; a changer without a session counts an error.
func TestChangeCarriesSchedule(t *testing.T) {
	w := fanoutWorker(t)
	changer := w.clients[3] // c0
	changer.sc().act(changer, 0, 12345)
	if got := w.live.errors.Load(); got != 1 {
		t.Errorf("a change without a session: %d errors, want 1", got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	rec := &recordProto{}
	changer.proto = rec
	changer.ws = &wsConn{nc: nc.(*net.TCPConn)}
	changer.sc().act(changer, 7, 12345)
	if len(rec.sentNs) != 1 || rec.sentNs[0] != 12345 {
		t.Errorf("change sent with ts %v, want the scheduled 12345", rec.sentNs)
	}
	if got := w.live.sent.Load(); got != 1 {
		t.Errorf("sent %d, want 1", got)
	}
}

func (c *client) sc() *scenario { return c.w.sc }
