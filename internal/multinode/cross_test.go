package multinode

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestCrossNode: three nodes on one Redis: join, update, typing (set,
// off, expiry) and leave cross nodes; a node's first sync of a room holds
// the other nodes' members; a user on two nodes is one member and stays
// while one of its connections is left.
func TestCrossNode(t *testing.T) {
	crossNode(t, standalone(t))
}

func crossNode(t *testing.T, tp *topo) {
	g := startNodes(t, tp, 3)
	const room = "chat:cross"

	// An observer on node2, then alice on node0: once the observer sees
	// alice, her holding is in Redis.
	obs := dial(t, g.n[2].url(), "obs")
	obs.join(room, state("online", 0))
	alice := dial(t, g.n[0].url(), "alice")
	alice.join(room, state("online", 1))
	eventually(t, propagation, func() error { return members(obs, room, "obs", "alice") })

	// bob is node1's first subscriber of the room: his first sync already
	// holds alice and obs.
	bob := dial(t, g.n[1].url(), "bob")
	bob.join(room, state("online", 2))
	eventually(t, propagation, func() error {
		if _, ok := bob.firstSync(room); !ok {
			return fmt.Errorf("bob: no sync of %s yet", room)
		}
		return nil
	})
	first, _ := bob.firstSync(room)
	var got []string
	for _, m := range first.Members {
		got = append(got, m.User)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"alice", "bob", "obs"}) || first.Count != 3 {
		t.Errorf("bob's first sync on node1: members %q, count %d; want alice, bob, obs (the remote members loaded first)", got, first.Count)
	}
	peers := []*peer{obs, alice, bob}
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })

	// Update.
	alice.set(room, state("away", 11))
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })

	// Typing on, then off, then on and left to expire.
	alice.typing(room, true)
	typing := map[string][]string{room: {"alice"}}
	eventually(t, propagation, func() error { return viewsMatch(peers, typing, false) })
	alice.typing(room, false)
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })
	bob.typing(room, true)
	eventually(t, propagation, func() error { return viewsMatch(peers, map[string][]string{room: {"bob"}}, false) })
	start := time.Now()
	eventually(t, typingTTL+propagation, func() error { return viewsMatch(peers, nil, false) })
	t.Logf("typing expired everywhere %v after it was seen (typing_ttl %v)", time.Since(start), typingTTL)

	// Leave.
	since := time.Now()
	obs.leave(room)
	peers = []*peer{alice, bob}
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })
	// The client's view changes before its event is read off its channel:
	// the leave event follows shortly.
	eventually(t, propagation, func() error {
		return all(peers, func(p *peer) error {
			if len(p.changes(room, "obs", since)) == 0 {
				return fmt.Errorf("%s saw no leave of obs; its history of the room:\n%s", p.user, p.history(room, since.Add(-3*time.Second)))
			}
			return nil
		})
	})

	// dave on node0 and node2 is one member; leaving on node0 and then
	// losing the node2 connection... in that order he stays until the last.
	dave0 := dial(t, g.n[0].url(), "dave")
	dave2 := dial(t, g.n[2].url(), "dave")
	dave0.join(room, state("online", 4))
	dave2.join(room, state("online", 4))
	peers = []*peer{alice, bob, dave0, dave2}
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })
	since = time.Now()
	dave0.leave(room)
	dave0.close()
	peers = []*peer{alice, bob, dave2}
	during(t, leaveGrace+propagation, func() error {
		if err := noChanges(peers, room, since, "dave"); err != nil {
			return err
		}
		return viewsMatch(peers, nil, false)
	})
	dave2.close()
	peers = []*peer{alice, bob}
	eventually(t, leaveGrace+propagation, func() error { return viewsMatch(peers, nil, false) })
}
