package multinode

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
	"github.com/presenced/presenced/internal/webhook/webhooktest"
)

// hooks is a real HTTP receiver of every node's webhooks.
type hooks struct{ *webhooktest.Receiver }

func newHooks(t *testing.T) *hooks {
	return &hooks{webhooktest.New(t, []byte("multinode-hook-secret"))}
}

// hookGrace is the webhook tests' leave grace: longer than the others', so
// that a client cut and reconnecting under -race on two cores is back
// within it.
const hookGrace = 2 * time.Second

// flags are the nodes' webhook flags (and -leave-grace hookGrace).
func (h *hooks) flags(t *testing.T) []string {
	file := filepath.Join(t.TempDir(), "hook-secret")
	if err := os.WriteFile(file, h.Secret, 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"-webhook-url", h.URL + "/hook", "-webhook-secret-file", file, "-leave-grace", hookGrace.String()}
}

// byRoom returns each room's events ("type user"), in the order of their
// ids (<partition>.<n>, one counter per partition in Redis), and an error
// if an id came twice.
func (h *hooks) byRoom() (map[string][]string, error) {
	evs := h.Events()
	seq := func(id string) int {
		_, n, _ := strings.Cut(id, ".")
		v, _ := strconv.Atoi(n)
		return v
	}
	sort.SliceStable(evs, func(i, j int) bool { return seq(evs[i].ID) < seq(evs[j].ID) })
	seen := map[string]bool{}
	out := map[string][]string{}
	for _, e := range evs {
		if seen[e.ID] {
			return nil, fmt.Errorf("event id %s sent twice", e.ID)
		}
		seen[e.ID] = true
		out[e.Room] = append(out[e.Room], strings.TrimSpace(e.Type+" "+e.User))
	}
	return out, nil
}

// await waits until the rooms' events are exactly want.
func (h *hooks) await(t *testing.T, timeout time.Duration, want map[string][]string) {
	t.Helper()
	eventually(t, timeout, func() error {
		got, err := h.byRoom()
		if err != nil {
			return err
		}
		for room, w := range want {
			if !slices.Equal(got[room], w) {
				return fmt.Errorf("room %s: events %q, want %q", room, got[room], w)
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("events of rooms %v, want only %d rooms", got, len(want))
		}
		return nil
	})
}

// TestWebhooksExactlyOnce: three nodes, one Redis, each node with the same
// receiver: every membership transition is sent once by one node, with a
// user on two nodes (added when the first connection anywhere joins,
// removed when the last one leaves), a connection cut and back within the
// grace (nothing), two joins of one user at once on two nodes (one added),
// and a killed node (its members removed once, after the grace).
func TestWebhooksExactlyOnce(t *testing.T) {
	h := newHooks(t)
	g := startNodes(t, standalone(t), 3, h.flags(t)...)
	const room, alone = "chat:hooks", "chat:hooks-alone"
	want := map[string][]string{}
	expect := func(timeout time.Duration, r string, evs ...string) {
		t.Helper()
		want[r] = append(want[r], evs...)
		h.await(t, timeout, want)
	}

	a := dial(t, g.n[0].url(), "a")
	a.join(room, state("online", 1))
	expect(propagation, room, "room_occupied", "member_added a")

	// b on two nodes: one member.
	b1 := dial(t, g.n[1].url(), "b")
	b1.join(room, state("online", 1))
	expect(propagation, room, "member_added b")
	b2 := dial(t, g.n[2].url(), "b")
	b2.join(room, state("online", 2))

	// f joins on two nodes at once: Redis orders the two writes.
	f0 := dial(t, g.n[0].url(), "f")
	f1 := dial(t, g.n[1].url(), "f")
	var wg sync.WaitGroup
	wg.Go(func() { f0.join(room, state("online", 1)) })
	wg.Go(func() { f1.join(room, state("online", 1)) })
	wg.Wait()
	expect(propagation, room, "member_added f")

	// c's connection is cut and back within leave_grace: nothing.
	px := newProxy(t, g.n[0].addr)
	c := dial(t, px.url(), "c")
	c.join(room, state("online", 1))
	expect(propagation, room, "member_added c")
	px.cut()
	eventually(t, propagation, func() error {
		if c.disconnects() == 0 {
			return fmt.Errorf("c not cut yet")
		}
		return nil
	})
	// b leaves node1: node2 still holds b.
	b1.close()
	time.Sleep(hookGrace + time.Second)
	h.await(t, propagation, want)
	// ... and then node2: b is removed, once.
	b2.close()
	expect(propagation, room, "member_removed b")

	// d only on node2, e only on node2 in a room nobody else has.
	d := dial(t, g.n[2].url(), "d")
	d.join(room, state("online", 1))
	expect(propagation, room, "member_added d")
	e := dial(t, g.n[2].url(), "e")
	e.join(alone, state("online", 1))
	expect(propagation, alone, "room_occupied", "member_added e")

	since := time.Now()
	g.n[2].kill()
	d.drop()
	e.drop()
	// The reaper ends d and e after the grace: once, whichever node reaps.
	want[room] = append(want[room], "member_removed d")
	want[alone] = append(want[alone], "member_removed e", "room_vacated")
	h.await(t, 2*deathBound+hookGrace, want)
	if took := time.Since(since); took < hookGrace {
		t.Errorf("the dead node's members were removed %v after the kill, before leave_grace (%v)", took, hookGrace)
	}

	// The last members leave: the room is vacated, once.
	for _, p := range []*peer{a, f0, f1, c} {
		p.close()
	}
	want[room] = append(want[room], "member_removed a", "member_removed f", "member_removed c", "room_vacated")
	eventually(t, propagation, func() error {
		got, err := h.byRoom()
		if err != nil {
			return err
		}
		// The three removals come from two nodes: compare them as a set.
		g, w := got[room], want[room]
		if len(g) != len(w) {
			return fmt.Errorf("room %s: events %q, want %q", room, g, w)
		}
		n := len(w)
		tailG, tailW := slices.Clone(g[n-4:n-1]), slices.Clone(w[n-4:n-1])
		slices.Sort(tailG)
		slices.Sort(tailW)
		if !slices.Equal(g[:n-4], w[:n-4]) || !slices.Equal(tailG, tailW) || g[n-1] != "room_vacated" {
			return fmt.Errorf("room %s: events %q, want %q", room, g, w)
		}
		return nil
	})
	// Nothing more comes (no late duplicate from another node).
	time.Sleep(hookGrace + 500*time.Millisecond)
	if got, err := h.byRoom(); err != nil || len(got[room]) != len(want[room]) || len(got[alone]) != len(want[alone]) {
		t.Errorf("late events: %v (%v), want %v", got, err, want)
	}
}

// TestWebhooksRedisOutage: while Redis is stopped no event is produced;
// once it answers again the net transitions of the outage are produced
// once (a member that left, one that came). A user who came and went
// during the outage produces nothing if the node's queue coalesced the
// two, or added then removed, in that order, if its writes had reached
// Redis's socket before it stalled: never one without the other.
func TestWebhooksRedisOutage(t *testing.T) {
	h := newHooks(t)
	tp := standalone(t)
	g := startNodes(t, tp, 3, h.flags(t)...)
	const room = "chat:hooks-outage"
	p := dial(t, g.n[0].url(), "p")
	p.join(room, state("online", 1))
	h.await(t, propagation, map[string][]string{room: {"room_occupied", "member_added p"}})
	s0 := dial(t, g.n[1].url(), "s0")
	s0.join(room, state("online", 1))
	before := []string{"room_occupied", "member_added p", "member_added s0"}
	h.await(t, propagation, map[string][]string{room: before})

	tp.srv.Stop()
	stopped := true
	defer func() {
		if stopped {
			tp.srv.Cont()
		}
	}()
	p.close()
	q := dial(t, g.n[1].url(), "q")
	q.join(room, state("online", 1))
	q.close()
	s := dial(t, g.n[2].url(), "s")
	s.join(room, state("online", 1))
	time.Sleep(2 * time.Second)
	if got, _ := h.byRoom(); len(got[room]) != len(before) {
		t.Errorf("events during the outage: %q", got[room])
	}
	tp.srv.Cont()
	stopped = false

	check := func() error {
		got, err := h.byRoom()
		if err != nil {
			return err
		}
		var qs, rest []string
		for _, e := range got[room] {
			if strings.HasSuffix(e, " q") {
				qs = append(qs, e)
			} else {
				rest = append(rest, e)
			}
		}
		if len(qs) != 0 && !slices.Equal(qs, []string{"member_added q", "member_removed q"}) {
			return fmt.Errorf("q's events %q, want none or added then removed", qs)
		}
		if len(rest) != len(before)+2 || !slices.Equal(rest[:len(before)], before) {
			return fmt.Errorf("events %q, want p removed and s added after the outage", got[room])
		}
		tail := slices.Clone(rest[len(before):])
		slices.Sort(tail)
		if !slices.Equal(tail, []string{"member_added s", "member_removed p"}) {
			return fmt.Errorf("events %q, want p removed and s added after the outage", got[room])
		}
		return nil
	}
	eventually(t, 2*deathBound, check)
	// Nothing more comes: no late duplicate, no half of q's pair.
	time.Sleep(hookGrace + 500*time.Millisecond)
	if err := check(); err != nil {
		t.Errorf("after the outage settled: %v", err)
	}
}

// TestWebhooksDrain: a drained node (SIGTERM) leaves its parts to the
// peers' reaper, which ends them after the grace: members that came back
// on another node within it produce nothing, one that did not is removed
// once, and the node's keys are gone.
func TestWebhooksDrain(t *testing.T) {
	h := newHooks(t)
	tp := standalone(t)
	g := startNodes(t, tp, 3, h.flags(t)...)
	const room = "chat:hooks-drain"
	want := map[string][]string{room: {"room_occupied", "member_added o0"}}
	o0 := dial(t, g.n[0].url(), "o0")
	o0.join(room, state("online", 1))
	h.await(t, propagation, want)
	var movers []*peer
	for _, u := range []string{"m0", "m1", "stay"} {
		p := dial(t, g.n[2].url(), u)
		p.join(room, state("online", 1))
		want[room] = append(want[room], "member_added "+u)
		h.await(t, propagation, want)
		movers = append(movers, p)
	}

	g.n[2].term()
	for i, m := range movers {
		m.awaitClose(5*time.Second, client.CloseGoingAway)
		m.close()
		if m.user == "stay" {
			continue // it does not come back
		}
		p := dial(t, g.n[i%2].url(), m.user)
		p.join(room, state("online", 2))
	}
	if err := g.n[2].wait(); err != nil {
		t.Errorf("node2 drained: exit %v, want 0", err)
	}
	want[room] = append(want[room], "member_removed stay")
	h.await(t, 2*deathBound+hookGrace, want)
	eventually(t, propagation, func() error { return tp.noDeadKeys("node2") })
	time.Sleep(hookGrace + 500*time.Millisecond)
	h.await(t, propagation, want)
}
