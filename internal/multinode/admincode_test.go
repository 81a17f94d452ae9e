package multinode

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
)

// TestAdminDisconnectCodeCluster: ?code= on three nodes, asked of a node
// where the user has no connection. docs/admin.md's rule: a code of
// 4000-4099 invites a reconnect, so the memberships keep leave_grace (the
// client comes back and nobody sees it leave); 4100-4199 forbid it, so
// they end at once (the others see the leave long before the grace of
// 30 s) and the client stays away.
func TestAdminDisconnectCodeCluster(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tok, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const grace = 30 * time.Second
	g := startNodes(t, standalone(t), 3, "-admin-token-file", tok, "-leave-grace", grace.String())
	px := newProxy(t, g.n[0].addr) // holds alice's reconnect back
	alice := dial(t, px.url(), "alice")
	bob := dial(t, g.n[1].url(), "bob")
	alice.join("r", state("online", 1))
	bob.join("r", state("online", 2))
	eventually(t, 2*propagation, func() error { return members(bob, "r", "alice", "bob") })

	// 4000: alice's client comes back to node0 and resumes; bob sees no
	// leave. Her reconnects are refused for a while: without the grace,
	// the leave would reach bob within propagation.
	px.refuse.Store(true)
	start := time.Now()
	code, body, err := g.n[2].api("POST", "/api/users/alice/disconnect?code=4000")
	if err != nil || code != 200 || body["closed_here"] != 0.0 || body["code"] != 4000.0 || body["reconnect"] != true {
		t.Fatalf("disconnect ?code=4000 on node2: %d %s %v", code, jsonOf(body), err)
	}
	alice.awaitClose(propagation, 4000)
	time.Sleep(propagation)
	if ch := bob.changes("r", "alice", start); len(ch) != 0 {
		t.Errorf("bob saw alice change while she was away after a disconnect with 4000 (the grace was not kept): %v", ch)
	}
	px.refuse.Store(false)
	eventually(t, propagation, func() error {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		for _, s := range alice.events {
			if s.ev.Kind == client.EventConnected && s.at.After(start) {
				return nil
			}
		}
		return fmt.Errorf("alice's client has not reconnected after 4000")
	})
	eventually(t, propagation, func() error { return members(alice, "r", "alice", "bob") })
	if ch := bob.changes("r", "alice", start); len(ch) != 0 {
		t.Errorf("bob saw alice change after a disconnect with 4000 (the grace was not kept): %v", ch)
	}
	eventually(t, propagation, func() error {
		return g.n[0].metricIs(`presenced_connections_closed_total{reason="admin"}`, 1)
	})

	// 4150 (any 41xx, not only the default 4103): the leave comes at once
	// and alice's client stays away.
	start = time.Now()
	code, body, err = g.n[2].api("POST", "/api/users/alice/disconnect?code=4150")
	if err != nil || code != 200 || body["code"] != 4150.0 || body["reconnect"] != false {
		t.Fatalf("disconnect ?code=4150 on node2: %d %s %v", code, jsonOf(body), err)
	}
	alice.awaitClose(propagation, 4150)
	// The wait (propagation) ends long before the grace: seeing the leave
	// at all shows the grace was skipped.
	eventually(t, propagation, func() error {
		if len(bob.changes("r", "alice", start)) == 0 {
			return fmt.Errorf("bob saw no leave of alice after 4150")
		}
		return members(bob, "r", "bob")
	})
	time.Sleep(500 * time.Millisecond)
	alice.mu.Lock()
	for _, s := range alice.events {
		if s.ev.Kind == client.EventConnected && s.at.After(start) {
			t.Errorf("alice's client reconnected after 4150")
		}
	}
	alice.mu.Unlock()
	alice.close() // out of the truth
}
