package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
	"github.com/presenced/presenced/internal/server"
)

// apiCall sends an admin API request with token ("" for none) and
// returns the status and the decoded JSON body.
func apiCall(t *testing.T, method, url, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if strings.HasPrefix(url[strings.LastIndex(url, "/"):], "/metrics") || strings.HasSuffix(url, "/healthz") || strings.HasSuffix(url, "/readyz") {
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%s %s: %d, body %q is not JSON: %v", method, url, resp.StatusCode, b, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, url, ct)
	}
	return resp.StatusCode, body
}

// errCode is the error code of an error answer ("" if none).
func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	if m, _ := e["message"].(string); c != "" && m == "" {
		return c + " (no message)"
	}
	return c
}

// strs converts a JSON array of strings, or of objects' key field.
func strs(v any, key string) []string {
	var out []string
	arr, _ := v.([]any)
	for _, x := range arr {
		if key == "" {
			s, _ := x.(string)
			out = append(out, s)
			continue
		}
		o, _ := x.(map[string]any)
		s, _ := o[key].(string)
		out = append(out, s)
	}
	return out
}

func TestAdminAuth(t *testing.T) {
	for _, tc := range []struct {
		name     string
		token    string // the server's
		insecure bool
		send     string // the request's token
		want     int
	}{
		{"no token, secure: off", "", false, "", 403},
		{"no token, secure, a token sent: off", "", false, "x", 403},
		{"no token, insecure, loopback: open", "", true, "", 200},
		{"token, none sent", "s3cret-admin", true, "", 401},
		{"token, a wrong one", "s3cret-admin", false, "s3cret-admiN", 401},
		{"token, a longer one", "s3cret-admin", false, "s3cret-admin2", 401},
		{"token, the right one", "s3cret-admin", false, "s3cret-admin", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := sdkInsecure()
			cfg.Presence.Insecure = tc.insecure
			if !tc.insecure {
				cfg.JWT.HS256Secret = []byte("a jwt secret of at least 32 bytes!!")
			}
			cfg.AdminToken = []byte(tc.token)
			n := startServer(t, cfg)
			base := "http://" + n.AdminAddr().String()
			code, body := apiCall(t, "GET", base+"/api/nodes", tc.send)
			if code != tc.want {
				t.Errorf("GET /api/nodes: %d %v, want %d", code, body, tc.want)
			}
			if tc.want != 200 && errCode(body) == "" {
				t.Errorf("error answer without a code: %v", body)
			}
			for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
				if code, _ := apiCall(t, "GET", base+p, ""); code != 200 {
					t.Errorf("GET %s without a token: %d, want 200", p, code)
				}
			}
		})
	}
}

// adminNode starts an insecure node with an admin token and returns it
// with a function calling its API.
func adminNode(t *testing.T, cfg server.Config) (*node, func(method, path string) (int, map[string]any)) {
	cfg.AdminToken = []byte("tok")
	n := startServer(t, cfg)
	return n, func(method, path string) (int, map[string]any) {
		t.Helper()
		return apiCall(t, method, "http://"+n.AdminAddr().String()+path, "tok")
	}
}

func TestAdminReadsSingleNode(t *testing.T) {
	n, api := adminNode(t, sdkInsecure())
	url := sdkURL(n.Addr())
	alice, _ := sdkDial(t, client.Config{URL: url, User: "alice"})
	bob, _ := sdkDial(t, client.Config{URL: url, User: "bob"})
	carol, _ := sdkDial(t, client.Config{URL: url, User: "carol"})
	sdkJoin(t, alice, "team/a", &client.State{Status: "busy", Meta: json.RawMessage(`{"x":1}`)})
	sdkJoin(t, bob, "team/a", nil)
	sdkJoin(t, carol, "team/b", nil)
	sdkJoin(t, alice, "lobby", nil)

	checkReads(t, api, 3)
	code, body := api("GET", "/api/rooms/team%2Fa/members")
	if code != 200 {
		t.Fatalf("members: %d %v", code, body)
	}
	ms, _ := body["members"].([]any)
	a, _ := ms[0].(map[string]any)
	if a["status"] != "busy" || fmt.Sprint(a["meta"]) != "map[x:1]" {
		t.Errorf("alice listed as %v, want status busy, meta {\"x\":1}", a)
	}
}

// checkReads checks every read endpoint against the rooms that
// TestAdminReadsSingleNode and the cluster test set up: alice and bob in
// team/a, carol in team/b, alice in lobby; conns connections in all.
func checkReads(t *testing.T, api func(method, path string) (int, map[string]any), conns int) {
	t.Helper()
	eventually(t, sdkWait, func() error {
		code, body := api("GET", "/api/rooms/team%2Fa/members")
		if got := strs(body["members"], "user"); code != 200 || body["count"] != 2.0 || !slices.Equal(got, []string{"alice", "bob"}) {
			return fmt.Errorf("members of team/a: %d %v", code, body)
		}
		code, body = api("GET", "/api/rooms?prefix=team")
		if code != 200 || body["count"] != 2.0 || fmt.Sprint(body["rooms"]) != "[map[members:2 room:team/a] map[members:1 room:team/b]]" {
			return fmt.Errorf("rooms with prefix team: %d %v", code, body)
		}
		code, body = api("GET", "/api/users/alice/rooms")
		if got := strs(body["rooms"], ""); code != 200 || !slices.Equal(got, []string{"lobby", "team/a"}) {
			return fmt.Errorf("rooms of alice: %d %v", code, body)
		}
		code, body = api("GET", "/api/nodes")
		if code != 200 || body["connections"] != float64(conns) {
			return fmt.Errorf("nodes: %d %v, want %d connections", code, body, conns)
		}
		return nil
	})

	// Paging: one at a time, following next_cursor.
	var users []string
	cursor := ""
	for range 5 {
		code, body := api("GET", "/api/rooms/team%2Fa/members?limit=1&cursor="+cursor)
		if code != 200 || body["count"] != 2.0 {
			t.Fatalf("page of members: %d %v", code, body)
		}
		users = append(users, strs(body["members"], "user")...)
		if cursor, _ = body["next_cursor"].(string); cursor == "" {
			break
		}
	}
	if !slices.Equal(users, []string{"alice", "bob"}) {
		t.Errorf("members paged one by one: %v", users)
	}
	code, body := api("GET", "/api/rooms?limit=2")
	next, _ := body["next_cursor"].(string)
	if code != 200 || body["count"] != 3.0 || !slices.Equal(strs(body["rooms"], "room"), []string{"lobby", "team/a"}) || next == "" {
		t.Fatalf("first page of rooms: %d %v", code, body)
	}
	code, body = api("GET", "/api/rooms?limit=2&cursor="+next)
	if code != 200 || !slices.Equal(strs(body["rooms"], "room"), []string{"team/b"}) || body["next_cursor"] != "" {
		t.Errorf("second page of rooms: %d %v", code, body)
	}

	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/api/rooms/nobody-here/members", 404, "not_found"},
		{"GET", "/api/users/nobody/rooms", 404, "not_found"},
		{"GET", "/api/no/such/route", 404, "not_found"},
		{"GET", "/api/users/alice/disconnect", 405, "method_not_allowed"},
		{"POST", "/api/rooms/x/members", 405, "method_not_allowed"},
		{"DELETE", "/api/nodes", 405, "method_not_allowed"},
		{"GET", "/api/rooms/bad%20room/members", 400, "bad_request"},
		{"GET", "/api/rooms/" + strings.Repeat("x", 129) + "/members", 400, "bad_request"},
		{"GET", "/api/users/bad%21user/rooms", 400, "bad_request"},
		{"POST", "/api/users/bad%21user/disconnect", 400, "bad_request"},
		{"POST", "/api/users/alice/disconnect?code=1000", 400, "bad_request"},
		{"GET", "/api/rooms?prefix=bad%20prefix", 400, "bad_request"},
		{"GET", "/api/rooms?limit=0", 400, "bad_request"},
		{"GET", "/api/rooms?limit=1001", 400, "bad_request"},
		{"GET", "/api/rooms?cursor=%25%25", 400, "bad_request"},
	} {
		if code, body := api(tc.method, tc.path); code != tc.status || errCode(body) != tc.code {
			t.Errorf("%s %s: %d %v, want %d %s", tc.method, tc.path, code, body, tc.status, tc.code)
		}
	}
}

// TestAdminDisconnectSingleNode: the user's connection closes with 4103,
// its SDK stops (no reconnect), and the other members see the leave at
// once, not after leave_grace.
func TestAdminDisconnectSingleNode(t *testing.T) {
	cfg := sdkInsecure()
	cfg.Presence.LeaveGrace = time.Minute
	n, api := adminNode(t, cfg)
	url := sdkURL(n.Addr())
	alice, arec := sdkDial(t, client.Config{URL: url, User: "alice"})
	bob, brec := sdkDial(t, client.Config{URL: url, User: "bob"})
	sdkJoin(t, alice, "room1", nil)
	sdkJoin(t, bob, "room1", nil)
	eventually(t, sdkWait, func() error {
		return sdkMembers(bob, "room1", map[string]string{"alice": "online", "bob": "online"})
	})

	start := time.Now()
	code, body := api("POST", "/api/users/alice/disconnect")
	if code != 200 || body["closed_here"] != 1.0 || body["code"] != 4103.0 || body["reconnect"] != false {
		t.Fatalf("disconnect: %d %v", code, body)
	}
	ev := arec.wait(t, "terminal disconnect", func(ev client.Event) bool { return ev.Kind == client.EventDisconnected })
	if ev.Close != 4103 || !ev.Terminal {
		t.Errorf("alice's client: close %d, terminal %v; want 4103, terminal", ev.Close, ev.Terminal)
	}
	// wait gives up long before the grace (1m): seeing the leave at all
	// shows the grace was skipped.
	brec.wait(t, "alice's leave", func(ev client.Event) bool {
		return ev.Kind == client.EventChanged && ev.Diff != nil && slices.Contains(ev.Diff.Leave, "alice")
	})
	sdkMetric(t, n.reg, 1, "presenced_connections_closed_total", "reason", "admin")
	if v := metric(t, n.reg, "presenced_admin_requests_total", "endpoint", "disconnect", "code", "200"); v != 1 {
		t.Errorf("presenced_admin_requests_total{disconnect,200} %v, want 1", v)
	}
	time.Sleep(3 * sdkTick)
	for _, ev := range arec.all() {
		if ev.Kind == client.EventConnected && ev.at.After(start) {
			t.Errorf("alice's client reconnected after the disconnect")
		}
	}
	if code, body := api("GET", "/api/users/alice/rooms"); code != 404 {
		t.Errorf("rooms of alice after the disconnect: %d %v, want 404", code, body)
	}
	// Idempotent: nobody left to close.
	if code, body := api("POST", "/api/users/alice/disconnect"); code != 200 || body["closed_here"] != 0.0 {
		t.Errorf("second disconnect: %d %v", code, body)
	}
}

// TestAdminDisconnectReconnectCode: with ?code=4000 the client comes back
// (the code invites a reconnect) and, as with any such close, its
// memberships keep their leave grace: nobody sees it leave.
func TestAdminDisconnectReconnectCode(t *testing.T) {
	cfg := sdkInsecure()
	cfg.Presence.LeaveGrace = time.Minute
	n, api := adminNode(t, cfg)
	url := sdkURL(n.Addr())
	alice, arec := sdkDial(t, client.Config{URL: url, User: "alice", MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	bob, brec := sdkDial(t, client.Config{URL: url, User: "bob"})
	sdkJoin(t, alice, "room1", nil)
	sdkJoin(t, bob, "room1", nil)
	eventually(t, sdkWait, func() error {
		return sdkMembers(bob, "room1", map[string]string{"alice": "online", "bob": "online"})
	})
	start := time.Now()
	if code, body := api("POST", "/api/users/alice/disconnect?code=4000"); code != 200 || body["closed_here"] != 1.0 || body["reconnect"] != true {
		t.Fatalf("disconnect: %d %v", code, body)
	}
	ev := arec.wait(t, "disconnect", func(ev client.Event) bool { return ev.Kind == client.EventDisconnected })
	if ev.Close != 4000 || ev.Terminal {
		t.Errorf("alice's client: close %d, terminal %v; want 4000, not terminal", ev.Close, ev.Terminal)
	}
	arec.wait(t, "reconnect", func(ev client.Event) bool { return ev.Kind == client.EventConnected && ev.Node != "" && ev.Resumed })
	eventually(t, sdkWait, func() error {
		return sdkMembers(alice, "room1", map[string]string{"alice": "online", "bob": "online"})
	})
	time.Sleep(3 * sdkTick)
	for _, ev := range brec.all() {
		if ev.Kind == client.EventChanged && ev.at.After(start) && slices.Contains(ev.Diff.Leave, "alice") {
			t.Errorf("bob saw alice leave: the grace was not kept")
		}
	}
}
