package presence

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// TestDisconnect40xxKeepsTheDrainRetry: a 40xx Disconnect that takes over
// a drained connection keeps its hold at bye's retry_ms + LeaveGrace: the
// client saw bye and comes back only after retry_ms.
func TestDisconnect40xxKeepsTheDrainRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 20 * time.Second
		e := startHub(t, Config{Insecure: true, LeaveGrace: time.Second})
		var cs []*client
		for i := range 6 {
			c := dial(t, e.h, fmt.Sprintf("u%d", i))
			c.join("r", 1, "")
			cs = append(cs, c)
		}
		e.tick()
		for _, c := range cs {
			c.events()
		}
		e.h.Drain(window)
		// The member with the longest retry_ms, so that it outlasts the grace.
		var c *client
		var retry time.Duration
		for _, x := range cs {
			if ev := x.expect("bye")[0]; time.Duration(ev.RetryMS)*time.Millisecond >= retry {
				c, retry = x, time.Duration(ev.RetryMS)*time.Millisecond
			}
		}
		if retry < 2*time.Second {
			t.Skipf("longest retry_ms %v: too short to tell from the grace", retry)
		}
		if cl, d, _ := e.h.Disconnect(c.name, wire.CloseCode(4000)); cl != 0 || d != 1 {
			t.Fatalf("Disconnect(%s, 4000) = (%d, %d), want (0, 1)", c.name, cl, d)
		}
		if got := c.s.HandleClose(ConnEnd{EndClosed, wire.CloseGoingAway}); got != CloseAdmin {
			t.Fatalf("HandleClose = %v, want admin", got)
		}
		closed := time.Now()
		hold, tick := retry+e.h.cfg.LeaveGrace, e.h.cfg.Tick
		for time.Since(closed) < hold+2*tick {
			e.tick()
			members, _ := roomState(e.h, "r")
			_, held := members[c.name]
			if el := time.Since(closed); el < hold && !held || el >= hold+tick && held {
				t.Fatalf("%s (retry_ms %d): held %v %v after its close, want held for %v (retry_ms + LeaveGrace)",
					c.name, retry.Milliseconds(), held, el, hold)
			}
		}
	})
}

// heldIndexEmpty reports whether the hub's index of held rooms is empty.
func heldIndexEmpty(h *Hub) bool {
	for i := range h.users {
		sh := &h.users[i]
		sh.mu.Lock()
		n := len(sh.held)
		sh.mu.Unlock()
		if n > 0 {
			return false
		}
	}
	return true
}

// TestDisconnectEndsHeldMemberships: a 41xx Disconnect also ends the
// memberships this node holds only for a leave grace (a lost connection,
// a drained one whose handshake is over, an earlier lost connection of a
// user still connected), through the grace expiry's path: the others see
// the leave in the next diff. A 40xx one keeps them.
func TestDisconnectEndsHeldMemberships(t *testing.T) {
	for _, tc := range []struct {
		name       string
		code       wire.CloseCode
		drain      bool
		live       bool // alice also has a live connection in both rooms
		wantHeld   int
		wantClosed int
	}{
		{"lost, 4103", wire.CloseForbidden, false, false, 2, 0},
		{"drained, 4103", wire.CloseForbidden, true, false, 2, 0},
		{"lost plus a live connection, 4103", wire.CloseForbidden, false, true, 0, 1},
		{"lost, 4000 keeps the grace", wire.CloseCode(4000), false, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := startHub(t, Config{Insecure: true, LeaveGrace: time.Hour})
				bob := dial(t, e.h, "bob")
				bob.join("r1", 1, "")
				bob.join("r2", 2, "")
				alice := dial(t, e.h, "alice")
				alice.join("r1", 1, "")
				alice.join("r2", 2, "")
				var alive *client
				if tc.live {
					alive = dial(t, e.h, "alice")
					alive.join("r1", 1, "")
					alive.join("r2", 2, "")
				}
				e.tick()
				bob.events()
				if tc.drain {
					e.h.Drain(time.Minute)
					alice.s.HandleClose(ConnEnd{EndClosed, wire.CloseGoingAway})
				} else {
					alice.s.HandleClose(endLost)
				}
				e.tick()
				if got := leavesSeen(bob, "r1"); len(got) != 0 {
					t.Fatalf("bob saw %v leave r1 during alice's grace", got)
				}
				cl, d, held := e.h.Disconnect("alice", tc.code)
				if cl != tc.wantClosed || d != 0 || held != tc.wantHeld {
					t.Fatalf("Disconnect(alice, %d) = (%d closed, %d draining, %d held), want (%d, 0, %d)",
						tc.code, cl, d, held, tc.wantClosed, tc.wantHeld)
				}
				if tc.live {
					alive.s.HandleClose(ConnEnd{EndClosed, tc.code})
				}
				e.tick()
				for _, room := range []string{"r1", "r2"} {
					members, _ := roomState(e.h, room)
					_, there := members["alice"]
					if want := wire.Reconnect(tc.code); there != want {
						t.Errorf("%s: alice a member %v a tick after the disconnect, want %v", room, there, want)
					}
				}
				if !wire.Reconnect(tc.code) {
					if got := e.h.UserRooms("alice"); len(got) != 0 {
						t.Errorf("UserRooms(alice) = %v after the disconnect, want none", got)
					}
					if !tc.drain { // a drained bob got bye and 1001: no diffs
						bob.events()
						for _, room := range []string{"r1", "r2"} {
							if got := bob.viewOf(room); got != "[bob:online]" {
								t.Errorf("bob's view of %s: %s, want alice gone", room, got)
							}
						}
					}
					if !heldIndexEmpty(e.h) {
						t.Error("index of held rooms not empty after the disconnect")
					}
				}
				if _, _, held := e.h.Disconnect("alice", tc.code); held != 0 {
					t.Errorf("second Disconnect(alice): %d held ended, want 0", held)
				}
			})
		})
	}
}

// TestHeldIndexFollowsTheGrace: the index of held rooms has an entry
// exactly while a member is in its grace: a reconnect or the grace's end
// drops it.
func TestHeldIndexFollowsTheGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true, LeaveGrace: time.Minute})
		alice := dial(t, e.h, "alice")
		alice.join("r1", 1, "")
		alice.join("r2", 2, "")
		alice.s.HandleClose(endLost)
		if got := len(e.h.heldRooms("alice")); got != 2 {
			t.Fatalf("%d held rooms after the loss, want 2", got)
		}
		back := dial(t, e.h, "alice")
		back.join("r1", 1, "")
		if got := e.h.heldRooms("alice"); len(got) != 1 || got[0].name != "r2" {
			t.Fatalf("held rooms after rejoining r1: %v, want r2 only", got)
		}
		back.s.HandleClose(endNormal)
		e.sleep(time.Minute + e.h.cfg.Tick)
		if !heldIndexEmpty(e.h) {
			t.Error("index of held rooms not empty after the grace")
		}
		if s := e.h.Stats(); s != (Stats{}) {
			t.Errorf("Stats after the grace = %+v, want zero", s)
		}
	})
}

// TestDisconnectEndsADeadNodesHold: a 41xx Disconnect (a peer's kick)
// also ends the grace a dead (or departed) node's member gets on this
// node; the leave is seen at once.
func TestDisconnectEndsADeadNodesHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{LeaveGrace: time.Hour})
		watcher := dial(t, b.h, "bob")
		watcher.join("r", 1, "")
		alice := dial(t, a.h, "alice")
		alice.join("r", 1, "")
		settle(a, b)
		watcher.events()
		net.kill("A")
		settle(a, b)
		if got := leavesSeen(watcher, "r"); len(got) != 0 {
			t.Fatalf("leaves %v at once after the node died, want the grace first", got)
		}
		if _, _, held := b.h.Disconnect("alice", wire.CloseForbidden); held != 1 {
			t.Errorf("Disconnect(alice) on B ended %d holds, want 1 (A's)", held)
		}
		settle(a, b)
		watcher.events()
		if got := watcher.viewOf("r"); got != "[bob:online]" {
			t.Errorf("bob sees %s after the disconnect, want alice gone", got)
		}
		if !heldIndexEmpty(b.h) {
			t.Error("B's index of held rooms not empty")
		}
		watcher.checkView(b.h, "r")
	})
}
