package presence

import (
	"fmt"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// TestDisconnectByUserIndex: Disconnect closes exactly the named user's
// sessions (several users, several sessions each, one without hello), and
// the index forgets sessions as they close.
func TestDisconnectByUserIndex(t *testing.T) {
	h, err := New(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	type conn struct {
		s    *Session
		sink *fakeSink
		user string
	}
	var conns []conn
	for i := range 12 {
		user := fmt.Sprintf("u%d", i%4) // u0..u3, three sessions each
		sink := &fakeSink{}
		s := h.Open(sink)
		s.HandleText([]byte(`{"t":"hello","v":1,"user":"` + user + `"}`))
		conns = append(conns, conn{s, sink, user})
	}
	silent := &fakeSink{}
	h.Open(silent) // no hello: no user

	if n, _, _ := h.Disconnect("nobody", wire.CloseForbidden); n != 0 {
		t.Errorf("Disconnect(nobody) = %d, want 0", n)
	}
	// One of u1's sessions ends first: the index drops it.
	conns[1].s.HandleClose(endOf(true))
	if n, _, _ := h.Disconnect("u1", wire.CloseForbidden); n != 2 {
		t.Errorf("Disconnect(u1) = %d, want 2 (one of three had ended)", n)
	}
	for i, c := range conns {
		got := c.sink.closeCodes()
		if c.user == "u1" && i != 1 {
			if len(got) != 1 || got[0] != wire.CloseForbidden {
				t.Errorf("session %d (u1): closes %v, want [4103]", i, got)
			}
		} else if i != 1 && c.user != "u2" && len(got) != 0 {
			t.Errorf("session %d (%s): closes %v, want none", i, c.user, got)
		}
	}
	if got := silent.closeCodes(); len(got) != 0 {
		t.Errorf("session without hello: closes %v, want none", got)
	}
	// A connection the client is already closing (its sink's close was
	// started elsewhere) is not counted.
	conns[2].sink.Close(wire.CloseNormal, "client")
	if n, _, _ := h.Disconnect("u2", wire.CloseForbidden); n != 2 {
		t.Errorf("Disconnect(u2) = %d, want 2 (one of three already closing)", n)
	}
	// A second Disconnect finds nothing more to close (already claimed).
	if n, _, _ := h.Disconnect("u1", wire.CloseForbidden); n != 0 {
		t.Errorf("second Disconnect(u1) = %d, want 0", n)
	}
	// Every session ends: the index is empty.
	for _, c := range conns {
		c.s.HandleClose(endOf(true))
	}
	for i := range h.users {
		if n := len(h.users[i].users); n != 0 {
			t.Errorf("user shard %d keeps %d users after every session ended", i, n)
		}
	}
}

// TestDisconnectCostsTheUsersSessions: Disconnect does not walk the other
// sessions (it used to, under the session-shard locks the event loops
// take): a lookup allocates only the copy of the user's sessions, however
// many other sessions the hub holds.
func TestDisconnectCostsTheUsersSessions(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without -race")
	}
	h, err := New(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		s := h.Open(&nopSink{})
		s.HandleText([]byte(fmt.Sprintf(`{"t":"hello","v":1,"user":"u%d"}`, i)))
	}
	if n := testing.AllocsPerRun(100, func() { h.Disconnect("nobody", wire.CloseForbidden) }); n != 0 {
		t.Errorf("Disconnect of an unknown user: %v allocations, want 0", n)
	}
	for i := range h.sessions { // the session shards are not touched: hold them all
		h.sessions[i].mu.Lock()
	}
	n, _, _ := h.Disconnect("u7", wire.CloseForbidden)
	for i := range h.sessions {
		h.sessions[i].mu.Unlock()
	}
	if n != 1 {
		t.Errorf("Disconnect(u7) = %d, want 1", n)
	}
}

// TestRoomCount: the count of a room's members, without copying them.
func TestRoomCount(t *testing.T) {
	h, err := New(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range []string{"a", "b", "c"} {
		s := h.Open(&fakeSink{})
		s.HandleText([]byte(`{"t":"hello","v":1,"user":"` + u + `"}`))
		s.HandleText([]byte(fmt.Sprintf(`{"t":"join","id":%d,"room":"r1"}`, i+1)))
	}
	if n := h.RoomCount("r1"); n != 3 || n != len(h.RoomMembers("r1")) {
		t.Errorf("RoomCount(r1) = %d, want 3 (= len(RoomMembers))", n)
	}
	if n := h.RoomCount("nowhere"); n != 0 {
		t.Errorf("RoomCount(nowhere) = %d, want 0", n)
	}
	if n := testing.AllocsPerRun(50, func() { h.RoomCount("r1") }); n != 0 && !raceEnabled {
		t.Errorf("RoomCount: %v allocations, want 0", n)
	}
}

// TestDisconnectTakesOverTheDrain: a Disconnect that finds the user's
// connection in the drain's close (bye and 1001 sent) makes it end as the
// operator's close: counted as draining, CloseAdmin, and with 4103 its
// membership ends at once instead of staying for LeaveGrace. With a code
// inviting a reconnect the grace stays. However the closing handshake ends
// (the client's answer, a timeout on 1001, a lost connection).
func TestDisconnectTakesOverTheDrain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		code  wire.CloseCode
		end   ConnEnd
		grace bool
	}{
		{"4103, the client answers", wire.CloseForbidden, ConnEnd{EndClosed, wire.CloseGoingAway}, false},
		{"4103, the handshake times out", wire.CloseForbidden, ConnEnd{EndTimeout, wire.CloseGoingAway}, false},
		{"4103, the connection is lost", wire.CloseForbidden, ConnEnd{}, false},
		{"4000 keeps the grace", wire.CloseCode(4000), ConnEnd{EndClosed, wire.CloseGoingAway}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(Config{Insecure: true, LeaveGrace: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			var ss []*Session
			for i, u := range []string{"alice", "bob"} {
				s := h.Open(&fakeSink{})
				s.HandleText([]byte(`{"t":"hello","v":1,"user":"` + u + `"}`))
				s.HandleText([]byte(fmt.Sprintf(`{"t":"join","id":%d,"room":"r"}`, i+1)))
				ss = append(ss, s)
			}
			h.Drain(time.Second)
			if c, d, _ := h.Disconnect("alice", tc.code); c != 0 || d != 1 {
				t.Fatalf("Disconnect(alice) during the drain = (%d closed, %d draining), want (0, 1)", c, d)
			}
			if c, d, _ := h.Disconnect("alice", tc.code); c != 0 || d != 0 {
				t.Errorf("second Disconnect(alice) = (%d, %d), want (0, 0)", c, d)
			}
			if got := ss[0].HandleClose(tc.end); got != CloseAdmin {
				t.Errorf("HandleClose = %v, want admin", got)
			}
			want := 1 // bob; alice left at once
			if tc.grace {
				want = 2 // alice stays for LeaveGrace
			}
			if n := h.RoomCount("r"); n != want {
				t.Errorf("room r has %d members after alice's close, want %d", n, want)
			}
			// The connection has ended: nothing more to take over.
			if c, d, _ := h.Disconnect("alice", tc.code); c != 0 || d != 0 {
				t.Errorf("Disconnect(alice) after the end = (%d, %d), want (0, 0)", c, d)
			}
		})
	}
}

// TestTakeDrainRacesTheEnd: takeDrain and HandleClose race; either the
// close is the operator's or the session had ended and takeDrain fails.
func TestTakeDrainRacesTheEnd(t *testing.T) {
	for range 200 {
		h, err := New(Config{Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		s := h.Open(&fakeSink{})
		s.HandleText([]byte(`{"t":"hello","v":1,"user":"alice"}`))
		h.drainWindow.Store(int64(time.Second))
		s.bye()
		took := make(chan bool)
		go func() { took <- s.takeDrain(wire.CloseForbidden) }()
		reason := s.HandleClose(ConnEnd{EndClosed, wire.CloseGoingAway})
		if ok := <-took; ok != (reason == CloseAdmin) {
			t.Fatalf("takeDrain = %v, but the close was %v", ok, reason)
		}
	}
}
