package server_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// TestAdminDisconnectDuringDrain: a disconnect that finds the user's
// connection in the drain's closing handshake (bye and 1001 sent, the
// client has not answered) takes it over: the answer counts it in
// closed_here and draining_here, and the connection ends as an operator's
// close (reason="admin", its memberships without leave grace: presence's
// TestDisconnectTakesOverTheDrain). The client has seen 1001, not 4103: a
// connection has one close frame.
func TestAdminDisconnectDuringDrain(t *testing.T) {
	cfg := sdkInsecure()
	cfg.AdminToken = []byte("tok")
	n, stop := startServerStop(t, cfg)
	alice := login(t, n, "alice")
	alice.send(map[string]any{"t": "join", "id": 1, "room": "room1"})
	alice.expect("ack")

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }() // the drain
	alice.expectMsg("bye")            // and 1001 queued; alice does not answer yet
	code, body := apiCall(t, "POST", "http://"+n.AdminAddr().String()+"/api/users/alice/disconnect", "tok")
	if code != 200 || body["closed_here"] != 1.0 || body["draining_here"] != 1.0 {
		t.Errorf("disconnect during the drain: %d %v, want 200, closed_here 1, draining_here 1", code, body)
	}
	if c := alice.closeCode(); c != wire.CloseGoingAway {
		t.Errorf("alice's close code %d, want 1001 (sent with bye, before the disconnect)", c)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if v := metric(t, n.reg, "presenced_connections_closed_total", "reason", "admin"); v != 1 {
		t.Errorf("closed{reason=admin} %v, want 1 (the drain's close taken over)", v)
	}
	if v := metric(t, n.reg, "presenced_connections_closed_total", "reason", "drain"); v != 0 {
		t.Errorf("closed{reason=drain} %v, want 0", v)
	}
}

// TestAdminDisconnectEndsHeldMembership: a 41xx disconnect of a user whose
// connection was lost (its membership held for the leave grace) ends that
// membership: the answer counts it in held_ended_here, and the room's
// members no longer list the user within a few ticks, not after the grace
// (a minute).
func TestAdminDisconnectEndsHeldMembership(t *testing.T) {
	cfg := sdkInsecure()
	cfg.Presence.LeaveGrace = time.Minute
	n, api := adminNode(t, cfg)
	alice := login(t, n, "alice")
	alice.send(map[string]any{"t": "join", "id": 1, "room": "room1"})
	alice.expect("ack")
	bob := login(t, n, "bob")
	bob.send(map[string]any{"t": "join", "id": 1, "room": "room1"})
	bob.expect("ack")
	alice.drop()
	eventually(t, sdkWait, func() error { // the server saw the loss: alice is held
		if _, body := api("GET", "/api/nodes"); body["connections"] != 1.0 {
			return fmt.Errorf("nodes: %v, want 1 connection (bob's)", body)
		}
		return nil
	})
	if _, body := api("GET", "/api/rooms/room1/members"); !slices.Equal(strs(body["members"], "user"), []string{"alice", "bob"}) {
		t.Fatalf("members after alice's loss: %v, want alice (held) and bob", body)
	}
	code, body := api("POST", "/api/users/alice/disconnect")
	if code != 200 || body["closed_here"] != 0.0 || body["held_ended_here"] != 1.0 {
		t.Fatalf("disconnect: %d %v, want 200, closed_here 0, held_ended_here 1", code, body)
	}
	eventually(t, 10*sdkTick, func() error {
		if _, body := api("GET", "/api/rooms/room1/members"); !slices.Equal(strs(body["members"], "user"), []string{"bob"}) {
			return fmt.Errorf("members after the disconnect: %v, want bob only", body)
		}
		return nil
	})
	if code, body := api("GET", "/api/users/alice/rooms"); code != 404 {
		t.Errorf("rooms of alice after the disconnect: %d %v, want 404", code, body)
	}
}
