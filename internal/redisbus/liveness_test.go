package redisbus

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func TestLivenessRegister(t *testing.T) {
	s := redistest.Start(t)
	a := startNode(t, standalone(s), "a", time.Second, nil)
	waitRegistered(t, a)
	id := a.l.id()
	var epoch uint64
	if _, err := fmt.Sscanf(id, "a#%016x", &epoch); err != nil || len(id) != len("a#")+16 {
		t.Fatalf("id %q: want a#<16 hex digits> (%v)", id, err)
	}
	if regs := a.r.registrations(); len(regs) != 1 || regs[0] != (regEvent{id, true}) {
		t.Fatalf("registrations %v", regs)
	}
	eventually(t, time.Second, "lost(true)", func() bool {
		a.r.mu.Lock()
		defer a.r.mu.Unlock()
		return len(a.r.losts) == 1 && a.r.losts[0]
	})
	c := s.Client(t)
	ctx := context.Background()
	if n, _ := c.Exists(ctx, testKeys.lease(id)).Result(); n != 1 {
		t.Fatal("no lease key")
	}
	if last, _ := c.Get(ctx, testKeys.last("a")).Result(); last != id {
		t.Fatalf("last:a = %q, want %q", last, id)
	}
	if a.l.alive("a#0000000000000000") {
		t.Fatal("an unknown id is alive")
	}
}

// deathSeen waits until every survivor reported dead's death once, and
// checks that exactly one of them reaped it; it returns the reports.
func deathSeen(t *testing.T, timeout time.Duration, dead string, survivors ...*tnode) []downEvent {
	t.Helper()
	eventually(t, timeout, "every survivor reports "+dead+" down", func() bool {
		for _, n := range survivors {
			if len(n.r.downsOf(dead)) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(200 * time.Millisecond) // a second report or reaper would show now
	var all []downEvent
	reapers := 0
	for _, n := range survivors {
		ds := n.r.downsOf(dead)
		if len(ds) != 1 {
			t.Fatalf("%s reported %s down %d times: %v", n.l.id(), dead, len(ds), ds)
		}
		if ds[0].reaper {
			reapers++
		}
		if n.l.alive(dead) {
			t.Fatalf("%s still alive for %s", dead, n.l.id())
		}
		all = append(all, ds[0])
	}
	if reapers != 1 {
		t.Fatalf("%d reapers for %s, want 1: %v", reapers, dead, all)
	}
	return all
}

func TestLivenessDeath(t *testing.T) {
	const ttl = 600 * time.Millisecond
	for _, tc := range []struct {
		name     string
		args     []string
		noEvents bool
		hows     string // the allowed hows
		warning  bool   // "probing only" logged
	}{
		{name: "events", hows: DeathProbe + DeathEvent},
		{name: "events off", noEvents: true, hows: DeathProbe},
		{name: "CONFIG refused", args: []string{"--rename-command", "CONFIG", ""}, hows: DeathProbe, warning: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.Start(t, tc.args...)
			opt := func(l *liveness) { l.cfg.noEvents = tc.noEvents }
			a := startNode(t, standalone(s), "a", ttl, opt)
			b := startNode(t, standalone(s), "b", ttl, opt)
			c := startNode(t, standalone(s), "c", ttl, opt)
			waitRegistered(t, a, b, c)
			dead := c.l.id()
			killed := time.Now()
			c.stop()
			for _, d := range deathSeen(t, 5*time.Second, dead, a, b) {
				if !strings.Contains(tc.hows, d.how) {
					t.Fatalf("death learnt by %q, want one of %q", d.how, tc.hows)
				}
			}
			t.Logf("death seen by all after %v", time.Since(killed))
			rdb := s.Client(t)
			ctx := context.Background()
			if n, _ := rdb.Exists(ctx, testKeys.tomb(dead)).Result(); n != 1 {
				t.Fatal("no tomb")
			}
			if ok, _ := rdb.HExists(ctx, testKeys.reg(), dead).Result(); ok {
				t.Fatal("still registered")
			}
			if !a.l.alive(b.l.id()) || !b.l.alive(a.l.id()) || !a.l.up() || !b.l.up() {
				t.Fatal("a survivor is judged dead or down")
			}
			warned := strings.Contains(a.logs.String(), "probing only")
			if warned != tc.warning {
				t.Fatalf("probing-only warning logged: %v, want %v", warned, tc.warning)
			}
			if n := strings.Count(a.logs.String(), "probing only"); n > 1 {
				t.Fatalf("probing-only warning logged %d times", n)
			}
		})
	}
}

// An expired event runs a round at once: the survivors' periodic rounds
// are 10 s apart, the dead node's lease is 600 ms.
func TestLivenessDeathByEvent(t *testing.T) {
	s := redistest.Start(t)
	slow := func(l *liveness) { l.firstTick = func(p time.Duration) time.Duration { return p } }
	c := startNode(t, standalone(s), "c", 600*time.Millisecond, nil)
	waitRegistered(t, c)
	time.Sleep(700 * time.Millisecond) // the grace of the first round ever ends
	a := startNode(t, standalone(s), "a", 30*time.Second, slow)
	b := startNode(t, standalone(s), "b", 30*time.Second, slow)
	waitRegistered(t, a, b, c)
	dead := c.l.id()
	c.stop()
	for _, d := range deathSeen(t, 5*time.Second, dead, a, b) {
		if d.how != DeathEvent {
			t.Fatalf("death learnt by %q, want %q", d.how, DeathEvent)
		}
	}
}

// CLIENT PAUSE WRITE for longer than the ttl: leases cannot be renewed,
// and nobody is judged dead.
func TestLivenessPauseWrite(t *testing.T) {
	s := redistest.Start(t)
	const ttl = time.Second
	a := startNode(t, standalone(s), "a", ttl, nil)
	b := startNode(t, standalone(s), "b", ttl, nil)
	c := startNode(t, standalone(s), "c", ttl, nil)
	waitRegistered(t, a, b, c)
	ids := []string{a.l.id(), b.l.id(), c.l.id()}
	if err := s.Client(t).Do(context.Background(), "client", "pause", "3000", "write").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3000*time.Millisecond + 2*ttl)
	for i, n := range []*tnode{a, b, c} {
		if ds := n.r.allDowns(); len(ds) != 0 {
			t.Fatalf("node %d reported deaths: %v\n%s", i, ds, n.logs.String())
		}
		if n.l.id() != ids[i] || countFresh(n.r.registrations()) != 1 {
			t.Fatalf("node %d registered again: %v", i, n.r.registrations())
		}
	}
	waitRegistered(t, a, b, c)
}

func countFresh(regs []regEvent) int {
	n := 0
	for _, r := range regs {
		if r.fresh {
			n++
		}
	}
	return n
}

// A node that stops renewing for longer than the ttl (SIGSTOP-like) is
// reaped; on resume it finds itself DEAD and registers a new id.
func TestLivenessReapedResumes(t *testing.T) {
	s := redistest.Start(t)
	const ttl = 600 * time.Millisecond
	a := startNode(t, standalone(s), "a", ttl, nil)
	b := startNode(t, standalone(s), "b", ttl, nil)
	c := startNode(t, standalone(s), "c", ttl, nil)
	waitRegistered(t, a, b, c)
	old := c.l.id()
	c.stop()
	deathSeen(t, 5*time.Second, old, a, b)
	c.resume()
	eventually(t, 5*time.Second, "c registers again", func() bool {
		regs := c.r.registrations()
		return len(regs) == 2 && regs[1].fresh && regs[1].id != old && regs[1].id == c.l.id()
	})
	waitRegistered(t, a, b, c)
	if ds := c.r.allDowns(); len(ds) != 0 {
		t.Fatalf("c reported deaths: %v", ds)
	}
	if a.l.alive(old) {
		t.Fatal("the reaped id is alive again")
	}
}

// Redis loses its data: every node registers a new id (fresh) and reports
// the peers' old ids down.
func TestLivenessReset(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(s *redistest.Server, rdb *redis.Client)
	}{
		{"FLUSHALL", func(_ *redistest.Server, rdb *redis.Client) {
			if err := rdb.FlushAll(context.Background()).Err(); err != nil {
				panic(err)
			}
		}},
		{"restart", func(s *redistest.Server, _ *redis.Client) { s.Kill(); s.Restart() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.Start(t)
			const ttl = 600 * time.Millisecond
			a := startNode(t, standalone(s), "a", ttl, nil)
			b := startNode(t, standalone(s), "b", ttl, nil)
			waitRegistered(t, a, b)
			oldA, oldB := a.l.id(), b.l.id()
			tc.lose(s, s.Client(t))
			eventually(t, 5*time.Second, "new ids", func() bool {
				return a.l.id() != oldA && b.l.id() != oldB
			})
			waitRegistered(t, a, b)
			for _, n := range []*tnode{a, b} {
				regs := n.r.registrations()
				if last := regs[len(regs)-1]; !last.fresh || last.id != n.l.id() {
					t.Fatalf("registrations %v", regs)
				}
			}
			eventually(t, 5*time.Second, "old ids reported down", func() bool {
				return len(a.r.downsOf(oldB)) == 1 && len(b.r.downsOf(oldA)) == 1
			})
			if len(a.r.downsOf(oldA)) != 0 || len(b.r.downsOf(oldB)) != 0 {
				t.Fatal("a node reported its own old id down")
			}
			// Each counts the reset once: what PresencedNodeVanished
			// discounts those deaths by (deploy/prometheus/alerts.yml).
			for _, n := range []*tnode{a, b} {
				if got := value(t, n.l.m.resets); got != 1 {
					t.Fatalf("redis resets %v, want 1", got)
				}
			}
		})
	}
}

// A node restarted under the same name retires its previous incarnation
// at once (announced on ctl), long before the lease would expire.
func TestLivenessRestartRetires(t *testing.T) {
	s := redistest.Start(t)
	const ttl = 5 * time.Second
	a := startNode(t, standalone(s), "a", ttl, nil)
	x1 := startNode(t, standalone(s), "x", ttl, nil)
	waitRegistered(t, a, x1)
	old := x1.l.id()
	x1.stop()
	x2 := startNode(t, standalone(s), "x", ttl, nil)
	eventually(t, ttl/2, "a learns the retirement", func() bool { return len(a.r.downsOf(old)) == 1 })
	if d := a.r.downsOf(old)[0]; d.how != DeathAnnounce || d.reaper {
		t.Fatalf("a: %+v", d)
	}
	if ds := x2.r.downsOf(old); len(ds) != 1 || ds[0].how != DeathAnnounce || !ds[0].reaper {
		t.Fatalf("x2: %v", ds)
	}
	waitRegistered(t, a, x2)
}

// More than half the peers missing at once: SUSPECT, reaped only when
// still missing at the next round. Rounds are run by hand.
func TestLivenessSuspect(t *testing.T) {
	s := redistest.Start(t)
	rdb := s.Client(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		ghosts  int
		suspect bool
	}{
		{"one of one", 1, false},
		{"one of three", 1, false}, // two live peers are added below
		{"three of three", 3, true},
		{"two of three", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			live, _, err := newClients(standalone(s), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = live.Close() }()
			m, _ := newMetrics(nil)
			r := &recorder{}
			l := newLiveness(live, testKeys, livenessConfig{node: "a", ttl: time.Second}, r, nil, m)
			l.round(ctx, DeathProbe) // registers
			if l.id() == "" {
				t.Fatal("not registered")
			}
			rdb.Del(ctx, testKeys.live("grace"))
			var ghosts []string
			for i := 0; i < tc.ghosts; i++ {
				ghosts = append(ghosts, fmt.Sprintf("g#%016x", i))
				rdb.HSet(ctx, testKeys.reg(), ghosts[i], "")
			}
			if tc.name == "one of three" {
				for _, p := range []string{"p#1", "p#2"} {
					rdb.HSet(ctx, testKeys.reg(), p, "")
					rdb.Set(ctx, testKeys.lease(p), "1", time.Minute)
				}
			}
			l.round(ctx, DeathProbe)
			if tc.suspect {
				if l.suspects.Load() != 1 || len(r.allDowns()) != 0 {
					t.Fatalf("suspects %d, downs %v", l.suspects.Load(), r.allDowns())
				}
				if n, _ := rdb.HLen(ctx, testKeys.reg()).Result(); int(n) != 1+tc.ghosts {
					t.Fatalf("reg has %d ids: reaped while suspect", n)
				}
				l.round(ctx, DeathProbe)
			}
			ds := r.allDowns()
			if len(ds) != tc.ghosts {
				t.Fatalf("downs %v, want %v", ds, ghosts)
			}
			for _, d := range ds {
				if !d.reaper || d.how != DeathProbe || !strings.HasPrefix(d.id, "g#") {
					t.Fatalf("down %+v", d)
				}
			}
		})
	}
}

// leave: peers learn it at once by the bye on ctl.
func TestLivenessLeave(t *testing.T) {
	s := redistest.Start(t)
	const ttl = 5 * time.Second
	a := startNode(t, standalone(s), "a", ttl, nil)
	b := startNode(t, standalone(s), "b", ttl, nil)
	waitRegistered(t, a, b)
	id := b.l.id()
	if err := b.l.leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.l.up() {
		t.Fatal("up after leave")
	}
	eventually(t, ttl/2, "a learns the bye", func() bool { return len(a.r.downsOf(id)) == 1 })
	if d := a.r.downsOf(id)[0]; d.how != DeathAnnounce || d.reaper {
		t.Fatalf("a: %+v", d)
	}
	rdb := s.Client(t)
	ctx := context.Background()
	if n, _ := rdb.Exists(ctx, testKeys.lease(id)).Result(); n != 0 {
		t.Fatal("lease left")
	}
	if n, _ := rdb.Exists(ctx, testKeys.tomb(id)).Result(); n != 1 {
		t.Fatal("no tomb")
	}
	time.Sleep(ttl / 3)
	if len(b.r.registrations()) != 1 {
		t.Fatalf("b registered again after leave: %v", b.r.registrations())
	}
}

// TestLivenessLeaveBeforeBye: a peer whose round runs after the leave
// but before the bye reaches it counts an announced end, not a death
// (CI, stop 16: it counted "probe", which raises PresencedNodeVanished
// on a deploy). The same for an incarnation retired by its restart; but
// not for a node reaped before it left.
func TestLivenessLeaveBeforeBye(t *testing.T) {
	s := redistest.Start(t)
	const ttl = 5 * time.Second
	a := startNode(t, standalone(s), "a", ttl, nil)
	b := startNode(t, standalone(s), "b", ttl, nil)
	c := startNode(t, standalone(s), "c", ttl, nil)
	waitRegistered(t, a, b, c)
	a.l.round(context.Background(), DeathProbe) // a's prevLive has b and c
	a.stop()                                    // no bye nor gone reaches a now
	left := b.l.id()
	if err := b.l.leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	retired := c.l.id()
	c.stop()
	c2 := startNode(t, standalone(s), "c", ttl, func(l *liveness) { l.prevID = retired })
	eventually(t, ttl, "c registered again", func() bool { return c2.l.id() != "" })
	// d was reaped by another node (tomb 1), then left without knowing:
	// a's round still counts a death.
	d := startNode(t, standalone(s), "d", ttl, nil)
	eventually(t, ttl, "d registered", func() bool { return d.l.id() != "" })
	a.l.round(context.Background(), DeathProbe)
	reaped := d.l.id()
	d.stop() // no round of its own learns it was reaped
	rdb := s.Client(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, testKeys.tomb(reaped), "1", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, testKeys.lease(reaped))
	rdb.HDel(ctx, testKeys.reg(), reaped)
	if err := d.l.leave(ctx); err != nil {
		t.Fatal(err)
	}
	a.l.round(ctx, DeathProbe)
	for id, how := range map[string]string{left: DeathAnnounce, retired: DeathAnnounce, reaped: DeathProbe} {
		d := a.r.downsOf(id)
		if len(d) != 1 || d[0].how != how || d[0].reaper {
			t.Errorf("%s: %+v, want one %s", id, d, how)
		}
	}
}

func TestLivenessCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	o := ClientOptions{Addrs: cl.Addrs(), Cluster: true}
	const ttl = 900 * time.Millisecond
	a := startNode(t, o, "a", ttl, nil)
	b := startNode(t, o, "b", ttl, nil)
	c := startNode(t, o, "c", ttl, nil)
	waitRegistered(t, a, b, c)
	dead := c.l.id()
	c.stop()
	deathSeen(t, 6*time.Second, dead, a, b)
	if strings.Contains(a.logs.String(), "probing only") {
		t.Fatalf("CONFIG failed in Cluster:\n%s", a.logs.String())
	}
	// leave is announced across the cluster's nodes
	id := b.l.id()
	if err := b.l.leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, ttl, "a learns the bye", func() bool { return len(a.r.downsOf(id)) == 1 })
}

func TestLivenessSentinel(t *testing.T) {
	st := redistest.StartSentinel(t)
	o := ClientOptions{Addrs: st.SentinelAddrs(), MasterName: st.MasterName()}
	const ttl = 900 * time.Millisecond
	a := startNode(t, o, "a", ttl, nil)
	b := startNode(t, o, "b", ttl, nil)
	waitRegistered(t, a, b)
	dead := b.l.id()
	b.stop()
	deathSeen(t, 6*time.Second, dead, a)
}
