package presence

import (
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// viewOf is c's view of room as "user:status" in user order, "-" if none.
func (c *client) viewOf(room string) string {
	v := c.views[room]
	if v == nil {
		return "-"
	}
	var s []string
	for u, m := range v.members {
		s = append(s, u+":"+m.S)
	}
	slices.Sort(s)
	return fmt.Sprint(s)
}

// leavesSeen lists the users c saw leave room.
func leavesSeen(c *client, room string) (leaves []string) {
	for _, e := range c.events() {
		if e.Room == room {
			leaves = append(leaves, e.Leave...)
		}
	}
	return leaves
}

func TestClusterCrossNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		alice := dial(t, a.h, "alice")
		alice.join("r", 1, `{"status":"busy"}`)
		settle(a, b)
		alice.events()

		// The first sync on B already holds alice, who is on A.
		bob := dial(t, b.h, "bob")
		bob.join("r", 1, "")
		settle(a, b)
		bob.events()
		if got := bob.viewOf("r"); got != "[alice:busy bob:online]" {
			t.Fatalf("bob's first view %s, want alice (from A) and bob", got)
		}
		alice.events()
		if got := alice.viewOf("r"); got != "[alice:busy bob:online]" {
			t.Fatalf("alice's view %s, want bob (from B) joined", got)
		}

		// Update and typing cross nodes.
		bob.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		bob.send(`{"t":"typing","room":"r","on":true}`)
		settle(a, b)
		alice.events()
		bob.events()
		if got := alice.viewOf("r"); got != "[alice:busy bob:away]" {
			t.Errorf("alice sees %s after bob's set, want bob away", got)
		}
		if v := alice.views["r"]; fmt.Sprint(v.typing) != "[bob]" {
			t.Errorf("alice sees typing %v, want [bob]", v.typing)
		}
		// Typing expires on A by the TTL even if no "off" comes.
		time.Sleep(a.h.cfg.TypingTTL)
		settle(a, b)
		alice.events()
		if v := alice.views["r"]; len(v.typing) != 0 {
			t.Errorf("alice sees typing %v after the TTL, want none", v.typing)
		}

		// An explicit leave on B is seen on A.
		bob.send(`{"t":"leave","id":3,"room":"r"}`)
		settle(a, b)
		alice.events()
		if got := alice.viewOf("r"); got != "[alice:busy]" {
			t.Errorf("alice sees %s after bob left, want only herself", got)
		}
		alice.checkView(a.h, "r")
	})
}

// A user connected to two nodes is one member: leaving one node (even
// explicitly) is no leave while the other still holds the user.
func TestClusterUserOnTwoNodes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		c := net.node(t, "C", Config{})
		watcher := dial(t, c.h, "carol")
		watcher.join("r", 1, "")
		onA := dial(t, a.h, "alice")
		onA.join("r", 1, `{"status":"online"}`)
		settle(a, b, c)
		onB := dial(t, b.h, "alice")
		onB.join("r", 1, "")
		settle(a, b, c)
		watcher.events()
		if got := watcher.viewOf("r"); got != "[alice:online carol:online]" {
			t.Fatalf("carol sees %s, want alice once", got)
		}
		if v := watcher.views["r"]; v.count != 2 {
			t.Errorf("count %d, want 2 (alice is one member)", v.count)
		}

		onA.send(`{"t":"leave","id":2,"room":"r"}`)
		settle(a, b, c)
		if got := leavesSeen(watcher, "r"); len(got) != 0 {
			t.Errorf("carol saw leaves %v while alice is still on B", got)
		}
		if got := watcher.viewOf("r"); got != "[alice:online carol:online]" {
			t.Errorf("carol sees %s, want alice still there", got)
		}
		// A set on B after A let go shows everywhere, and A's old hold
		// does not come back.
		onB.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		settle(a, b, c)
		watcher.events()
		if got := watcher.viewOf("r"); got != "[alice:away carol:online]" {
			t.Errorf("carol sees %s, want alice away", got)
		}
		onB.send(`{"t":"leave","id":3,"room":"r"}`)
		settle(a, b, c)
		watcher.events()
		if got := watcher.viewOf("r"); got != "[carol:online]" {
			t.Errorf("carol sees %s after alice left both nodes, want only herself", got)
		}
		watcher.checkView(c.h, "r")
	})
}

// A lost connection keeps its member for the leave grace on every node.
func TestClusterLostConnectionGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		watcher := dial(t, b.h, "bob")
		watcher.join("r", 1, "")
		alice := dial(t, a.h, "alice")
		alice.join("r", 1, "")
		settle(a, b)
		watcher.events()
		alice.s.HandleClose(endLost)
		time.Sleep(a.h.cfg.LeaveGrace / 2)
		settle(a, b)
		if got := leavesSeen(watcher, "r"); len(got) != 0 {
			t.Fatalf("bob saw %v leave within alice's grace", got)
		}
		time.Sleep(a.h.cfg.LeaveGrace / 2)
		settle(a, b)
		watcher.events()
		if got := watcher.viewOf("r"); got != "[bob:online]" {
			t.Errorf("bob sees %s after alice's grace, want only himself", got)
		}
	})
}

// A dead node's members get the leave grace on the survivors, then leave;
// users also connected to a survivor stay.
func TestClusterNodeDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		watcher := dial(t, b.h, "bob")
		watcher.join("r", 1, "")
		for _, u := range []string{"alice", "dave"} {
			c := dial(t, a.h, u)
			c.join("r", 1, `{"status":"away"}`)
		}
		daveB := dial(t, b.h, "dave")
		daveB.join("r", 1, "")
		settle(a, b)
		watcher.events()
		if got := watcher.viewOf("r"); got != "[alice:away bob:online dave:away]" {
			t.Fatalf("bob sees %s", got)
		}
		net.kill("A")
		settle(a, b)
		if got := leavesSeen(watcher, "r"); len(got) != 0 {
			t.Fatalf("leaves %v at once after the node died, want the grace first", got)
		}
		time.Sleep(b.h.cfg.LeaveGrace)
		settle(a, b)
		watcher.events()
		if got := watcher.viewOf("r"); got != "[bob:online dave:away]" {
			t.Errorf("bob sees %s after the grace, want alice gone and dave (also on B) kept", got)
		}
		watcher.checkView(b.h, "r")
	})
}

// Concurrent sets on two nodes converge to the same state everywhere.
func TestClusterLastWriterWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		onA := dial(t, a.h, "alice")
		onA.join("r", 1, "")
		onB := dial(t, b.h, "alice")
		onB.join("r", 1, "")
		settle(a, b)
		onA.send(`{"t":"set","id":2,"room":"r","state":{"status":"busy"}}`)
		onB.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		settle(a, b)
		onA.events()
		onB.events()
		if va, vb := onA.viewOf("r"), onB.viewOf("r"); va != vb {
			t.Errorf("A shows %s, B shows %s: want the same newest state", va, vb)
		}
	})
}

// When the other nodes' members do not load within WatchTimeout, the sync
// goes with what this node knows.
func TestClusterWatchTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{WatchTimeout: 300 * time.Millisecond})
		net.nodes["A"].noLoad = true
		alice := dial(t, a.h, "alice")
		alice.join("r", 1, "")
		settle(a)
		alice.expectNone()
		time.Sleep(300 * time.Millisecond)
		settle(a)
		alice.events()
		if got := alice.viewOf("r"); got != "[alice:online]" {
			t.Errorf("alice's view %s after WatchTimeout, want herself", got)
		}
	})
}

// Republish replaces the node's part with all its holdings (Redis lost
// them).
func TestClusterRepublish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		alice := dial(t, a.h, "alice")
		alice.join("r", 1, `{"status":"busy"}`)
		settle(a)
		net.mu.Lock()
		clear(net.store)
		net.mu.Unlock()
		a.h.Republish("")
		settle(a)
		net.mu.Lock()
		got := net.store["r"]["A"]["alice"]
		net.mu.Unlock()
		if !got.Held || got.Status != "busy" {
			t.Errorf("after Republish the store has %+v, want alice busy", got)
		}
	})
}

// Without a Bus nothing of the cluster state exists.
func TestSingleNodeHasNoClusterState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true})
		alice := dial(t, e.h, "alice")
		alice.join("r", 1, "")
		r := e.h.lookupRoom("r")
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.cl != nil || r.members.get("alice").cl != nil {
			t.Error("a single node allocated cluster state")
		}
	})
}

// A room stays watched for leave_grace after its last local subscriber
// left, then the other nodes' members are forgotten and the room goes.
func TestClusterUnwatchAfterLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		alice := dial(t, a.h, "alice")
		alice.join("r", 1, "")
		bob := dial(t, b.h, "bob")
		bob.join("r", 1, "")
		settle(a, b)
		bob.send(`{"t":"leave","id":2,"room":"r"}`)
		settle(a, b)
		watched := func() bool {
			net.mu.Lock()
			defer net.mu.Unlock()
			return net.nodes["B"].watched["r"]
		}
		if !watched() || b.h.lookupRoom("r") == nil {
			t.Fatal("B stopped watching at once: a reconnect within the grace would see the room anew")
		}
		// Back within the grace: the sync comes at once, with alice.
		bob.send(`{"t":"join","id":3,"room":"r"}`)
		settle(a, b)
		bob.events()
		if got := bob.viewOf("r"); got != "[alice:online bob:online]" {
			t.Fatalf("bob's view on rejoin %s", got)
		}
		bob.send(`{"t":"leave","id":4,"room":"r"}`)
		time.Sleep(b.h.cfg.LeaveGrace)
		settle(a, b)
		if watched() {
			t.Error("B still watches r leave_grace after its last subscriber left")
		}
		if b.h.lookupRoom("r") != nil {
			t.Error("B kept the room, with only remote members and no subscriber")
		}
		// Later messages for the room are ignored.
		alice.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		b.h.Apply("r", "A", []Holding{{User: "alice", Held: true, Status: "away", Version: 1}}, false)
		settle(a, b)
		if b.h.lookupRoom("r") != nil {
			t.Error("Apply recreated a room B does not watch")
		}
	})
}

// A remote member's typing ends when its node lets go of it.
func TestClusterTypingEndsWithHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		watcher := dial(t, b.h, "bob")
		watcher.join("r", 1, "")
		alice := dial(t, a.h, "alice")
		alice.join("r", 1, "")
		alice.send(`{"t":"typing","room":"r","on":true}`)
		settle(a, b)
		watcher.events()
		if v := watcher.views["r"]; fmt.Sprint(v.typing) != "[alice]" {
			t.Fatalf("typing %v, want [alice]", v.typing)
		}
		alice.send(`{"t":"leave","id":2,"room":"r"}`)
		settle(a, b)
		watcher.events()
		if v := watcher.views["r"]; len(v.typing) != 0 || v.members["alice"].U != "" {
			t.Errorf("after alice left: typing %v, members %v", v.typing, describe(v.members))
		}
		watcher.checkView(b.h, "r")
	})
}

// A join without a state takes the state set on another node, with its
// version: once that node lets go, the state stays, and a third node's
// join without a state does not bring back the default.
func TestClusterJoinKeepsStateSetElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		c := net.node(t, "C", Config{})
		watcher := dial(t, a.h, "carol") // A watches r before alice joins it there
		watcher.join("r", 1, "")
		onB := dial(t, b.h, "alice")
		onB.join("r", 1, `{"status":"away"}`)
		settle(a, b, c)
		onA := dial(t, a.h, "alice")
		onA.join("r", 1, "")
		settle(a, b, c)
		onB.send(`{"t":"leave","id":2,"room":"r"}`)
		settle(a, b, c)
		onC := dial(t, c.h, "alice")
		onC.join("r", 1, "")
		settle(a, b, c)
		onA.events()
		onC.events()
		if va, vc := onA.viewOf("r"), onC.viewOf("r"); va != "[alice:away carol:online]" || vc != "[alice:away carol:online]" {
			t.Errorf("A shows %s, C shows %s: want alice away (set on B) on both", va, vc)
		}
	})
}

// checkIdleHolders fails if a member of h's rooms keeps the extra holder
// state while all of it is zero or over.
func checkIdleHolders(t *testing.T, h *Hub) {
	t.Helper()
	now := h.now()
	h.eachRoom(func(r *room) {
		for m := range r.members.all() {
			if m.cl == nil || m.cl.x == nil {
				continue
			}
			x := m.cl.x
			if len(x.remote) == 0 && x.typingUntil <= now && !x.dirty && !x.downGrace {
				t.Errorf("%s in %s on %s keeps idle holder state %+v", m.user, r.name, h.Node(), *x)
			}
		}
	})
}

// After a node's death and after typing on two nodes, idle members give
// their extra holder state back.
func TestClusterIdleHoldersFreed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		a := net.node(t, "A", Config{})
		b := net.node(t, "B", Config{})
		c := net.node(t, "C", Config{})
		onA := dial(t, a.h, "alice")
		onA.join("r", 1, "")
		onB := dial(t, b.h, "alice")
		onB.join("r", 1, "")
		settle(a, b, c)
		onA.send(`{"t":"typing","room":"r","on":true}`)
		time.Sleep(2 * time.Second)
		onB.send(`{"t":"typing","room":"r","on":true}`)
		time.Sleep(a.h.cfg.TypingTTL + time.Second)
		settle(a, b, c)
		net.kill("B")
		settle(a, b, c)
		time.Sleep(a.h.cfg.LeaveGrace)
		settle(a, b, c)
		checkIdleHolders(t, a.h)
		checkIdleHolders(t, c.h)
	})
}
