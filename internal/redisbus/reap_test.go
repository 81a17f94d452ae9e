package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redistest"
)

// TestReapKeepsHeldOnPartialFailure: one failed goneScript call of the
// reaper's pipeline does not lose the users of the calls that succeeded
// (their parts are deleted: a retry would find nothing); they are
// released after the grace.
func TestReapKeepsHeldOnPartialFailure(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	a, _ := startEventBus(t, opts, "a")
	lb := &eventLog{}
	b := startBusWith(t, Config{Redis: opts, Node: "b", Events: lb, LeaveGrace: 50 * time.Millisecond}, nil)
	a.set("bad", "x", "online", true)
	a.set("r1", "u", "online", true)
	a.flushed(t)
	ctx := context.Background()
	aID := a.b.ID()
	// bad's part of the wrong type: its goneScript call fails.
	bad := b.b.k.members("bad", aID)
	if err := b.b.data.Del(ctx, bad).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.b.data.Set(ctx, bad, "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	held := map[string][]string{}
	if err := b.b.gone(ctx, aID, []string{"bad", "r1"}, held); err == nil {
		t.Fatal("gone: no error from the failed call")
	}
	if got := held["r1"]; !slices.Equal(got, []string{"u"}) {
		t.Fatalf("held[r1] = %q after a partial failure, want [u]", got)
	}
	// A retry (bad repaired) finds r1's part gone and keeps what it had.
	if err := b.b.data.Del(ctx, bad).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.b.gone(ctx, aID, []string{"bad", "r1"}, held); err != nil {
		t.Fatal(err)
	}
	if got := held["r1"]; !slices.Equal(got, []string{"u"}) {
		t.Fatalf("held[r1] = %q after the retry, want [u]", got)
	}
	b.b.releaseAfterGrace(ctx, aID, held)
	want := []string{"r1 member_removed u", "r1 room_vacated"}
	if got := lb.list(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if n, err := b.b.data.SCard(ctx, b.b.k.membership("r1")).Result(); err != nil || n != 0 {
		t.Fatalf("wh:r1 has %d members (%v), want 0", n, err)
	}
}

// TestReapReplaysHeldAfterLostReply: goneScript keeps the users it read in
// whg, so a retry after a lost reply (the part is gone) gets them again;
// the release deletes the copy.
func TestReapReplaysHeldAfterLostReply(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	a, _ := startEventBus(t, opts, "a")
	lb := &eventLog{}
	b := startBusWith(t, Config{Redis: opts, Node: "b", Events: lb, LeaveGrace: 50 * time.Millisecond}, nil)
	a.set("r1", "u", "online", true)
	a.set("r1", "v", "online", true)
	a.flushed(t)
	ctx := context.Background()
	aID := a.b.ID()
	if err := b.b.gone(ctx, aID, []string{"r1"}, map[string][]string{}); err != nil {
		t.Fatal(err) // this reply is "lost"
	}
	held := map[string][]string{}
	if err := b.b.gone(ctx, aID, []string{"r1"}, held); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(slices.Values(held["r1"]))
	if !slices.Equal(got, []string{"u", "v"}) {
		t.Fatalf("held[r1] = %q on the retry, want [u v]", got)
	}
	b.b.releaseAfterGrace(ctx, aID, held)
	if n := len(lb.list()); n != 3 {
		t.Fatalf("events %q, want 2 removals and a vacate", lb.list())
	}
	if n, err := b.b.data.Exists(ctx, b.b.k.goneHeld("r1", aID)).Result(); err != nil || n != 0 {
		t.Fatalf("whg kept after the release (%d, %v)", n, err)
	}
}

// TestSweepRunsAbandonedRelease: a reaper that deleted a dead node's parts
// and stopped before the release (drained during the grace) leaves it in
// whp: another node's sweeper runs it once it is due. In Redis Cluster
// too (the sweep's pipeline spans every partition's slot).
func TestSweepRunsAbandonedRelease(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		sweepAbandoned(t, standalone(redistest.Start(t)))
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		sweepAbandoned(t, ClientOptions{Addrs: redistest.StartCluster(t, 3).Addrs(), Cluster: true})
	})
}

func sweepAbandoned(t *testing.T, opts ClientOptions) {
	a, _ := startEventBus(t, opts, "a")
	b := startBusWith(t, Config{Redis: opts, Node: "b", Events: &eventLog{}, LeaveGrace: 50 * time.Millisecond}, nil)
	lc := &eventLog{}
	startBusWith(t, Config{Redis: opts, Node: "c", Events: lc}, func(b *Bus) {
		b.sweepEvery, b.sweepLate = 50*time.Millisecond, 0
	})
	a.set("r1", "u", "online", true)
	a.flushed(t)
	ctx := context.Background()
	aID := a.b.ID()
	// b reaps and never releases.
	if err := b.b.gone(ctx, aID, []string{"r1"}, map[string][]string{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"r1 member_removed u", "r1 room_vacated"}
	eventually(t, 5*time.Second, "released by c", func() bool { return slices.Equal(lc.list(), want) })
	pending := b.b.k.pendingRelease(partition("r1"))
	eventually(t, 5*time.Second, "whp and whg gone", func() bool {
		n, err := b.b.data.Exists(ctx, pending, b.b.k.goneHeld("r1", aID)).Result()
		return err == nil && n == 0
	})
	time.Sleep(200 * time.Millisecond) // a few more sweeps: nothing again
	if got := lc.list(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestReleaseChunks: a release of more than releaseChunk users is cut in
// calls of at most releaseChunk; a chunk that fails is retried alone (the
// others' events are not produced again), and the users' copy (whg)
// goes only when every chunk is done.
func TestReleaseChunks(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	lb := &eventLog{}
	b := startBusWith(t, Config{Redis: opts, Node: "b", Events: lb}, nil)
	ctx := context.Background()
	const dead, room = "gone#1", "big"
	users := make([]string, 1010) // 3 chunks of at most 500
	for i := range users {
		users[i] = fmt.Sprintf("u%04d", i)
	}
	members := make([]any, len(users))
	for i, u := range users {
		members[i] = u
	}
	c := b.b.data
	pending := b.b.k.pendingRelease(partition(room))
	bad := b.b.k.released(room, dead, 1)
	if err := errors.Join(c.SAdd(ctx, b.b.k.membership(room), members...).Err(),
		c.Set(ctx, b.b.k.goneHeld(room, dead), "[]", 0).Err(),
		c.ZAdd(ctx, pending, redis.Z{Score: 1, Member: dead + "|" + room}).Err(),
		c.HSet(ctx, bad, "x", "1").Err()); err != nil { // chunk 1 fails
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		if n, _ := c.Exists(ctx, b.b.k.goneHeld(room, dead)).Result(); n != 1 {
			t.Errorf("whg gone while chunk 1 fails")
		}
		c.Del(ctx, bad)
	}()
	b.b.release(ctx, dead, map[string][]string{room: users})
	got := lb.list()
	if len(got) != len(users)+1 || got[len(got)-1] != room+" room_vacated" {
		t.Fatalf("%d events (last %q), want %d removals then a vacate", len(got), got[len(got)-1], len(users))
	}
	if v := value(t, b.b.m.errors.WithLabelValues("events")); v == 0 {
		t.Fatal("no chunk failed: the release was not cut in chunks")
	}
	if n, err := c.Exists(ctx, pending, b.b.k.membership(room), b.b.k.goneHeld(room, dead)).Result(); err != nil || n != 0 {
		t.Fatalf("whp, wh: or whg left (%d, %v)", n, err)
	}
}

// TestPendingTimedByRedis: the due times in whp are Redis's (TIME), set
// by goneScript as TIME + grace, and the sweep claims by Redis's TIME
// too: a node whose clock runs ahead can neither release a dead node's
// members before their grace nor take a reconcile's result early
// (review6-final-b #6).
func TestPendingTimedByRedis(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	const grace = 10 * time.Minute
	b := startBusWith(t, Config{Redis: opts, Node: "b", Events: &eventLog{}, LeaveGrace: grace}, func(b *Bus) {
		b.sweepEvery = time.Hour
	})
	ctx := context.Background()
	d := b.b.data
	redisMs := func() int64 {
		tm, err := d.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	if err := d.HSet(ctx, b.b.k.members("r", "x#1"), "u", "v").Err(); err != nil {
		t.Fatal(err)
	}
	t0 := redisMs()
	if err := b.b.gone(ctx, "x#1", []string{"r"}, map[string][]string{}); err != nil {
		t.Fatal(err)
	}
	t1 := redisMs()
	pending := b.b.k.pendingRelease(partition("r"))
	due, err := d.ZScore(ctx, pending, "x#1|r").Result()
	if err != nil {
		t.Fatal(err)
	}
	if g := grace.Milliseconds(); int64(due) < t0+g || int64(due) > t1+g {
		t.Fatalf("due %d, want Redis TIME + grace in [%d, %d]", int64(due), t0+g, t1+g)
	}
	// The sweep (sweepLate 30 s) takes only what Redis's clock says is due.
	now := redisMs()
	for _, z := range []redis.Z{{Score: float64(now - 31_000), Member: "y#1|r"}, {Score: float64(now - 29_000), Member: "z#1|r"}} {
		if err := d.ZAdd(ctx, pending, z).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b.b.sweep(ctx) // y: claimed and run (no whg: the entry is dropped)
	got, err := d.ZRange(ctx, pending, 0, -1).Result()
	if slices.Sort(got); err != nil || !slices.Equal(got, []string{"x#1|r", "z#1|r"}) {
		t.Fatalf("whp after a sweep %q (%v), want x#1|r and z#1|r", got, err)
	}
	if s, _ := d.ZScore(ctx, pending, "z#1|r").Result(); int64(s) != now-29_000 {
		t.Fatalf("z#1|r claimed (score %d)", int64(s))
	}
}

// TestLeaveLastNodeRecordsReleases: the last node of a cluster drained
// with webhooks has no peer to reap it: it deletes its parts itself and
// records their releases (whg, whp), which the next node's sweep runs:
// its users are removed without waiting for the reconcile, and no part
// or rooms:<id> is left (review6-final-b #1 a). With a live peer it
// leaves them to the peer's reaper, which releases after the grace.
func TestLeaveLastNodeRecordsReleases(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	ctx := context.Background()
	a, _ := startEventBus(t, opts, "a")
	a.set("r1", "u", "online", true)
	a.flushed(t)
	aID := a.b.ID()
	if err := a.b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	a.stop()
	lc := &eventLog{}
	c := startBusWith(t, Config{Redis: opts, Node: "c", Events: lc, LeaveGrace: 100 * time.Millisecond}, func(b *Bus) {
		b.rcEvery = time.Hour // not the reconcile: the recorded release
		b.sweepEvery, b.sweepLate = 50*time.Millisecond, 0
	})
	d := c.b.data
	if n, err := d.Exists(ctx, a.b.k.members("r1", aID), a.b.k.rooms(aID)).Result(); err != nil || n != 0 {
		t.Fatalf("a's part or rooms left after its Leave (%d, %v)", n, err)
	}
	want := []string{"r1 member_removed u", "r1 room_vacated"}
	eventually(t, 10*time.Second, "u released by c's sweep", func() bool { return slices.Equal(lc.list(), want) })

	// With a live peer: the peer reaps and releases after the grace.
	c.stop()
	lp := &eventLog{}
	p := startBusWith(t, Config{Redis: opts, Node: "p", Events: lp, LeaveGrace: 100 * time.Millisecond}, func(b *Bus) {
		b.rcEvery, b.sweepEvery = time.Hour, time.Hour
	})
	e, _ := startEventBus(t, opts, "e")
	eventually(t, 5*time.Second, "e knows p", func() bool { return e.b.lv.hasPeers() })
	e.set("r2", "w", "online", true)
	e.flushed(t)
	eID := e.b.ID()
	if err := e.b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	e.stop()
	want = []string{"r2 member_removed w", "r2 room_vacated"}
	eventually(t, 10*time.Second, "w released by p's reaper", func() bool { return slices.Equal(lp.list(), want) })
	if v, err := p.b.data.Get(ctx, p.b.k.reapLock(eID)).Result(); err != nil || v != p.b.ID() {
		t.Fatalf("reaper of e %q (%v), want p %s", v, err, p.b.ID())
	}
}
