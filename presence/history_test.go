package presence

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// historyOf returns the length and capacity of room name's history, and
// whether the room is on its shard's aged list.
func historyOf(t *testing.T, h *Hub, name string) (n, c int, listed bool) {
	t.Helper()
	r := h.lookupRoom(name)
	if r == nil {
		t.Fatalf("room %q is gone", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shard.mu.Lock()
	defer r.shard.mu.Unlock()
	if i := r.agedAt; i >= 0 && r.shard.aged[i] != r {
		t.Fatalf("room %q: aged[%d] is another room", name, i)
	}
	return len(r.history), cap(r.history), r.agedAt >= 0
}

// agedRooms counts the rooms on the shards' aged lists.
func agedRooms(h *Hub) int {
	n := 0
	for i := range h.rooms {
		sh := &h.rooms[i]
		sh.mu.Lock()
		n += len(sh.aged)
		sh.mu.Unlock()
	}
	return n
}

// TestIdleHistoryExpires: an idle room's history is dropped, and its
// backing array released, once HistoryAge has passed, without any change
// in the room; rooms with a fresh version keep it. Enough rooms that some
// shards take several sweep batches.
func TestIdleHistoryExpires(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rooms int
	}{
		{"one room", 1},
		{"several batches per shard", 64 * sweepBatch * 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := startHub(t, Config{Insecure: true, HistoryAge: 8 * time.Second, MaxRooms: tc.rooms + 1,
					Rate: 1e6, Burst: tc.rooms + 10})
				alice := dial(t, e.h, "alice")
				for i := range tc.rooms {
					alice.send(`{"t":"join","id":%d,"room":"r%d"}`, i+1, i)
				}
				e.tick()
				alice.events()
				if n, _, listed := historyOf(t, e.h, "r0"); n != 1 || !listed {
					t.Fatalf("after the joins: %d versions, listed %v; want 1, listed", n, listed)
				}
				if got := agedRooms(e.h); got != tc.rooms {
					t.Fatalf("aged rooms = %d, want %d", got, tc.rooms)
				}
				// Not yet: the versions are younger than HistoryAge.
				e.sleep(e.h.cfg.HistoryAge - time.Second)
				if n, _, _ := historyOf(t, e.h, "r0"); n != 1 {
					t.Fatalf("before HistoryAge: %d versions, want 1", n)
				}
				// A fresh version in the last room keeps it listed.
				last := fmt.Sprintf("r%d", tc.rooms-1)
				if tc.rooms > 1 {
					alice.send(`{"t":"set","id":%d,"room":%q,"state":{"status":"away"}}`, tc.rooms+1, last)
					e.tick()
				}
				e.sleep(time.Second + sweepEvery(&e.h.cfg))
				for i := range tc.rooms - 1 {
					if n, c, listed := historyOf(t, e.h, fmt.Sprintf("r%d", i)); n != 0 || c != 0 || listed {
						t.Fatalf("r%d after HistoryAge: %d versions, cap %d, listed %v; want none, cap 0, not listed", i, n, c, listed)
					}
				}
				if tc.rooms > 1 {
					if n, _, listed := historyOf(t, e.h, last); n != 1 || !listed {
						t.Errorf("%s: %d versions, listed %v; want its fresh one, listed", last, n, listed)
					}
					e.sleep(e.h.cfg.HistoryAge + sweepEvery(&e.h.cfg))
				}
				if got := agedRooms(e.h); got != 0 {
					t.Errorf("aged rooms at the end = %d, want 0", got)
				}
				// Resume still works from the current cursor: a new change
				// records a version again, and lists the room again.
				alice.send(`{"t":"set","id":%d,"room":"r0","state":{"status":"busy"}}`, tc.rooms+2)
				e.tick()
				if n, _, listed := historyOf(t, e.h, "r0"); n != 1 || !listed {
					t.Errorf("after a new change: %d versions, listed %v; want 1, listed", n, listed)
				}
			})
		})
	}
}

// TestDroppedRoomLeavesAgedList: a room dropped with history is taken off
// its shard's aged list.
func TestDroppedRoomLeavesAgedList(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true})
		alice := dial(t, e.h, "alice")
		alice.join("r", 1, "")
		e.tick()
		if got := agedRooms(e.h); got != 1 {
			t.Fatalf("aged rooms = %d, want 1", got)
		}
		alice.send(`{"t":"leave","id":2,"room":"r"}`)
		e.ticks(2)
		if e.h.lookupRoom("r") != nil {
			t.Fatal("room r not dropped")
		}
		if got := agedRooms(e.h); got != 0 {
			t.Errorf("aged rooms after the drop = %d, want 0", got)
		}
	})
}

// TestTrimHistoryShrinks: dropping most of a large history gives back
// the large array.
func TestTrimHistoryShrinks(t *testing.T) {
	h, err := New(Config{Insecure: true, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRoom(h, &h.rooms[0], "r")
	for i := range 200 {
		r.history = append(r.history, version{seq: uint64(i + 1), at: int64(i)})
	}
	age := int64(h.cfg.HistoryAge)
	r.trimHistoryLocked(195+age, h.cfg.History) // keeps the versions at 195..199
	if len(r.history) != 5 || r.history[0].seq != 196 || cap(r.history) > 16 {
		t.Errorf("after the trim: %d versions from seq %d, cap %d; want 5 from 196, cap ≤ 16", len(r.history), r.history[0].seq, cap(r.history))
	}
}
