package multinode

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
)

const adminToken = "admin-token-for-tests"

// api calls the node's admin API with the test token and decodes the
// JSON answer.
func (n *node) api(method, path string) (int, map[string]any, error) {
	req, err := http.NewRequest(method, "http://"+n.admin+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("node %s %s %s: %q is not JSON", n.name, method, path, b)
	}
	return resp.StatusCode, body, nil
}

// jsonOf renders v as compact JSON, for comparisons and messages.
func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestAdminAPICluster: three nodes on one Redis answer the admin API
// alike, cluster-wide (members, rooms, a user's rooms, nodes with their
// connections; a user connected to two nodes is one member, with the
// newest state), and a disconnect asked of a node where the user has no
// connection closes the user's connections on every node with 4103: the
// clients do not reconnect and the other members see the leave at once,
// although leave_grace is 30 s.
func TestAdminAPICluster(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tok, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const grace = 30 * time.Second
	g := startNodes(t, standalone(t), 3, "-admin-token-file", tok, "-leave-grace", grace.String())

	alice0 := dial(t, g.n[0].url(), "alice")
	alice1 := dial(t, g.n[1].url(), "alice")
	bob := dial(t, g.n[1].url(), "bob")
	carol := dial(t, g.n[2].url(), "carol")
	alice0.join("team/a", state("busy", 1))
	bob.join("team/a", state("online", 2))
	alice1.join("lobby", state("busy", 1))
	carol.join("lobby", state("online", 3))
	carol.join("team/b", state("online", 4))
	// alice on a second node in team/a, with a newer state: still one
	// member, with that state.
	eventually(t, 2*propagation, func() error { return members(bob, "team/a", "alice", "bob") })
	alice1.join("team/a", state("away", 5))

	want := map[string]string{
		"/api/rooms/team%2Fa/members":            `{"count":2,"members":[{"meta":{"n":5},"status":"away","user":"alice"},{"meta":{"n":2},"status":"online","user":"bob"}],"next_cursor":"","room":"team/a"}`,
		"/api/rooms?prefix=team":                 `{"count":2,"next_cursor":"","prefix":"team","rooms":[{"members":2,"room":"team/a"},{"members":1,"room":"team/b"}]}`,
		"/api/rooms?limit=1&cursor=" + "bG9iYnk": `{"count":3,"next_cursor":"dGVhbS9h","prefix":"","rooms":[{"members":2,"room":"team/a"}]}`,
		"/api/users/alice/rooms":                 `{"rooms":["lobby","team/a"],"user":"alice"}`,
		"/api/users/carol/rooms":                 `{"rooms":["lobby","team/b"],"user":"carol"}`,
	}
	eventually(t, 2*propagation, func() error {
		for _, n := range g.n {
			for path, w := range want {
				code, body, err := n.api("GET", path)
				if err != nil {
					return err
				}
				if got := jsonOf(body); code != 200 || got != w {
					return fmt.Errorf("node %s GET %s: %d %s\nwant %s", n.name, path, code, got, w)
				}
			}
			code, body, err := n.api("GET", "/api/nodes")
			if err != nil {
				return err
			}
			var conns []float64
			for _, x := range body["nodes"].([]any) {
				conns = append(conns, x.(map[string]any)["connections"].(float64))
			}
			if code != 200 || body["count"] != 3.0 || body["connections"] != 4.0 || !slices.Equal(conns, []float64{1, 2, 1}) {
				return fmt.Errorf("node %s GET /api/nodes: %d %s; want 3 nodes with 1, 2, 1 connections", n.name, code, jsonOf(body))
			}
		}
		return nil
	})

	// Disconnect alice from node2, where she has no connection.
	start := time.Now()
	code, body, err := g.n[2].api("POST", "/api/users/alice/disconnect")
	if err != nil || code != 200 || body["closed_here"] != 0.0 || body["code"] != 4103.0 {
		t.Fatalf("disconnect on node2: %d %s %v", code, jsonOf(body), err)
	}
	alice0.awaitClose(propagation, 4103)
	alice1.awaitClose(propagation, 4103)
	eventually(t, propagation, func() error {
		for _, c := range []struct {
			p    *peer
			room string
		}{{bob, "team/a"}, {carol, "lobby"}} {
			if len(c.p.changes(c.room, "alice", start)) == 0 {
				return fmt.Errorf("%s saw no leave of alice in %s", c.p.user, c.room)
			}
		}
		return nil
	})
	// The wait above (propagation) ends long before the grace: seeing the
	// leave at all shows the grace was skipped.
	t.Logf("alice's leave seen everywhere %v after the disconnect", time.Since(start))
	eventually(t, propagation, func() error {
		for _, n := range g.n {
			if code, body, err := n.api("GET", "/api/users/alice/rooms"); err != nil || code != 404 {
				return fmt.Errorf("node %s: rooms of alice after the disconnect: %d %s %v, want 404", n.name, code, jsonOf(body), err)
			}
		}
		return nil
	})
	// Her clients stay closed: 4103 forbids a reconnect.
	time.Sleep(500 * time.Millisecond)
	for _, p := range []*peer{alice0, alice1} {
		p.mu.Lock()
		for _, s := range p.events {
			if s.ev.Kind == client.EventConnected && s.at.After(start) {
				t.Errorf("alice's client on %s reconnected after the disconnect", p.via)
			}
		}
		p.mu.Unlock()
		p.close() // out of the truth
	}
	eventually(t, propagation, func() error {
		return g.n[0].metricIs(`presenced_connections_closed_total{reason="admin"}`, 1)
	})

	// Without the token: 401; unknown room: 404, on any node.
	if code, _, _ := g.n[1].get("/api/nodes"); code != 401 {
		t.Errorf("GET /api/nodes without the token: %d, want 401", code)
	}
	if code, body, _ := g.n[1].api("GET", "/api/rooms/nowhere/members"); code != 404 {
		t.Errorf("members of an unknown room: %d %s, want 404", code, jsonOf(body))
	}
}
