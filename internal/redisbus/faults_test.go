package redisbus

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/presence"
)

func TestPubSubKill(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.Client(t)
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), nil)
	rooms := []string{"k1", "k2", "k3"}
	for _, r := range rooms {
		b.watch(t, r)
	}
	if got := value(t, b.b.m.reconnects); got != 0 {
		t.Fatalf("subscriber reconnects %v before any kill", got)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			a.set(rooms[i%3], "u"+strconv.Itoa(i%40), "s"+strconv.Itoa(i), i%5 != 0)
		}
	}()
	for range 3 {
		time.Sleep(200 * time.Millisecond)
		if err := c.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	for _, r := range rooms {
		converged(t, b, a, r, 5*time.Second)
	}
	if got := value(t, b.b.m.resyncs.WithLabelValues(ResyncReconnect)); got < 3 {
		t.Fatalf("reconnect resyncs %v, want >= 3 (3 rooms)", got)
	}
	// One per kill that found the subscriber connected, not one per room.
	if got := value(t, b.b.m.reconnects); got < 1 || got > 3 {
		t.Fatalf("subscriber reconnects %v, want 1-3 (3 kills)", got)
	}
}

func TestPublishQueueOverflow(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startBus(t, "a", standalone(s), func(b *Bus) {
		b.maxQueued = 2
		// Queued before the first registration: 2 fit, 8 are dropped.
		for i := range 10 {
			b.Publish("o"+strconv.Itoa(i), []presence.Holding{{User: "u", Held: true}}, false)
		}
	})
	if got := value(t, a.b.m.drops); got != 8 {
		t.Fatalf("drops %v, want 8", got)
	}
	// Once writes succeed, each dropped room is republished in full.
	isRepublish := func(c call) bool { return c.op == "republish" && c.room != "" }
	eventually(t, 5*time.Second, "republished", func() bool { return a.h.count(isRepublish) == 8 })
	time.Sleep(50 * time.Millisecond)
	if n := a.h.count(isRepublish); n != 8 {
		t.Fatalf("%d Republish calls, want 8", n)
	}
}

func TestReceiveQueueOverflow(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), func(b *Bus) { b.recvQueue = 1 })
	var rooms []string
	for i := range 20 {
		r := "q" + strconv.Itoa(i)
		rooms = append(rooms, r)
		b.b.Watch(r)
	}
	for _, r := range rooms {
		eventually(t, 5*time.Second, "loaded", func() bool { return b.h.count(isLoaded(r)) == 1 })
	}
	for i := range 3000 {
		a.set(rooms[i%20], "u"+strconv.Itoa(i%30), "s"+strconv.Itoa(i), i%4 != 0)
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	for _, r := range rooms {
		converged(t, b, a, r, 10*time.Second)
	}
	if value(t, b.b.m.drops) == 0 || value(t, b.b.m.resyncs.WithLabelValues(ResyncOverflow)) == 0 {
		t.Fatalf("drops %v, overflow resyncs %v: want both > 0", value(t, b.b.m.drops), value(t, b.b.m.resyncs.WithLabelValues(ResyncOverflow)))
	}
}

func TestUnwatch(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.Client(t)
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), nil)
	const room = "uw"
	b.watch(t, room)
	a.set(room, "u1", "online", true)
	converged(t, b, a, room, 5*time.Second)
	b.b.Unwatch(room)
	ch := a.b.k.channel(room)
	eventually(t, 5*time.Second, "unsubscribed", func() bool {
		n, _ := c.PubSubNumSub(context.Background(), ch).Result()
		return n[ch] == 0
	})
	before := len(b.h.roomCalls(room))
	a.set(room, "u2", "online", true)
	eventually(t, 5*time.Second, "written", func() bool { return value(t, a.b.m.published) >= 2 })
	time.Sleep(100 * time.Millisecond)
	if n := len(b.h.roomCalls(room)); n != before {
		t.Fatalf("%d calls for an unwatched room", n-before)
	}
	// Watched again: loads afresh.
	b.b.Watch(room)
	converged(t, b, a, room, 5*time.Second)
	if n := b.h.count(isLoaded(room)); n != 2 {
		t.Fatalf("Loaded %d times over two watches", n)
	}
}

// roomKeysOf reports which of id's room keys exist.
func roomKeysOf(t *testing.T, c *redis.Client, k keys, id string, rooms []string) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	for _, r := range rooms {
		if n, _ := c.Exists(ctx, k.members(r, id)).Result(); n > 0 {
			left = append(left, k.members(r, id))
		}
		if ok, _ := c.HExists(ctx, k.seqs(r), id).Result(); ok {
			left = append(left, k.seqs(r)+" "+id)
		}
	}
	if n, _ := c.Exists(ctx, k.rooms(id)).Result(); n > 0 {
		left = append(left, k.rooms(id))
	}
	return left
}

func TestReaper(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	const ttl = 900 * time.Millisecond
	opts := standalone(s)
	a := startBusWith(t, Config{Redis: opts, Node: "a", NodeTTL: ttl}, nil)
	b := startBusWith(t, Config{Redis: opts, Node: "b", NodeTTL: ttl}, nil)
	w := startBusWith(t, Config{Redis: opts, Node: "w", NodeTTL: ttl}, nil)
	rooms := []string{"r1", "r2", "r3"}
	w.watch(t, "r1")
	for _, r := range rooms {
		a.set(r, "u1", "online", true)
	}
	converged(t, w, a, "r1", 5*time.Second)
	dead := a.b.ID()
	if left := roomKeysOf(t, c, a.b.k, dead, rooms); len(left) != 7 {
		t.Fatalf("before: %v", left)
	}
	a.stop() // crashed: no Leave

	isDown := func(c call) bool { return c.op == "down" && c.node == dead }
	eventually(t, 5*time.Second, "NodeDown on both", func() bool { return b.h.count(isDown) == 1 && w.h.count(isDown) == 1 })
	eventually(t, 5*time.Second, "reaped", func() bool { return len(roomKeysOf(t, c, a.b.k, dead, rooms)) == 0 })
	if n, _ := c.Exists(context.Background(), a.b.k.reapLock(dead)).Result(); n != 1 {
		t.Fatal("no reap lock")
	}
	// Later messages of the dead id are ignored.
	publishRaw(t, c, a.b.k, message{kind: kindFull, sender: dead, room: "r1", seq: 99, hs: []presence.Holding{{User: "zombie", Held: true}}})
	time.Sleep(100 * time.Millisecond)
	if _, ok := w.h.part("r1", dead)["zombie"]; ok {
		t.Fatal("a dead id's message was applied")
	}
	if n := w.h.count(isDown); n != 1 {
		t.Fatalf("w: NodeDown %d times", n)
	}
}

func TestLeave(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.Client(t)
	a := startBus(t, "a", standalone(s), nil)
	w := startBus(t, "w", standalone(s), nil)
	w.watch(t, "l")
	id := a.b.ID()
	a.set("l", "u1", "online", true)
	// Queued, not yet written: Leave writes it first.
	if err := a.b.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.stop() // Run has returned
	if left := roomKeysOf(t, c, a.b.k, id, []string{"l"}); len(left) != 0 {
		t.Fatalf("keys left after Leave: %v", left)
	}
	eventually(t, 5*time.Second, "down", func() bool {
		return w.h.count(func(c call) bool { return c.op == "down" && c.node == id }) == 1
	})
	if value(t, a.b.m.published) != 1 {
		t.Fatal("the queued change was not written before Leave")
	}
}

func TestProbeRecreates(t *testing.T) {
	s := redistest.Start(t)
	p := startProxy(t, s.Addr())
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", ClientOptions{Addrs: []string{p.addr()}}, func(b *Bus) {
		b.probeQuiet, b.probeWait = 150*time.Millisecond, 150*time.Millisecond
	})
	const room = "p"
	b.watch(t, room)
	a.set(room, "u1", "online", true)
	converged(t, b, a, room, 5*time.Second)
	// Quiet but healthy: probes come back, nothing is recreated.
	time.Sleep(600 * time.Millisecond)
	if got := value(t, b.b.m.resyncs.WithLabelValues(ResyncProbe)); got != 0 {
		t.Fatalf("probe resyncs %v on a healthy subscription", got)
	}
	// b's connections go silent (not closed): what a publishes meanwhile
	// never reaches b's old subscription; the probe does not come back,
	// the PubSub is recreated and the room resynced.
	p.blackhole()
	a.set(room, "u2", "online", true)
	eventually(t, 10*time.Second, "probe resync", func() bool { return value(t, b.b.m.resyncs.WithLabelValues(ResyncProbe)) >= 1 })
	converged(t, b, a, room, 5*time.Second)
}

func TestRedisRestartEmpty(t *testing.T) {
	s := redistest.Start(t)
	const ttl = 900 * time.Millisecond
	a := startBusWith(t, Config{Redis: standalone(s), Node: "a", NodeTTL: ttl}, nil)
	b := startBusWith(t, Config{Redis: standalone(s), Node: "b", NodeTTL: ttl}, nil)
	const room = "restart"
	b.watch(t, room)
	a.set(room, "u1", "online", true)
	converged(t, b, a, room, 5*time.Second)
	old := a.b.ID()
	if got := value(t, a.b.m.resets); got != 0 {
		t.Fatalf("redis resets %v before the restart", got)
	}
	s.Restart() // empty: scripts, keys and subscriptions are gone
	eventually(t, 10*time.Second, "a re-registered", func() bool { return a.b.ID() != old })
	if got := value(t, a.b.m.resets); got != 1 {
		t.Fatalf("redis resets %v after one empty restart, want 1", got)
	}
	a.set(room, "u2", "online", true)
	// a republished everything under its new id (Hub.Republish), b resubscribed.
	converged(t, b, a, room, 10*time.Second)
	eventually(t, 10*time.Second, "old incarnation down", func() bool {
		return b.h.count(func(c call) bool { return c.op == "down" && c.node == old }) == 1
	})
}

// A node that leaves a room removes its part from Redis; when that write
// fails, it is retried (the room is republished empty), and a delta that
// finds its part gone (Redis lost it) is refused and followed by a full
// write.
func TestLeaveRoomAndStaleDelta(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.Client(t)
	a := startBus(t, "a", standalone(s), nil)
	a.h.mu.Lock()
	a.h.onRepublish = func(room string) { // as presence.Hub does for a dropped room
		a.b.Publish(room, nil, true)
	}
	a.h.mu.Unlock()
	ctx := context.Background()
	k := a.b.k
	partExists := func(room string) bool {
		n, err := c.Exists(ctx, k.members(room, a.b.ID())).Result()
		return err == nil && n == 1
	}
	a.set("r", "alice", "online", true)
	eventually(t, 5*time.Second, "alice written", func() bool { return partExists("r") })

	// The empty write fails (Redis refuses writes longer than the data
	// client waits), then is retried.
	if err := c.Do(ctx, "CLIENT", "PAUSE", "6000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	a.b.Publish("r", nil, true)
	eventually(t, 15*time.Second, "the part removed after the pause", func() bool {
		seq, err := c.HExists(ctx, k.seqs("r"), a.b.ID()).Result()
		return err == nil && !seq && !partExists("r")
	})

	// Redis loses the part of room s: the next delta is refused (not
	// published), and the room is written in full.
	a.set("s", "bob", "online", true)
	eventually(t, 5*time.Second, "bob written", func() bool { return partExists("s") })
	if err := c.Del(ctx, k.members("s", a.b.ID()), k.seqs("s")).Err(); err != nil {
		t.Fatal(err)
	}
	isRepublish := func(call call) bool { return call.op == "republish" && call.room == "s" }
	a.h.mu.Lock()
	a.h.onRepublish = func(room string) {
		a.b.Publish(room, []presence.Holding{a.truthOf(room)["bob"], a.truthOf(room)["carol"]}, true)
	}
	a.h.mu.Unlock()
	a.set("s", "carol", "online", true)
	eventually(t, 5*time.Second, "republish of s", func() bool { return a.h.count(isRepublish) >= 1 })
	eventually(t, 5*time.Second, "s written in full", func() bool {
		n, err := c.HLen(ctx, k.members("s", a.b.ID())).Result()
		return err == nil && n == 2
	})
}

// A sender whose part of a room is gone from Redis (its empty write's
// message lost) is dropped by a resync: no ghost stays. A Redis that lost
// its data is not taken for that (TestRedisRestartEmpty).
func TestResyncDropsSenderThatLeft(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := context.Background()
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), nil)
	b.watch(t, "r")
	a.set("r", "alice", "online", true)
	converged(t, b, a, "r", 5*time.Second)
	// a left the room, and its message was lost.
	if err := c.Del(ctx, a.b.k.members("r", a.b.ID())).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HDel(ctx, a.b.k.seqs("r"), a.b.ID()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a's part dropped by the reconnect's resync", func() bool {
		return len(b.h.part("r", a.b.ID())) == 0
	})
}
