package redisbus

import (
	"context"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
)

// TestReconcileSkipsPendingRelease: a dead node's release recorded by
// goneScript (whp, indexed in whpr) and not run yet makes the reconcile
// skip the room, however many passes a grace apart (review6-final-d #2,
// mutant M3: goneScript not indexing whpr). whpr expires, and goes when
// the room's set does (review6-final-d #4).
func TestReconcileSkipsPendingRelease(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	ctx := context.Background()
	a, _ := startEventBus(t, opts, "a")
	a.set("r", "u", "online", true)
	a.flushed(t)
	aID := abandon(t, a) // its part stays, nobody reaps it
	lc := &eventLog{}
	const grace = 100 * time.Millisecond
	c := startBusWith(t, Config{Redis: opts, Node: "c", Events: lc, LeaveGrace: grace}, func(b *Bus) {
		b.rcEvery, b.sweepEvery = time.Hour, time.Hour
	})
	eventually(t, 5*time.Second, "c registered", func() bool { return c.b.ID() != "" })
	d := c.b.data
	// A reaper's goneScript, its release then cut (never run).
	if err := c.b.gone(ctx, aID, []string{"r"}, map[string][]string{}); err != nil {
		t.Fatal(err)
	}
	if ttl, err := d.PTTL(ctx, c.b.k.pendingOf("r")).Result(); err != nil || ttl <= 0 {
		t.Fatalf("whpr:r TTL %v (%v), want one", ttl, err)
	}
	live := []any{c.b.ID()}
	for range 3 {
		c.b.reconcileRooms(ctx, []string{"r"}, map[int]rcPart{partition("r"): {regt: shardTime(t, c.b, "r")}}, live)
		time.Sleep(2 * grace)
	}
	if got := lc.list(); len(got) != 0 {
		t.Fatalf("reconcile events %q while a's release was pending", got)
	}
	// The release removed by one that does not maintain the index (an
	// older release), the room's set gone: the index goes too.
	if err := d.ZRem(ctx, c.b.k.pendingRelease(partition("r")), aID+"|r").Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.Del(ctx, c.b.k.membership("r")).Err(); err != nil {
		t.Fatal(err)
	}
	c.b.reconcileRooms(ctx, []string{"r"}, nil, live)
	if n, _ := d.Exists(ctx, c.b.k.pendingOf("r")).Result(); n != 0 {
		t.Fatal("whpr:r left after wh:r went")
	}
}
