package multinode

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestAdminDisconnectEndsDrainHolds: a 41xx disconnect ends the memberships
// held only for a grace, on every node: a drained user's (retry_ms +
// leave_grace on the draining node, then leave_grace on the others after
// its Leave), though every connection of the user was already closed or
// moved. With a leave_grace of 30 s, the observer sees each leave within
// the propagation bound only if the holds were ended.
func TestAdminDisconnectEndsDrainHolds(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tok, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const (
		grace  = 30 * time.Second
		window = 3 * time.Second
		room   = "chat:adminhold"
	)
	g := startNodes(t, standalone(t), 3, "-admin-token-file", tok, "-leave-grace", grace.String(), "-drain", window.String())
	lb := newBalancer(t, g.n[2].addr)
	obs := dial(t, g.n[0].url(), "o0")
	mover := dial(t, lb.url(), "mover")     // comes back through the balancer, to node0 or node1
	stayer := dial(t, g.n[2].url(), "gone") // can only come back to node2: stays away
	for i, p := range []*peer{obs, mover, stayer} {
		p.join(room, state("online", i))
	}
	eventually(t, propagation, func() error { return members(obs, room, "gone", "mover", "o0") })

	lb.setTargets(g.n[0].addr, g.n[1].addr)
	g.n[2].term()
	eventually(t, window+propagation, func() error {
		_, node, err := mover.movedAfterBye()
		if err == nil && node != "node0" && node != "node1" {
			err = fmt.Errorf("mover: back on %s, want node0 or node1", node)
		}
		return err
	})
	// node2 (draining, or gone: then node0 holds it) still holds the
	// drained connection's member; the kick reaches it.
	since := time.Now()
	if code, body, err := g.n[0].api("POST", "/api/users/mover/disconnect"); err != nil || code != 200 {
		t.Fatalf("disconnect mover on node0: %d %s %v", code, jsonOf(body), err)
	}
	mover.awaitClose(propagation, 4103)
	eventually(t, propagation, func() error {
		if len(obs.changes(room, "mover", since)) == 0 {
			return fmt.Errorf("o0 saw no leave of mover after the disconnect")
		}
		return members(obs, room, "gone", "o0")
	})
	mover.close() // out of the truth

	// node2 has left: the others hold its member "gone" for leave_grace.
	if err := g.n[2].wait(); err != nil {
		t.Errorf("node2 drained: exit %v, want 0", err)
	}
	if err := members(obs, room, "gone", "o0"); err != nil {
		t.Fatalf("after node2 left: %v (want gone held for leave_grace)", err)
	}
	since = time.Now()
	code, body, err := g.n[1].api("POST", "/api/users/gone/disconnect")
	if err != nil || code != 200 || body["closed_here"] != 0.0 {
		t.Fatalf("disconnect gone on node1: %d %s %v", code, jsonOf(body), err)
	}
	eventually(t, propagation, func() error {
		if len(obs.changes(room, "gone", since)) == 0 {
			return fmt.Errorf("o0 saw no leave of gone after the disconnect (node0 kept node2's hold)")
		}
		return members(obs, room, "o0")
	})
	stayer.close()
}
