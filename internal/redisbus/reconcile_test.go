package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redistest"
)

// fastReconcile makes a bus reconcile every 50 ms.
func fastReconcile(b *Bus) { b.rcEvery = 50 * time.Millisecond }

// abandon stops n as a crash would (no Leave) and makes its id vanish
// from the registry with nobody to reap it (a reaper that gave up or
// died, or only the {n} shard of a Cluster lost its data): its parts stay.
func abandon(t *testing.T, n *node) string {
	t.Helper()
	id := n.b.ID()
	n.stop()
	ctx := context.Background()
	live, data, err := newClients(n.b.cfg.Redis, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	defer live.Close()
	if err := live.Del(ctx, n.b.k.lease(id), n.b.k.rooms(id)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := live.HDel(ctx, n.b.k.reg(), id).Err(); err != nil {
		t.Fatal(err)
	}
	return id
}

// allEvents is the events of every log, sorted.
func allEvents(ls ...*eventLog) []string {
	var all []string
	for _, l := range ls {
		all = append(all, l.list()...)
	}
	sort.Strings(all)
	return all
}

// TestReconcileMixedWebhooks: a node without webhooks breaks the
// membership (a user it held last is never removed); both nodes see the
// other setting (gauge), and the reconcile of the webhook node removes
// the user no live part holds, once, after the grace (review #3, #6).
func TestReconcileMixedWebhooks(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	la := &eventLog{}
	a := startBusWith(t, Config{Redis: opts, Node: "a", Events: la, LeaveGrace: 300 * time.Millisecond}, fastReconcile)
	b := startBusWith(t, Config{Redis: opts, Node: "b"}, fastReconcile)
	a.set("r", "u", "online", true)
	a.flushed(t)
	b.set("r", "u", "online", true)
	b.flushed(t)
	a.set("r", "u", "", false) // b holds u: nothing
	a.flushed(t)
	b.set("r", "u", "", false) // b has no webhooks: nothing either
	b.flushed(t)
	want := []string{"r member_added u", "r member_removed u", "r room_occupied", "r room_vacated"}
	eventually(t, 10*time.Second, "u released by the reconcile", func() bool { return slices.Equal(allEvents(la), want) })
	for _, n := range []*node{a, b} {
		if v := value(t, n.b.m.mismatch); v != 1 {
			t.Errorf("%s: presenced_cluster_webhook_mismatched_nodes %v, want 1", n.b.cfg.Node, v)
		}
	}
	time.Sleep(300 * time.Millisecond) // more rounds: nothing more
	if got := allEvents(la); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	// b, restarted with webhooks, writes its rooms in full (a new
	// incarnation): the user only it held is added; no mismatch left.
	b.set("r2", "x", "online", true)
	b.flushed(t)
	b.stop()
	lb := &eventLog{}
	b2 := startBusWith(t, Config{Redis: opts, Node: "b", Events: lb}, fastReconcile)
	b2.set("r2", "x", "online", true)
	b2.flushed(t)
	if got, want := lb.list(), []string{"r2 room_occupied", "r2 member_added x"}; !slices.Equal(got, want) {
		t.Fatalf("b's events after its restart with webhooks %q, want %q", got, want)
	}
	eventually(t, 5*time.Second, "no mismatch", func() bool { return value(t, a.b.m.mismatch) == 0 })
}

// TestReconcileUnreaped: a node nobody reaped leaves its parts (and its
// users in the sets); a node started later removes their users once,
// two graces later (the part is deleted as stale a grace after its first
// sighting, its users a grace after that), and not: a user a live part
// holds, nor one whose release is pending (whp).
func TestReconcileUnreaped(t *testing.T) {
	t.Parallel()
	onStandaloneAndCluster(t, reconcileUnreaped)
}

func reconcileUnreaped(t *testing.T, opts ClientOptions) {
	ctx := context.Background()
	a, la := startEventBus(t, opts, "a")
	a.set("r1", "u", "online", true)
	a.set("r1", "v", "online", true)
	a.set("r2", "w", "online", true)
	a.flushed(t)
	aID := abandon(t, a)
	lc := &eventLog{}
	const grace = 700 * time.Millisecond
	started := time.Now()
	c := startBusWith(t, Config{Redis: opts, Node: "c", Events: lc, LeaveGrace: grace}, func(b *Bus) {
		fastReconcile(b)
		b.sweepEvery = time.Hour // the pending release below stays pending
	})
	// w's release is pending: the reconcile leaves r2 to it.
	if err := c.b.data.ZAdd(ctx, c.b.k.pendingRelease(partition("r2")),
		redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: aID + "|r2"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.b.data.SAdd(ctx, c.b.k.pendingOf("r2"), aID).Err(); err != nil {
		t.Fatal(err)
	}
	c.set("r1", "v", "online", true) // v is held by a live part: stays
	c.flushed(t)
	want := []string{"r1 member_removed u"}
	eventually(t, 10*time.Second, "u released", func() bool { return slices.Equal(lc.list(), want) })
	if d := time.Since(started); d < 2*grace {
		t.Fatalf("u released %v after the reconcile began, before two graces (%v)", d, 2*grace)
	}
	time.Sleep(300 * time.Millisecond) // more rounds: nothing more
	if got := lc.list(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if n := len(la.list()); n != 5 {
		t.Fatalf("a's events %q", la.list())
	}
	for room, want := range map[string][]string{"r1": {"v"}, "r2": {"w"}} {
		got, err := c.b.data.SMembers(ctx, c.b.k.membership(room)).Result()
		if slices.Sort(got); err != nil || !slices.Equal(got, want) {
			t.Fatalf("wh:%s = %q (%v), want %q", room, got, err, want)
		}
	}
}

// TestReconcileLostReply: a reconcile whose reply is lost (or still on
// its way) keeps its events and leaves them pending in whp: another
// reconcile of the room sends nothing, a sweep sends them, once.
func TestReconcileLostReply(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	lb := &eventLog{}
	b := startBusWith(t, Config{Redis: opts, Node: "b", Events: lb}, func(b *Bus) {
		b.rcEvery, b.sweepEvery = time.Hour, time.Hour
	})
	ctx := context.Background()
	d := b.b.data
	const room = "r*1" // a glob character in the name
	if err := errors.Join(d.SAdd(ctx, b.b.k.membership(room), "u").Err(),
		d.SAdd(ctx, b.b.k.whRooms(partition(room)), room).Err(),
		d.HSet(ctx, b.b.k.suspects(room), "u", 1).Err()); err != nil { // found long ago
		t.Fatal(err)
	}
	call := b.b.reconcileCall(room, "0", rcPart{}, nil)
	if err := reconcileScript.Run(ctx, b.b.data, call.keys, call.args...).Err(); err != nil {
		t.Fatal(err) // this reply is "lost"
	}
	b.b.reconcileRooms(ctx, []string{room}, nil, nil) // another reconcile: nothing
	if got := lb.list(); len(got) != 0 {
		t.Fatalf("a second reconcile sent %q", got)
	}
	lc := &eventLog{}
	c := startBusWith(t, Config{Redis: opts, Node: "c", Events: lc}, func(b *Bus) {
		b.rcEvery = time.Hour
		b.sweepEvery, b.sweepLate = 50*time.Millisecond, 0
	})
	want := []string{room + " member_removed u", room + " room_vacated"}
	eventually(t, 5*time.Second, "sent by a sweep", func() bool { return slices.Equal(lc.list(), want) })
	eventually(t, 5*time.Second, "whp and whr gone", func() bool {
		n, err := d.Exists(ctx, c.b.k.pendingRelease(partition(room)), c.b.k.released(room, reconcileID, 0),
			c.b.k.pendingOf(room)).Result()
		return err == nil && n == 0
	})
	time.Sleep(200 * time.Millisecond) // more sweeps: nothing again
	if got := lc.list(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestReconcileOldRegistration: a node of the release before webhooks
// registers "<addr>|<start>", without the wh= field: it produces no
// events, so it counts as wh=0 for a node with webhooks (the upgrade that
// enables them), and matches a node without (review6-final-b #4).
func TestReconcileOldRegistration(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	slow := func(b *Bus) { b.rcEvery = time.Hour }
	a := startBusWith(t, Config{Redis: opts, Node: "a", Events: &eventLog{}}, slow)
	b := startBusWith(t, Config{Redis: opts, Node: "b"}, slow)
	eventually(t, 5*time.Second, "registered", func() bool { return a.b.ID() != "" && b.b.ID() != "" })
	ctx := context.Background()
	// An old node, alive (its lease) for the test's length.
	if err := a.b.live.Set(ctx, a.b.k.lease("old#1"), "1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.b.live.HSet(ctx, a.b.k.reg(), "old#1", "127.0.0.1:1|1796400000000").Err(); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[*node]float64{a: 2, b: 1} { // a: b and old; b: a
		warned := false
		n.b.reconcile(ctx, &warned)
		if v := value(t, n.b.m.mismatch); v != want {
			t.Errorf("%s: presenced_cluster_webhook_mismatched_nodes %v, want %v", n.b.cfg.Node, v, want)
		}
	}
}

// TestReconcileWaitsForOrphans: while this node has orphans (peers' ids
// of a dataset Redis lost, not yet settled: after a reset of the {n}
// shard alone, their parts are still in the room shards) the reconcile
// does nothing: a peer slower than the grace to come back must not have
// its members removed; once settled it runs (review6-final-b #7).
func TestReconcileWaitsForOrphans(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	a, _ := startEventBus(t, opts, "a")
	a.set("r1", "u", "online", true)
	a.flushed(t)
	abandon(t, a) // its parts stay: nobody reaps
	lc := &eventLog{}
	c := startBusWith(t, Config{Redis: opts, Node: "c", Events: lc, LeaveGrace: 200 * time.Millisecond,
		NodeTTL: 3 * time.Second}, func(b *Bus) {
		fastReconcile(b)
		b.lv.orphans["b#1"] = time.Time{} // settled (probe) a ttl after c registered
	})
	eventually(t, 5*time.Second, "registered", func() bool { return c.b.ID() != "" })
	time.Sleep(time.Second) // many rounds, each longer than the grace
	if got := lc.list(); len(got) != 0 {
		t.Fatalf("events %q while an orphan was unsettled, want none", got)
	}
	want := []string{"r1 member_removed u", "r1 room_vacated"}
	eventually(t, 15*time.Second, "u released once the orphan settled", func() bool { return slices.Equal(lc.list(), want) })
	if c.b.lv.orphan("b#1") {
		t.Fatal("b#1 still an orphan")
	}
}

// TestReconcileDeletesStaleParts: a node nobody reaped (the last node
// drained used to be one) leaves its parts; a stale part counted as a holder in the writes'
// wh_end, so a user it listed who came back and left later got no
// member_removed from the write. The reconcile deletes parts of ids
// neither registered nor pending, a grace after it first found them:
// later writes produce the events again (review6-final-b #1 b, the
// review's probe TestReviewDrainedPartsLeakAndSuppress).
func TestReconcileDeletesStaleParts(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	ctx := context.Background()
	a, _ := startEventBus(t, opts, "a")
	a.set("r1", "v", "online", true)
	a.flushed(t)
	aID := abandon(t, a)
	lc := &eventLog{}
	c := startBusWith(t, Config{Redis: opts, Node: "c", Events: lc, LeaveGrace: 300 * time.Millisecond}, fastReconcile)
	c.set("r1", "v", "online", true) // v is a member already: nothing
	c.flushed(t)
	d := c.b.data
	eventually(t, 10*time.Second, "a's stale part deleted", func() bool {
		n, err := d.Exists(ctx, c.b.k.members("r1", aID)).Result()
		held, _ := d.HExists(ctx, c.b.k.seqs("r1"), aID).Result()
		return err == nil && n == 0 && !held
	})
	if got := lc.list(); len(got) != 0 {
		t.Fatalf("events %q while c held v, want none", got)
	}
	c.set("r1", "v", "", false)
	c.flushed(t)
	// From the write itself, not a reconcile a grace later.
	if got, want := lc.list(), []string{"r1 member_removed v", "r1 room_vacated"}; !slices.Equal(got, want) {
		t.Fatalf("events after c let v go %q, want %q", got, want)
	}
}

// TestReconcilePages: a room is reconciled in pages of about rcPage
// members (one script call each: a huge room never blocks Redis for
// long); a pass over all pages removes, a grace after the previous pass,
// every member no live part holds, once, and not one that is held
// (review6-final-b #5).
func TestReconcilePages(t *testing.T) {
	t.Parallel()
	opts := standalone(redistest.Start(t))
	ctx := context.Background()
	lb := &eventLog{}
	const grace = 300 * time.Millisecond
	b := startBusWith(t, Config{Redis: opts, Node: "b", Events: lb, LeaveGrace: grace}, func(b *Bus) {
		b.rcEvery, b.sweepEvery = time.Hour, time.Hour
		b.rcPage = 50
	})
	b.set("r", "held", "online", true)
	b.flushed(t)
	d := b.b.data
	const n = 300
	users := make([]any, n)
	for i := range users {
		users[i] = fmt.Sprintf("u%03d", i)
	}
	if err := d.SAdd(ctx, b.b.k.membership("r"), users...).Err(); err != nil {
		t.Fatal(err)
	}
	live := []any{b.b.ID()}
	// The first pass, page by page: it records every unheld member.
	pages := 0
	for cur := "0"; ; pages++ {
		c := b.b.reconcileCall("r", cur, rcPart{}, live)
		r, err := reconcileScript.Run(ctx, d, c.keys, c.args...).Slice()
		if err != nil || len(r) != 2 {
			t.Fatalf("page %d: %v %v", pages, r, err)
		}
		if cur = r[1].(string); cur == "0" {
			pages++
			break
		}
	}
	if pages < 3 {
		t.Fatalf("%d members in %d pages of about 50", n+1, pages)
	}
	if got, _ := d.HLen(ctx, b.b.k.suspects("r")).Result(); got != n {
		t.Fatalf("whs holds %d users, want %d", got, n)
	}
	time.Sleep(grace)
	b.b.reconcileRooms(ctx, []string{"r"}, nil, live)
	got := lb.list()
	removed := 0
	for _, e := range got {
		if strings.HasPrefix(e, "r member_removed u") {
			removed++
		} else if e != "r room_occupied" && e != "r member_added held" {
			t.Errorf("event %q", e)
		}
	}
	if removed != n {
		t.Fatalf("%d removed, want %d", removed, n)
	}
	if m, _ := d.SMembers(ctx, b.b.k.membership("r")).Result(); !slices.Equal(m, []string{"held"}) {
		t.Fatalf("wh:r = %q, want [held]", m)
	}
	if k, _ := d.Exists(ctx, b.b.k.suspects("r"), b.b.k.suspectsBefore("r"), b.b.k.pendingOf("r")).Result(); k != 0 {
		t.Fatalf("%d of whs, whso, whpr left", k)
	}
}
