package presence

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkRejoinStorm: n members of one room lose their connections at
// once (each starts a leave grace) and reconnect within it, as after a
// load balancer restart; each rejoin ends a grace. Before T2b each ended
// grace searched the graced list (O(n²) per storm); now it is O(1), so
// ns/rejoin stays flat as n grows. Typing is measured the same way: n
// members start typing, then stop in the order they started.
func BenchmarkRejoinStorm(b *testing.B) {
	for _, n := range []int{5_000, 50_000} {
		b.Run(fmt.Sprintf("rejoin/n=%d", n), func(b *testing.B) {
			h, _, sessions := stormRoom(b, n)
			for b.Loop() {
				b.StopTimer()
				for _, s := range sessions {
					s.HandleClose(endLost) // lost: grace
				}
				b.StartTimer()
				for i := range sessions {
					s := h.Open(&nopSink{})
					s.HandleText(fmt.Appendf(nil, `{"t":"hello","v":1,"user":"u%d"}`, i))
					s.HandleText([]byte(`{"t":"join","id":1,"room":"r"}`))
					sessions[i] = s
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/rejoin")
		})
		b.Run(fmt.Sprintf("typing/n=%d", n), func(b *testing.B) {
			_, r, _ := stormRoom(b, n)
			members := make([]*member, 0, n)
			for m := range r.members.all() {
				members = append(members, m)
			}
			for b.Loop() {
				r.mu.Lock()
				for _, m := range members {
					r.typingLocked(m, true, 1)
				}
				for _, m := range members {
					r.typingLocked(m, false, 2)
				}
				r.compactTypingLocked()
				r.mu.Unlock()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/member")
		})
	}
}

// stormRoom is a hub that is not running (nothing flushes) with n users
// in room "r", each on its own connection.
func stormRoom(tb testing.TB, n int) (*Hub, *room, []*Session) {
	tb.Helper()
	h, err := New(Config{Insecure: true, Node: "n1", Rate: 1e9, Burst: 1 << 30, LeaveGrace: time.Hour, ListLimit: 10})
	if err != nil {
		tb.Fatal(err)
	}
	sessions := make([]*Session, n)
	for i := range n {
		s := h.Open(&nopSink{})
		s.HandleText(fmt.Appendf(nil, `{"t":"hello","v":1,"user":"u%d"}`, i))
		s.HandleText([]byte(`{"t":"join","id":1,"room":"r"}`))
		sessions[i] = s
	}
	return h, h.lookupRoom("r"), sessions
}

// TestGraceAndTypingIndexes drives one room through random joins, losses,
// rejoins, leaves, typing and expiries, checking after every step that the
// O(1) bookkeeping agrees with a plain model: each graced member knows its
// place in r.graced, each typing member its entry in r.typing, and the
// published typing list is the first maxTyping users in the order they
// started typing.
func TestGraceAndTypingIndexes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	h, err := New(Config{Insecure: true, Node: "n1", Rate: 1e9, Burst: 1 << 30, LeaveGrace: 50 * time.Millisecond, TypingTTL: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const users = 40
	conns := map[int][]*Session{}
	var order []string // the model: typing users in the order they started
	now := int64(0)
	open := func(u int) {
		s := h.Open(&nopSink{})
		s.HandleText(fmt.Appendf(nil, `{"t":"hello","v":1,"user":"u%d"}`, u))
		s.HandleText([]byte(`{"t":"join","id":1,"room":"r"}`))
		conns[u] = append(conns[u], s)
	}
	for u := range users {
		open(u)
	}
	r := h.lookupRoom("r")
	for step := range 20_000 {
		u := rng.IntN(users)
		name := fmt.Sprintf("u%d", u)
		now += int64(rng.IntN(3)) * int64(time.Millisecond)
		r.mu.Lock()
		m := r.members.get(name)
		switch op := rng.IntN(6); {
		case op == 0 && len(conns[u]) < 3:
			r.mu.Unlock()
			open(u)
			r.mu.Lock()
		case op == 1 && len(conns[u]) > 0:
			s := conns[u][0]
			conns[u] = conns[u][1:]
			r.mu.Unlock()
			s.HandleClose(endOf(rng.IntN(2) == 0))
			r.mu.Lock()
		case op == 2 && m != nil:
			r.typingLocked(m, true, now)
		case op == 3 && m != nil:
			r.typingLocked(m, false, now)
		case op == 4:
			r.expireLocked(now)
		}
		// The model follows the room: who types, in which order.
		var typing []string
		for _, e := range r.typing {
			if e.m != nil {
				typing = append(typing, e.m.user)
			}
		}
		order = slices.DeleteFunc(order, func(n string) bool { return !slices.Contains(typing, n) })
		for _, n := range typing {
			if !slices.Contains(order, n) {
				order = append(order, n)
			}
		}
		if !slices.Equal(typing, order) {
			t.Fatalf("step %d: typing order %v, want %v", step, typing, order)
		}
		holes := 0
		for i, e := range r.typing {
			if e.m == nil {
				holes++
			} else if int(e.m.typingAt) != i {
				t.Fatalf("step %d: %s's typingAt = %d, at %d", step, e.m.user, e.m.typingAt, i)
			}
		}
		if holes != r.typingHoles {
			t.Fatalf("step %d: %d holes, typingHoles = %d", step, holes, r.typingHoles)
		}
		for i, g := range r.graced {
			if int(g.gracedAt) != i || g.graceUntil == 0 || g.conns != 0 {
				t.Fatalf("step %d: graced[%d] = %s gracedAt %d graceUntil %d conns %d", step, i, g.user, g.gracedAt, g.graceUntil, g.conns)
			}
		}
		for mm := range r.members.all() {
			if mm.gracedAt >= 0 && r.graced[mm.gracedAt] != mm {
				t.Fatalf("step %d: %s claims graced[%d]", step, mm.user, mm.gracedAt)
			}
			if mm.typingOn() && r.typing[mm.typingAt].m != mm {
				t.Fatalf("step %d: %s claims typing[%d]", step, mm.user, mm.typingAt)
			}
		}
		want := order[:min(len(order), maxTyping)]
		if got := r.typingListLocked(); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("step %d: typing list %v, want %v", step, got, want)
		}
		r.mu.Unlock()
	}
}
