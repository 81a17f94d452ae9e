package redisbus

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/presence"
)

// eventLog records what a bus hands to Config.Events.
type eventLog struct {
	mu  sync.Mutex
	evs []string // guarded by mu: "room type user"
	ids []string // guarded by mu
}

func (l *eventLog) RoomEvents(room string, evs []presence.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range evs {
		l.evs = append(l.evs, strings.TrimSpace(room+" "+e.Type.String()+" "+e.User))
		l.ids = append(l.ids, e.ID)
	}
}

func (l *eventLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

// startEventBus runs a bus named name whose events go to a new log.
func startEventBus(t *testing.T, opts ClientOptions, name string) (*node, *eventLog) {
	log := &eventLog{}
	return startBusWith(t, Config{Redis: opts, Node: name, Events: log}, nil), log
}

// flushed waits until n's writer wrote everything queued.
func (n *node) flushed(t *testing.T) {
	t.Helper()
	eventually(t, 5*time.Second, "written", func() bool {
		req := make(chan struct{})
		n.b.flushReq <- req
		<-req
		n.b.q.mu.Lock()
		defer n.b.q.mu.Unlock()
		return len(n.b.q.rooms) == 0
	})
}

// TestEventsOncePerCluster: the membership transitions are decided by the
// write scripts in Redis: a user held by two nodes is added by the first
// hold and removed by the last release, whichever node makes them. In
// Redis Cluster too: the scripts touch only the room's slot.
func TestEventsOncePerCluster(t *testing.T) {
	t.Parallel()
	onStandaloneAndCluster(t, eventsOnce)
}

func eventsOnce(t *testing.T, opts ClientOptions) {
	a, la := startEventBus(t, opts, "a")
	b, lb := startEventBus(t, opts, "b")
	step := func(n *node, room, user string, held bool) {
		t.Helper()
		n.set(room, user, "online", held)
		n.flushed(t)
	}
	check := func(l *eventLog, want ...string) {
		t.Helper()
		if got := l.list(); !slices.Equal(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
	}
	step(a, "r", "u", true)
	check(la, "r room_occupied", "r member_added u")
	step(b, "r", "u", true) // a second holder: nothing
	step(a, "r", "u", false)
	check(la, "r room_occupied", "r member_added u")
	check(lb)
	step(b, "r", "u", false) // the last holder lets go
	check(lb, "r member_removed u", "r room_vacated")

	// A full write (a republish after an outage) is compared with the part
	// in Redis: x went, y came, the room never emptied.
	step(a, "r2", "x", true)
	a.b.Publish("r2", []presence.Holding{{User: "y", Held: true, Status: "online", Version: 99}}, true)
	a.flushed(t)
	check(la, "r room_occupied", "r member_added u", "r2 room_occupied", "r2 member_added x",
		"r2 member_added y", "r2 member_removed x")
	// Writing the same part again changes nothing.
	a.b.Publish("r2", []presence.Holding{{User: "y", Held: true, Status: "away", Version: 100}}, true)
	a.flushed(t)
	if n := len(la.list()); n != 6 {
		t.Fatalf("%d events after an unchanged republish, want 6", n)
	}
	// Ids are unique and grow per partition.
	la.mu.Lock()
	ids := slices.Clone(la.ids)
	la.mu.Unlock()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] || !strings.Contains(id, ".") {
			t.Fatalf("ids %v: %s twice or malformed", ids, id)
		}
		seen[id] = true
	}
	if want := fmt.Sprintf("%d.", partition("r2")); !strings.HasPrefix(ids[len(ids)-1], want) {
		t.Errorf("id %s of room r2, want the prefix %s", ids[len(ids)-1], want)
	}
}

// TestEventsAckedWhenIndexFails: a write whose script reply came back is
// acknowledged even when the index SADD of the same pipeline failed (the
// room is written again): its events are not returned a second time.
func TestEventsAckedWhenIndexFails(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	a, la := startEventBus(t, opts, "a")
	ctx := context.Background()
	eventually(t, 5*time.Second, "registered", func() bool { return a.b.ID() != "" })
	idx := a.b.k.rooms(a.b.ID())
	if err := a.b.data.Set(ctx, idx, "x", 0).Err(); err != nil { // wrong type: SADD fails
		t.Fatal(err)
	}
	a.set("r", "u", "online", true)
	want := []string{"r room_occupied", "r member_added u"}
	eventually(t, 5*time.Second, "events", func() bool { return len(la.list()) >= 2 })
	// The room is republished while the index fails (every second).
	rounds := a.b.q.rounds.Load()
	eventually(t, 10*time.Second, "republished twice", func() bool { return a.b.q.rounds.Load() >= rounds+2 })
	if err := a.b.data.Del(ctx, idx).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "indexed", func() bool {
		ok, err := a.b.data.SIsMember(ctx, idx, "r").Result()
		return err == nil && ok
	})
	a.flushed(t)
	if got := la.list(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestEventIDsAfterDataLoss: event ids are <partition>.<epoch>.<n>; after
// Redis lost the partition's counter they start in a new epoch: none
// repeats (review #4).
func TestEventIDsAfterDataLoss(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	a, la := startEventBus(t, opts, "a")
	a.set("r", "u", "online", true)
	a.flushed(t)
	ctx := context.Background()
	if err := a.b.data.Del(ctx, a.b.k.eventIDs("r"), a.b.k.membership("r")).Err(); err != nil {
		t.Fatal(err) // what a restart without persistence loses
	}
	time.Sleep(2 * time.Millisecond) // the next epoch is a later millisecond
	a.set("r", "v", "online", true)
	a.flushed(t)
	want := []string{"r room_occupied", "r member_added u", "r room_occupied", "r member_added v"}
	if got := la.list(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	la.mu.Lock()
	ids := slices.Clone(la.ids)
	la.mu.Unlock()
	seen := map[string]bool{}
	for _, id := range ids {
		f := strings.Split(id, ".")
		if seen[id] || len(f) != 3 || f[0] != fmt.Sprint(partition("r")) {
			t.Fatalf("ids %q: %s twice or not <partition>.<epoch>.<n>", ids, id)
		}
		seen[id] = true
	}
}

// TestEventIDsAfterRollback: a failover to a replica that lags (async
// replication) rolls whid back without losing it: the epoch stays, n goes
// back. The counter jumps forward to Redis TIME in µs, so no id issued
// before the rollback is issued again (review6-final-b #2).
func TestEventIDsAfterRollback(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	a, la := startEventBus(t, opts, "a")
	ctx := context.Background()
	a.set("r", "u", "online", true)
	a.flushed(t)
	snap, err := a.b.data.HGetAll(ctx, a.b.k.eventIDs("r")).Result()
	if err != nil {
		t.Fatal(err)
	}
	a.set("r", "v", "online", true)
	a.flushed(t)
	// The promoted replica has whid as of snap, and wh:r without v.
	if err := a.b.data.HSet(ctx, a.b.k.eventIDs("r"), "n", snap["n"]).Err(); err != nil {
		t.Fatal(err)
	}
	a.b.data.SRem(ctx, a.b.k.membership("r"), "v")
	a.set("r", "w", "online", true)
	a.flushed(t)
	la.mu.Lock()
	defer la.mu.Unlock()
	if len(la.ids) != 4 {
		t.Fatalf("events %q, want 4", la.evs)
	}
	seen := map[string]int{}
	last := int64(-1)
	for i, id := range la.ids {
		if j, ok := seen[id]; ok {
			t.Errorf("id %s twice: %q and %q", id, la.evs[j], la.evs[i])
		}
		seen[id] = i
		f := strings.Split(id, ".")
		n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if len(f) != 3 || err != nil || n <= last {
			t.Errorf("ids %q: %s not <partition>.<epoch>.<n> with n growing", la.ids, id)
		}
		last = n
	}
}
