package multinode

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
)

// TestNodeKill: SIGKILL of a node process: its members leave on the
// survivors within deathBound; a user still connected elsewhere stays; the
// dead node's keys are removed.
func TestNodeKill(t *testing.T) {
	nodeKill(t, standalone(t), false)
}

// TestNodeKillProbingOnly: keyspace notifications off and CONFIG refused
// (renamed away): the nodes cannot enable expired events, and a death is
// still found within the same bound, by probing.
func TestNodeKillProbingOnly(t *testing.T) {
	tp := standalone(t, "--rename-command", "CONFIG", "")
	g := nodeKill(t, tp, true)
	for _, n := range g.n[:2] {
		if !regexp.MustCompile(`(?i)level=WARN .*prob`).MatchString(n.logText()) {
			t.Errorf("node %s logged no warning about probing only (CONFIG refused)", n.name)
		}
	}
}

// TestNoKeyspaceEventsFlag: with -redis-no-keyspace-events the nodes leave
// notify-keyspace-events as it is; a death is found by probing.
func TestNoKeyspaceEventsFlag(t *testing.T) {
	tp := standalone(t)
	nodeKill(t, tp, true, "-redis-no-keyspace-events")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	v, err := tp.rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := v["notify-keyspace-events"]; got != "" {
		t.Errorf("notify-keyspace-events %q after nodes with -redis-no-keyspace-events, want it untouched (\"\")", got)
	}
}

// nodeKill runs the node-death scenario on tp and returns the nodes;
// probing: no death may be learnt from an expired event.
func nodeKill(t *testing.T, tp *topo, probing bool, extra ...string) *nodes {
	g := startNodes(t, tp, 3, extra...)
	const room = "chat:death"
	o0 := dial(t, g.n[0].url(), "o0")
	o1 := dial(t, g.n[1].url(), "o1")
	x := dial(t, g.n[2].url(), "x")  // only on node2
	y2 := dial(t, g.n[2].url(), "y") // on node2 ...
	y0 := dial(t, g.n[0].url(), "y") // ... and node0
	z2 := dial(t, g.n[2].url(), "z") // only on node2, in a room nobody else watches
	peers := []*peer{o0, o1, x, y2, y0}
	for _, p := range peers {
		p.join(room, state("online", 1))
	}
	z2.join("chat:alone", state("online", 1))
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })

	since := time.Now()
	g.n[2].kill()
	x.drop()
	y2.drop()
	z2.drop()
	survivors := []*peer{o0, o1, y0}
	took, err := within(deathBound, func() error { return viewsMatch(survivors, nil, false) })
	if err != nil {
		t.Fatalf("views after node2's SIGKILL, %v later (bound %v = node_ttl + ttl/3 + leave_grace + 1 s + node_ttl): %v", took, deathBound, err)
	}
	t.Logf("node2 killed: its members left on the survivors %v later (bound %v)", took, deathBound)
	if err := noChanges(survivors, room, since, "y"); err != nil {
		t.Errorf("y, still on node0, left: %v", err)
	}
	eventually(t, propagation, func() error { return tp.noDeadKeys("node2") })

	for _, n := range g.n[:2] {
		d, err := n.deaths()
		if err != nil {
			t.Fatal(err)
		}
		if d < 1 {
			t.Errorf("node %s counted %v deaths, want at least 1", n.name, d)
		}
		if ev, _ := n.metric(`presenced_cluster_node_deaths_total{how="event"}`); probing && ev != 0 {
			t.Errorf("node %s learnt %v deaths from expired events, with events off", n.name, ev)
		}
	}
	g.awaitMembership(g.n[:2]...)
	return g
}

// TestNodeStopCont: SIGSTOP a node for longer than node_ttl: the others
// show its members leaving after the grace; on SIGCONT it finds itself
// reaped, registers again and its members come back, with no ghost
// anywhere.
func TestNodeStopCont(t *testing.T) {
	tp := standalone(t)
	g := startNodes(t, tp, 3)
	const room = "chat:stop"
	o0 := dial(t, g.n[0].url(), "o0")
	o1 := dial(t, g.n[1].url(), "o1")
	x := dial(t, g.n[2].url(), "x")
	o2 := dial(t, g.n[2].url(), "o2")
	peers := []*peer{o0, o1, x, o2}
	for _, p := range peers {
		p.join(room, state("online", 1))
	}
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })

	g.n[2].stop()
	stopped := true
	defer func() {
		if stopped {
			g.n[2].cont()
		}
	}()
	took, err := within(deathBound, func() error {
		return all([]*peer{o0, o1}, func(p *peer) error { return members(p, room, "o0", "o1") })
	})
	if err != nil {
		t.Fatalf("node2 stopped: after %v (bound %v): %v", took, deathBound, err)
	}
	t.Logf("node2 stopped: its members left on the others %v later (bound %v)", took, deathBound)

	g.n[2].cont()
	stopped = false
	// Back: it finds itself reaped, registers as a new incarnation,
	// republishes and resyncs.
	took, err = within(2*nodeTTL+propagation, func() error { return viewsMatch(peers, nil, false) })
	if err != nil {
		t.Fatalf("node2 continued: views after %v: %v", took, err)
	}
	t.Logf("node2 continued: every view true again %v later", took)
	g.awaitMembership(g.n...)
	// No ghost stays: the views hold for a while, and Redis holds one
	// incarnation of node2.
	during(t, nodeTTL, func() error { return viewsMatch(peers, nil, false) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	keys, err := tp.rdb.Keys(ctx, "*lease:node2#*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Errorf("leases of node2: %q, want one", keys)
	}
}

// TestDrainReconnectElsewhere: a node drained with SIGTERM whose clients
// reconnect to another node within leave_grace: nobody sees them leave or
// join again.
func TestDrainReconnectElsewhere(t *testing.T) {
	tp := standalone(t)
	g := startNodes(t, tp, 3)
	const room = "chat:drain"
	o0 := dial(t, g.n[0].url(), "o0")
	o1 := dial(t, g.n[1].url(), "o1")
	var movers []*peer
	for i := range 3 {
		movers = append(movers, dial(t, g.n[2].url(), fmt.Sprintf("m%d", i)))
	}
	observers := []*peer{o0, o1}
	peers := append(append([]*peer{}, observers...), movers...)
	for i, p := range peers {
		p.join(room, state("online", i))
	}
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })

	since := time.Now()
	g.n[2].term()
	var moved []*peer
	for i, m := range movers {
		// The drain says bye and closes with 1001; the client comes back
		// on another node, as a load balancer would send it.
		m.awaitClose(5*time.Second, client.CloseGoingAway)
		m.close()
		p := dial(t, g.n[i%2].url(), m.user)
		p.join(room, state("online", 2+i))
		moved = append(moved, p)
	}
	if err := g.n[2].wait(); err != nil {
		t.Errorf("node2 drained: exit %v, want 0", err)
	}
	// Its Leave lets the others act at once, well before its lease would
	// have expired.
	eventually(t, nodeTTL/2, func() error {
		for _, n := range g.n[:2] {
			if v, err := n.metric(`presenced_cluster_node_deaths_total{how="announce"}`); err != nil || v < 1 {
				return fmt.Errorf("node %s: announced deaths %v, %v", n.name, v, err)
			}
		}
		return nil
	})
	peers = append(append([]*peer{}, observers...), moved...)
	users := []string{"m0", "m1", "m2"}
	during(t, leaveGrace+nodeTTL+propagation, func() error {
		return noChanges(append(observers, moved...), room, since, users...)
	})
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })
	eventually(t, propagation, func() error { return tp.noDeadKeys("node2") })
	if out := g.n[2].logText(); !strings.Contains(out, "msg=stopped") {
		t.Errorf("node2's log lacks msg=stopped:\n%s", out)
	}
}
