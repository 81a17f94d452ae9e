package redisbus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redistest"
)

// shardTime is the Redis time (ms) of room's shard, as rcClaimScript
// returns it.
func shardTime(t *testing.T, b *Bus, room string) int64 {
	t.Helper()
	ms, err := redis.NewScript(nowMsLua+"return now_ms()").
		Run(context.Background(), b.data, []string{b.k.seqs(room)}).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// pass runs one reconcile pass of room page by page, sleeping pause
// between pages (a slow pass), and reports whether part existed after
// every page.
func pass(t *testing.T, b *Bus, room string, regt int64, live []any, pause time.Duration, part string) (pages int, kept bool) {
	t.Helper()
	ctx := context.Background()
	kept = true
	for cur := "0"; ; {
		c := b.reconcileCall(room, cur, rcPart{regt: regt}, live)
		r, err := reconcileScript.Run(ctx, b.data, c.keys, c.args...).Slice()
		if err != nil || len(r) < 2 {
			t.Fatalf("page %d: %v %v", pages, r, err)
		}
		pages++
		if n, _ := b.data.Exists(ctx, part).Result(); n == 0 {
			kept = false
		}
		if cur = r[1].(string); cur == "0" {
			return pages, kept
		}
		time.Sleep(pause)
	}
}

// TestReconcileKeepsLatePart: a node that registered after the round read
// the registry writes a part in a big room; one pass over the room (and
// a second with the same registry read) lasts longer than the grace: the
// live part is kept (review6-final-d #1: it was deleted by a later page
// of the same pass), and so is its user: a part the reconcile keeps holds
// its users (the second pass removed x, a false member_removed, and its
// kept result cut the pass short: CI, stop 16).
func TestReconcileKeepsLatePart(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	const grace = 200 * time.Millisecond
	c := startBusWith(t, Config{Redis: opts, Node: "c", Events: &eventLog{}, LeaveGrace: grace},
		func(b *Bus) { b.rcEvery, b.rcPage = time.Hour, 30 })
	for i := range 300 {
		c.set("big", fmt.Sprintf("u%03d", i), "online", true)
	}
	c.flushed(t)
	eventually(t, 5*time.Second, "c registered", func() bool { return c.b.ID() != "" })
	regt := shardTime(t, c.b, "big") // the round's claim, then its registry read
	live := []any{c.b.ID()}
	n, _ := startEventBus(t, opts, "n") // registers after the read
	n.set("big", "x", "online", true)
	n.flushed(t)
	part := c.b.k.members("big", n.b.ID())
	for i := range 2 {
		start := time.Now()
		pages, kept := pass(t, c.b, "big", regt, live, 60*time.Millisecond, part)
		if took := time.Since(start); took < grace {
			t.Fatalf("pass %d took %v, not slower than the grace", i, took)
		}
		if !kept {
			t.Fatalf("pass %d (%d pages): n's live part deleted", i, pages)
		}
		if in, _ := c.b.data.SIsMember(context.Background(), c.b.k.membership("big"), "x").Result(); !in {
			t.Fatalf("pass %d (%d pages): n's user x removed", i, pages)
		}
	}
}

// TestReconcileStalePartGrace: an unregistered id's part is deleted only
// by a pass whose registry read came after its first sighting, the grace
// after it: not at first sight, not by a read after the sighting but
// before the grace.
func TestReconcileStalePartGrace(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	a, _ := startEventBus(t, opts, "a")
	a.set("r1", "v", "online", true)
	a.flushed(t)
	aID := abandon(t, a)
	const grace = 2 * time.Second
	c := startBusWith(t, Config{Redis: opts, Node: "c", Events: &eventLog{}, LeaveGrace: grace},
		func(b *Bus) { b.rcEvery = time.Hour })
	eventually(t, 5*time.Second, "c registered", func() bool { return c.b.ID() != "" })
	live := []any{c.b.ID()}
	part := c.b.k.members("r1", aID)
	if _, kept := pass(t, c.b, "r1", shardTime(t, c.b, "r1"), live, 0, part); !kept {
		t.Fatal("deleted at first sight")
	}
	if _, kept := pass(t, c.b, "r1", shardTime(t, c.b, "r1"), live, 0, part); !kept {
		t.Fatal("deleted within the grace of its first sighting")
	}
	time.Sleep(grace)
	eventually(t, 5*time.Second, "a's stale part deleted", func() bool {
		_, kept := pass(t, c.b, "r1", shardTime(t, c.b, "r1"), live, 0, part)
		return !kept
	})
}

// TestReconcileRecordsOutlivePass: whs/whsp records outlive a pass over
// the room's partition index, however large (review6-final-d #7: with
// more than ~23 000 rooms a partition they expired before the next
// visit, so nothing was ever removed).
func TestReconcileRecordsOutlivePass(t *testing.T) {
	b := &Bus{cfg: Config{LeaveGrace: time.Second}, rcEvery: 10 * time.Second, rcCount: 64, rcPage: 500}
	keep := func(rooms int64) time.Duration {
		c := b.reconcileCall("r", "0", rcPart{rooms: rooms}, nil)
		return time.Duration(c.args[4].(int64)) * time.Millisecond
	}
	if got := keep(10); got != time.Hour+time.Second {
		t.Errorf("small partition: records kept %v, want 1h1s", got)
	}
	const rooms = 100_000 // a pass: 1563 rounds of 10 s
	if pass := time.Duration(rooms/64+1) * 10 * time.Second; keep(rooms) < pass+time.Second {
		t.Errorf("records kept %v, shorter than a pass %v", keep(rooms), pass)
	}
}
