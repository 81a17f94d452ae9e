package redisbus

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/presence"
)

// value is a counter's or gauge's value.
func value(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func histCount(t *testing.T, h interface{ Write(*dto.Metric) error }) uint64 {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// commandCalls is the calls count of cmd in INFO commandstats.
func commandCalls(t *testing.T, c *redis.Client, cmd string) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

func TestPublishReceive(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), nil)

	// A room A wrote before B watches it: B's load includes it, then Loaded.
	a.set("early", "u1", "online", true)
	a.set("early", "u2", "away", true)
	eventually(t, 5*time.Second, "published", func() bool { return value(t, a.b.m.published) >= 1 })
	b.watch(t, "early")
	cs := b.h.roomCalls("early")
	if len(cs) < 2 || cs[0].op != "apply" || !cs[0].full || cs[0].node != a.b.ID() || cs[0].n != 2 || cs[1].op != "loaded" {
		t.Fatalf("want Apply(full, 2 holdings by a) then Loaded, got %+v", cs)
	}
	converged(t, b, a, "early", time.Second)

	// Changes after the watch arrive as messages.
	a.set("early", "u3", "online", true)
	a.set("early", "u1", "", false)
	converged(t, b, a, "early", 5*time.Second)
	if got := histCount(t, b.b.m.propagation); got == 0 {
		t.Fatal("propagation histogram did not move")
	}
	if got := value(t, b.b.m.received); got == 0 {
		t.Fatal("received counter did not move")
	}
	// Nothing of B's own comes back to it; A never watched: no Apply there.
	if n := a.h.count(func(c call) bool { return c.op == "apply" }); n != 0 {
		t.Fatalf("a got %d Apply", n)
	}
}

// publishRaw publishes m on its room's channel as a node would.
func publishRaw(t *testing.T, c *redis.Client, k keys, m message) {
	t.Helper()
	if err := c.Publish(context.Background(), k.channel(m.room), appendMessage(nil, &m)).Err(); err != nil {
		t.Fatal(err)
	}
}

func seqOf(t *testing.T, c *redis.Client, k keys, room, id string) uint64 {
	t.Helper()
	v, err := c.HGet(context.Background(), k.seqs(room), id).Uint64()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSeqRules(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.Client(t)
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), nil)
	k := a.b.k
	const room = "seq"
	b.watch(t, room)
	a.set(room, "u1", "online", true)
	converged(t, b, a, room, 5*time.Second)
	ctx := context.Background()

	t.Run("duplicate dropped", func(t *testing.T) {
		seq := seqOf(t, c, k, room, a.b.ID())
		applies := b.h.count(func(c call) bool { return c.op == "apply" })
		recv := value(t, b.b.m.received)
		publishRaw(t, c, k, message{kind: kindDelta, sender: a.b.ID(), room: room, seq: seq,
			hs: []presence.Holding{{User: "dup", Held: true}}})
		eventually(t, 5*time.Second, "received", func() bool { return value(t, b.b.m.received) > recv })
		// The next real change passes: the duplicate was not applied before it.
		a.set(room, "u2", "online", true)
		converged(t, b, a, room, 5*time.Second)
		if n := b.h.count(func(c call) bool { return c.op == "apply" }); n != applies+1 {
			t.Fatalf("applies: %d, want %d", n, applies+1)
		}
	})

	t.Run("gap resyncs from redis", func(t *testing.T) {
		seq := seqOf(t, c, k, room, a.b.ID())
		// Redis has x and seq+2; the message seq+1 was "lost".
		v := appendValue(nil, &presence.Holding{User: "x", Held: true, Status: "from-redis", Version: 1}, time.Now())
		if err := c.HSet(ctx, k.members(room, a.b.ID()), "x", v).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.HSet(ctx, k.seqs(room), a.b.ID(), seq+2).Err(); err != nil {
			t.Fatal(err)
		}
		publishRaw(t, c, k, message{kind: kindDelta, sender: a.b.ID(), room: room, seq: seq + 2,
			hs: []presence.Holding{{User: "x", Held: true, Status: "from-message", Version: 1}}})
		eventually(t, 5*time.Second, "resynced", func() bool { return b.h.part(room, a.b.ID())["x"].Status == "from-redis" })
		if got := value(t, b.b.m.resyncs.WithLabelValues(ResyncGap)); got != 1 {
			t.Fatalf("gap resyncs %v, want 1", got)
		}
		cs := b.h.roomCalls(room)
		if last := cs[len(cs)-1]; last.op != "apply" || !last.full {
			t.Fatalf("last call %+v, want Apply(full)", last)
		}
	})

	t.Run("unknown epoch resyncs", func(t *testing.T) {
		// A node registered after b's last liveness round: b finds it in Redis.
		ghost := "ghost#0000000000000001"
		if err := c.HSet(ctx, k.reg(), ghost, "x").Err(); err != nil {
			t.Fatal(err)
		}
		v := appendValue(nil, &presence.Holding{User: "g", Held: true, Version: 1}, time.Now())
		if err := c.HSet(ctx, k.members(room, ghost), "g", v).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.HSet(ctx, k.seqs(room), ghost, 7).Err(); err != nil {
			t.Fatal(err)
		}
		publishRaw(t, c, k, message{kind: kindDelta, sender: ghost, room: room, seq: 7})
		eventually(t, 5*time.Second, "ghost loaded", func() bool { return len(b.h.part(room, ghost)) == 1 })
		if got := value(t, b.b.m.resyncs.WithLabelValues(ResyncEpoch)); got != 1 {
			t.Fatalf("epoch resyncs %v, want 1", got)
		}
		// A sender's first message in a room (seq 1) needs no resync.
		publishRaw(t, c, k, message{kind: kindDelta, sender: "new#2", room: room, seq: 1,
			hs: []presence.Holding{{User: "n", Held: true}}})
		eventually(t, 5*time.Second, "new applied", func() bool { return len(b.h.part(room, "new#2")) == 1 })
		if got := value(t, b.b.m.resyncs.WithLabelValues(ResyncEpoch)); got != 1 {
			t.Fatalf("epoch resyncs %v, want 1", got)
		}
	})
}

func TestCoalescing(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), nil)
	const room = "storm"
	b.watch(t, room)
	const calls = 2000
	for i := range calls {
		a.set(room, "u"+strconv.Itoa(i%50), "s"+strconv.Itoa(i), i%7 != 0)
	}
	converged(t, b, a, room, 10*time.Second)
	pub, rounds := value(t, a.b.m.published), a.b.q.rounds.Load()
	// One room: at most one message per writer round.
	if pub > float64(rounds) || pub >= calls {
		t.Fatalf("published %v messages in %d rounds for %d Publish calls", pub, rounds, calls)
	}
	t.Logf("%d Publish calls -> %v messages in %d rounds", calls, pub, rounds)
}

func TestWatchLargeRoom(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.Client(t)
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), nil)
	const room, users = "big", 2500
	for i := range users {
		a.set(room, fmt.Sprintf("user-%05d", i), "online", true)
	}
	eventually(t, 10*time.Second, "written", func() bool {
		n, _ := c.HLen(context.Background(), a.b.k.members(room, a.b.ID())).Result()
		return n == users
	})
	before := commandCalls(t, c, "hscan")
	b.watchWithin(t, room, 10*time.Second)
	cs := b.h.roomCalls(room)
	if cs[0].op != "apply" || !cs[0].full || cs[0].n != users || cs[1].op != "loaded" {
		t.Fatalf("want Apply(full, %d) then Loaded, got %+v", users, cs[:2])
	}
	// One HSCAN of the seqs hash, at least three pages of members.
	if n := commandCalls(t, c, "hscan") - before; n < 4 {
		t.Fatalf("%d HSCAN calls, want >= 4 (pages of %d)", n, scanCount)
	}
	converged(t, b, a, room, time.Second)
}

func TestWatchTimeout(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.Client(t)
	a := startBus(t, "a", standalone(s), nil)
	b := startBus(t, "b", standalone(s), nil)
	const room = "slow"
	a.set(room, "u1", "online", true)
	eventually(t, 5*time.Second, "written", func() bool { return value(t, a.b.m.published) >= 1 })
	if err := c.Do(context.Background(), "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	b.watch(t, room)
	if n := len(b.h.part(room, a.b.ID())); n != 0 {
		t.Fatalf("Loaded after the load (%d holdings): Redis was paused", n)
	}
	// After the pause the room loads and follows as Apply.
	converged(t, b, a, room, 5*time.Second)
	cs := b.h.roomCalls(room)
	if cs[0].op != "loaded" || cs[1].op != "apply" || !cs[1].full {
		t.Fatalf("want Loaded then Apply(full), got %+v", cs)
	}
	if n := b.h.count(isLoaded(room)); n != 1 {
		t.Fatalf("Loaded %d times", n)
	}
}
