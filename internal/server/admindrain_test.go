package server_test

import (
	"testing"

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
