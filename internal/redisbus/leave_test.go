package redisbus

import (
	"context"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
)

// TestLeaveWaitsForPeerReaper: a leaving node with a live peer waits for
// the peer's reaper (here 200 ms late to react) instead of taking its own
// lock at once, and returns once the reap is done (review6-final-d #2).
func TestLeaveWaitsForPeerReaper(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	ctx := context.Background()
	p := startBusWith(t, Config{Redis: opts, Node: "p", Events: &eventLog{}, LeaveGrace: 100 * time.Millisecond},
		func(b *Bus) {
			b.rcEvery, b.sweepEvery = time.Hour, time.Hour
			b.reapHook = func(string) { time.Sleep(200 * time.Millisecond) }
		})
	e, _ := startEventBus(t, opts, "e")
	eventually(t, 5*time.Second, "e knows p", func() bool { return e.b.lv.hasPeers() })
	e.set("r2", "w", "online", true)
	e.flushed(t)
	eID := e.b.ID()
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := e.b.Leave(lctx); err != nil {
		t.Fatal(err)
	}
	e.stop()
	if v, err := p.b.data.Get(ctx, p.b.k.reapLock(eID)).Result(); err != nil || v != p.b.ID() {
		t.Fatalf("reaper of e %q (%v), want p %s", v, err, p.b.ID())
	}
	if n, _ := p.b.data.Exists(ctx, p.b.k.rooms(eID)).Result(); n != 0 {
		t.Fatal("Leave returned before the peer's reap was done")
	}
}

// TestLeaveTakesOverCutReap: the peer that took the leaving node's lock
// is cut (its own end: it deletes its lock) with rooms:<id> still there:
// the leaving node takes over within its Leave and records the releases
// (review6-final-d #3).
func TestLeaveTakesOverCutReap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, e := leaverWithIdlePeer(t, "r2")
	eID := e.b.ID()
	d := p.b.data
	lock := p.b.k.reapLock(eID)
	if err := d.Set(ctx, lock, "x#1", time.Minute).Err(); err != nil { // a peer reaps ...
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond) // within the leaver's wait (2 s / 3)
		_ = d.Del(ctx, lock).Err()         // ... and is cut
	}()
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := e.b.Leave(lctx); err != nil {
		t.Fatal(err)
	}
	e.stop()
	assertReapedWithRelease(t, p, eID, "r2")
}

// TestReapCutReleasesLock: a reap cut by its node's end deletes its lock
// (not another's), and rooms:<id> has a TTL renewed by the node's rounds
// (review6-final-d #3: nobody reaped it, it stayed forever).
func TestReapCutReleasesLock(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	ctx := context.Background()
	a, _ := startEventBus(t, opts, "a")
	a.set("r", "u", "online", true)
	a.flushed(t)
	d := a.b.data
	eventually(t, 5*time.Second, "rooms:a expires", func() bool {
		ttl, err := d.PTTL(ctx, a.b.k.rooms(a.b.ID())).Result()
		return err == nil && ttl > 23*time.Hour
	})
	lock := a.b.k.reapLock("z#1")
	if err := d.Set(ctx, lock, "me#1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	cut, cancel := context.WithCancel(ctx)
	cancel()
	if a.b.reapLocked(cut, "z#1", "other#1", map[string][]string{}, time.Now().Add(time.Minute)) {
		t.Fatal("a cut reap succeeded")
	}
	if v, _ := d.Get(ctx, lock).Result(); v != "me#1" {
		t.Fatalf("another's lock deleted (%q)", v)
	}
	if a.b.reapLocked(cut, "z#1", "me#1", map[string][]string{}, time.Now().Add(time.Minute)) {
		t.Fatal("a cut reap succeeded")
	}
	if n, _ := d.Exists(ctx, lock).Result(); n != 0 {
		t.Fatal("a cut reap kept its lock")
	}
}

// TestLeaveShortBudgetReapsItself: with less than 1.5 s of Leave left and
// a live peer that never takes the lock, the leaving node stops waiting
// after a third of its time and reaps itself (review6-final-e #1: it
// returned "a peer still reaps" before its own no-peer check fired).
func TestLeaveShortBudgetReapsItself(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, e := leaverWithIdlePeer(t, "r3")
	lctx, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
	defer cancel()
	if err := e.b.Leave(lctx); err != nil {
		t.Fatal(err)
	}
	e.stop()
	assertReapedWithRelease(t, p, e.b.ID(), "r3")
}

// leaverWithIdlePeer starts a peer p whose reaper never reacts and a
// node e holding w in room, once e knows p.
func leaverWithIdlePeer(t *testing.T, room string) (p, e *node) {
	opts := standalone(redistest.Start(t))
	block := make(chan struct{})
	p = startBusWith(t, Config{Redis: opts, Node: "p", Events: &eventLog{}},
		func(b *Bus) {
			b.rcEvery, b.sweepEvery = time.Hour, time.Hour
			b.reapHook = func(string) { <-block } // p never reaps
		})
	// Registered after p's own cleanup, so it runs first: p's stop waits
	// for its reaper, parked in the hook.
	t.Cleanup(func() { close(block) })
	e, _ = startEventBus(t, opts, "e")
	eventually(t, 5*time.Second, "e knows p", func() bool { return e.b.lv.hasPeers() })
	e.set(room, "w", "online", true)
	e.flushed(t)
	return p, e
}

// assertReapedWithRelease: id's part of room and its rooms:<id> are gone
// and the release of its users is recorded for a sweep.
func assertReapedWithRelease(t *testing.T, p *node, id, room string) {
	t.Helper()
	ctx := context.Background()
	d := p.b.data
	if n, _ := d.Exists(ctx, p.b.k.rooms(id), p.b.k.members(room, id)).Result(); n != 0 {
		t.Fatalf("%d of rooms:<id>, the part left", n)
	}
	if _, err := d.ZScore(ctx, p.b.k.pendingRelease(partition(room)), id+"|"+room).Result(); err != nil {
		t.Fatalf("the release not recorded: %v", err)
	}
}
