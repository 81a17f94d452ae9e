package presence

import (
	"bytes"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// Regression tests for the review fixes of commit "presence: monotonic hub
// clock ...". Each fails on the code before that commit.

// TestRegressFarExpiry: a "never expires" token (exp in year 9999, beyond
// what unix nanoseconds hold) is no expiry: no refresh, no 4003, whether it
// comes with hello or with a later auth.
func TestRegressFarExpiry(t *testing.T) {
	far := time.Unix(253402300799, 0) // 9999-12-31T23:59:59Z
	tests := []struct {
		name  string
		hello string // the hello token; "far" expires in year 9999, else in 90 s
		auth  string // "" none; else the token of an auth right after welcome
	}{
		{name: "hello", hello: "far"},
		{name: "auth", hello: "short", auth: "far"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				auth := authFunc(func(token string) (Identity, error) {
					if token == "far" {
						return Identity{User: "alice", Expires: far}, nil
					}
					return Identity{User: "alice", Expires: time.Now().Add(90 * time.Second)}, nil
				})
				refreshes := &counter{}
				e := startHub(t, Config{Auth: auth, HeartbeatInterval: time.Second, HeartbeatTimeout: time.Second,
					AuthGrace: time.Second, RefreshBefore: time.Minute, Metrics: Metrics{Refreshes: refreshes}})
				c := open(t, e.h, "alice")
				c.send(`{"t":"hello","v":1,"token":%q}`, tt.hello)
				c.expect("welcome")
				if tt.auth != "" {
					c.send(`{"t":"auth","id":1,"token":%q}`, tt.auth)
					c.expect("ack")
				}
				// Five minutes of deadlines, the client answering pings.
				start := time.Now()
				for time.Since(start) < 5*time.Minute {
					c.fire()
					if got := c.sink.closeCodes(); len(got) != 0 {
						t.Fatalf("closed %v after %v, want no close", got, time.Since(start))
					}
					for _, ev := range c.events() {
						if ev.T != wire.TPing {
							t.Fatalf("got %s after %v, want only pings (no refresh)", ev.T, time.Since(start))
						}
					}
					c.send(`{"t":"pong","ts":1}`)
				}
				if tt.auth != "" && refreshes.value() != 1 {
					t.Errorf("Refreshes = %v, want 1", refreshes.value())
				}
				c.s.HandleClose(endNormal)
			})
		})
	}
}

// rgDecode decodes one raw frame (the default Frame is the payload).
func rgDecode(t *testing.T, fr []byte) wire.Event {
	t.Helper()
	var ev wire.Event
	if err := wire.DecodeEvent(fr, &ev); err != nil {
		t.Fatalf("%v: %s", err, fr)
	}
	return ev
}

// TestRegressSyncFrameCached: the sync of one room version is encoded once
// and the same bytes (the same backing array) go to every sync of that
// version; a new version gets a new frame, and an old frame is never
// overwritten (sinks keep references to it).
func TestRegressSyncFrameCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true})
		alice := dial(t, e.h, "alice")
		alice.join("r", 1, `{"meta":{"name":"Alice"}}`)
		bob := dial(t, e.h, "bob")
		bob.join("r", 1, `{"status":"away"}`)
		e.tick()
		alice.events()
		bob.events()
		// syncCmd sends a sync command and returns the raw sync frame.
		syncCmd := func(c *client, id int) []byte {
			t.Helper()
			c.send(`{"t":"sync","id":%d,"room":"r"}`, id)
			frs := c.sink.take()
			if len(frs) != 2 || rgDecode(t, frs[0]).T != wire.TAck || rgDecode(t, frs[1]).T != wire.TSync {
				t.Fatalf("%s: sync command answered with %d frames %q, want ack and sync", c.name, len(frs), frs)
			}
			return frs[1]
		}
		a1 := syncCmd(alice, 2)
		saved := bytes.Clone(a1)
		a2 := syncCmd(alice, 3)
		b1 := syncCmd(bob, 2)
		if !bytes.Equal(a1, a2) || !bytes.Equal(a1, b1) {
			t.Fatalf("syncs of one version differ:\n%s\n%s\n%s", a1, a2, b1)
		}
		if &a1[0] != &a2[0] || &a1[0] != &b1[0] {
			t.Errorf("syncs of one version are separate encodings (%p, %p, %p), want one frame shared", &a1[0], &a2[0], &b1[0])
		}

		// A change: the next sync is a new frame at the new cursor.
		bob.send(`{"t":"set","id":3,"room":"r","state":{"status":"busy"}}`)
		bob.expect("ack")
		e.tick()
		cur := alice.expect("diff")[0].Cur
		a3 := syncCmd(alice, 4)
		if &a3[0] == &a1[0] || bytes.Equal(a3, a1) {
			t.Errorf("sync after a change reuses the old frame: %s", a3)
		}
		if ev := rgDecode(t, a3); ev.Cur != cur {
			t.Errorf("sync after a change at %s, want %s", ev.Cur, cur)
		}
		if !bytes.Equal(a1, saved) {
			t.Errorf("a sent sync frame was modified:\n%s\nwas\n%s", a1, saved)
		}
	})
}

// TestRegressResumeBound: a resume whose net change since the cursor
// names more than ListLimit members gets a sync, even when the room never
// held more than ListLimit members (users came and went).
func TestRegressResumeBound(t *testing.T) {
	const limit = 3
	tests := []struct {
		name     string
		visitors int // users who join then leave while bob is away, one version each
		wantDiff bool
	}{
		{name: "at the limit", visitors: limit, wantDiff: true},
		{name: "one over the limit", visitors: limit + 1},
		{name: "far over the limit", visitors: 4 * limit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				successes := &counter{}
				e := startHub(t, Config{Insecure: true, ListLimit: limit, LeaveGrace: time.Minute,
					Metrics: Metrics{ResumeSuccesses: successes}})
				alice := dial(t, e.h, "alice")
				alice.join("r", 1, "")
				bob := dial(t, e.h, "bob")
				bob.join("r", 1, "")
				e.tick()
				alice.events()
				bob.events()
				saved := bob.views["r"].cur
				bob.s.HandleClose(endLost) // he stays for the grace: alice, bob and one visitor at most
				for i := range tt.visitors {
					v := dial(t, e.h, fmt.Sprintf("v%d", i))
					v.join("r", 1, "")
					e.tick()
					v.send(`{"t":"leave","id":2,"room":"r"}`)
					e.tick()
				}
				if got := e.h.Stats().Members; got != 2 {
					t.Fatalf("Members = %d, want 2", got)
				}
				b2 := open(t, e.h, "bob2")
				b2.views = bob.views
				b2.send(`{"t":"hello","v":1,"user":"bob","resume":{"r":%q}}`, saved)
				evs := b2.events()
				if len(evs) != 2 || evs[0].T != wire.TWelcome {
					t.Fatalf("after hello: %v, want welcome and a diff or sync", typesOf(evs))
				}
				want := wire.TSync
				if tt.wantDiff {
					want = wire.TDiff
				}
				if ev := evs[1]; ev.T != want || ev.T == wire.TDiff && ev.From != saved {
					t.Errorf("resume after %d visitors: %s from %q, want a %s", tt.visitors, ev.T, ev.From, want)
				}
				if wantN := map[bool]float64{true: 1, false: 0}[tt.wantDiff]; successes.value() != wantN {
					t.Errorf("ResumeSuccesses = %v, want %v", successes.value(), wantN)
				}
				b2.checkView(e.h, "r")
			})
		})
	}
}

// TestRegressStaleSlowStreak: a failed delivery long after the previous
// one starts a new streak: 4002 takes SlowTimeout of consecutive failures,
// not two failures SlowTimeout apart.
func TestRegressStaleSlowStreak(t *testing.T) {
	const slow = time.Second
	tests := []struct {
		name      string
		staysFull bool // after the second failure the outbox stays full
	}{
		{name: "a single failure long after another is not slow"},
		{name: "a new streak closes SlowTimeout after its own start", staysFull: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				slowCloses := &counter{}
				e := startHub(t, Config{Insecure: true, SlowTimeout: slow, Metrics: Metrics{SlowCloses: slowCloses}})
				alice := dial(t, e.h, "alice")
				alice.join("r", 1, "")
				alice.join("q", 2, "")
				bob := dial(t, e.h, "bob")
				bob.join("r", 1, "")
				bob.join("q", 2, "")
				e.tick()
				alice.events()
				bob.events()

				// One failed delivery in r; alice leaves r, so nothing retries it.
				alice.sink.setFull(true)
				bob.send(`{"t":"set","id":3,"room":"r","state":{"status":"away"}}`)
				e.tick()
				alice.sink.setFull(false)
				alice.send(`{"t":"leave","id":3,"room":"r"}`)
				alice.expect("ack")
				e.sleep(10 * slow)
				alice.expectNone()

				// Ten seconds later, one failed delivery in q.
				alice.sink.setFull(true)
				bob.send(`{"t":"set","id":4,"room":"q","state":{"status":"busy"}}`)
				e.tick()
				if got := alice.sink.closeCodes(); len(got) != 0 {
					t.Fatalf("closed %v by one failure %v after an earlier one, want no close", got, 10*slow)
				}
				if !tt.staysFull {
					alice.sink.setFull(false)
					e.tick()
					alice.expect("sync")
					alice.checkView(e.h, "q")
					e.ticks(20)
					if got := alice.sink.closeCodes(); len(got) != 0 || slowCloses.value() != 0 {
						t.Errorf("closes %v, SlowCloses %v; want none", got, slowCloses.value())
					}
					return
				}
				e.sleep(slow - e.h.cfg.Tick)
				if got := alice.sink.closeCodes(); len(got) != 0 {
					t.Fatalf("closed %v before SlowTimeout of the new streak", got)
				}
				e.tick()
				if got := alice.sink.closeCodes(); !slices.Equal(got, []wire.CloseCode{wire.CloseSlowConsumer}) {
					t.Errorf("closes %v SlowTimeout after the new streak began, want [4002]", got)
				}
				alice.s.HandleClose(ConnEnd{Cause: EndClosed, Code: wire.CloseSlowConsumer}) // the transport reports the close
				if slowCloses.value() != 1 {
					t.Errorf("SlowCloses = %v, want 1", slowCloses.value())
				}
			})
		})
	}
}

// TestRegressGraceSeveralConnections: a lost connection's grace holds even
// when the user's other connection in the room remains, then leaves: the
// member waits for the lost one for LeaveGrace.
func TestRegressGraceSeveralConnections(t *testing.T) {
	const grace = 2 * time.Second
	tests := []struct {
		name       string
		bLeavesAt  time.Duration // when connection B leaves explicitly, after A's loss
		rejoinAt   time.Duration // 0: no new connection; else when it joins, after A's loss
		wantObs    [][]string    // the observer's diffs over 5 s
		wantLeftAt time.Duration // when the observer sees alice leave (half a tick after the flush)
	}{
		{
			name:       "B leaves right after A is lost",
			wantObs:    [][]string{{"leave alice"}},
			wantLeftAt: grace + 100*time.Millisecond,
		},
		{
			name:     "B leaves right after A is lost, alice reconnects within the grace",
			rejoinAt: grace / 2,
		},
		{
			name:       "B leaves after the grace is over: at once",
			bLeavesAt:  3 * time.Second,
			wantObs:    [][]string{{"leave alice"}},
			wantLeftAt: 3*time.Second + 100*time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := startHub(t, Config{Insecure: true, LeaveGrace: grace, Tick: 100 * time.Millisecond})
				obs := dial(t, e.h, "obs")
				obs.join("r", 1, "")
				a := dial(t, e.h, "alice")
				a.join("r", 1, `{"status":"online"}`)
				b := dial(t, e.h, "alice")
				b.join("r", 1, "")
				e.tick()
				obs.events()
				b.events()

				lost := time.Now()
				a.s.HandleClose(endLost)
				var got [][]string
				var leftAt time.Duration
				for range 50 { // 5 s
					since := time.Since(lost)
					if since == tt.bLeavesAt {
						b.send(`{"t":"leave","id":2,"room":"r"}`)
						b.expect("ack")
					}
					if tt.rejoinAt != 0 && since == tt.rejoinAt {
						c := dial(t, e.h, "alice")
						c.join("r", 1, "")
					}
					e.tick()
					for _, d := range obs.diffs() {
						got = append(got, d)
						if slices.Contains(d, "leave alice") {
							leftAt = time.Since(lost)
						}
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.wantObs) {
					t.Errorf("observer's diffs %q, want %q", got, tt.wantObs)
				}
				if leftAt != tt.wantLeftAt {
					t.Errorf("alice's leave seen %v after A's loss, want %v", leftAt, tt.wantLeftAt)
				}
				obs.checkView(e.h, "r")
			})
		})
	}
}

// TestRegressNoDoubleSync: a sync command (or a join of a joined room)
// answers with exactly one sync, also when a failed delivery had marked
// the room for a sync that the command's sync makes unnecessary.
func TestRegressNoDoubleSync(t *testing.T) {
	tests := []struct {
		name     string
		failed   bool   // a diff to alice failed just before
		pending  bool   // bob's change is not published yet when alice asks
		cmd      string // alice's command, id 9
		wantNow  []string
		wantNext []string // after the next tick
	}{
		{name: "sync, nothing pending", cmd: `{"t":"sync","id":9,"room":"r"}`, wantNow: []string{"ack", "sync"}},
		{name: "sync after a failed delivery", failed: true, cmd: `{"t":"sync","id":9,"room":"r"}`, wantNow: []string{"ack", "sync"}},
		{name: "join again after a failed delivery", failed: true, cmd: `{"t":"join","id":9,"room":"r"}`, wantNow: []string{"ack", "sync"}},
		{name: "sync with a change pending", pending: true, cmd: `{"t":"sync","id":9,"room":"r"}`, wantNow: []string{"ack"}, wantNext: []string{"sync"}},
		{name: "sync after a failed delivery, a change pending", failed: true, pending: true, cmd: `{"t":"sync","id":9,"room":"r"}`, wantNow: []string{"ack"}, wantNext: []string{"sync"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := startHub(t, Config{Insecure: true})
				alice := dial(t, e.h, "alice")
				alice.join("r", 1, "")
				bob := dial(t, e.h, "bob")
				bob.join("r", 1, "")
				e.ticks(3)
				alice.events()
				bob.events()
				if tt.failed {
					alice.sink.setFull(true)
					bob.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
					e.tick()
					alice.sink.setFull(false)
				}
				if tt.pending {
					bob.send(`{"t":"set","id":3,"room":"r","state":{"status":"busy"}}`)
				}
				alice.send(tt.cmd)
				alice.expect(tt.wantNow...)
				e.tick()
				alice.expect(tt.wantNext...)
				e.ticks(5)
				alice.expectNone()
				alice.checkView(e.h, "r")
				r := e.h.lookupRoom("r")
				r.mu.Lock()
				defer r.mu.Unlock()
				if len(r.owed) != 0 || alice.s.findSub("r").owed {
					t.Errorf("room owes %d syncs, alice's sub owed %v; want 0, false", len(r.owed), alice.s.findSub("r").owed)
				}
			})
		})
	}
}

// TestRegressPartialVersionsKeepNoChanges: versions that are partial (the
// room over ListLimit, or crossing it) are never resumed across, so the
// history keeps no change list for them.
func TestRegressPartialVersionsKeepNoChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true, ListLimit: 3})
		var cs []*client
		for i := range 4 {
			c := dial(t, e.h, fmt.Sprintf("u%d", i))
			c.join("r", 1, "")
			cs = append(cs, c)
		}
		e.tick() // crosses the limit
		cs[0].send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		e.tick() // over the limit
		cs[3].send(`{"t":"leave","id":2,"room":"r"}`)
		e.tick() // crosses back
		cs[0].send(`{"t":"set","id":3,"room":"r","state":{"status":"busy"}}`)
		e.tick() // within the limit

		r := e.h.lookupRoom("r")
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.history) != 4 {
			t.Fatalf("history holds %d versions, want 4", len(r.history))
		}
		for i, v := range r.history[:3] {
			if !v.partial || v.changes != nil {
				t.Errorf("version %d (seq %d): partial %v with %d changes (nil %v), want partial with a nil change list",
					i, v.seq, v.partial, len(v.changes), v.changes == nil)
			}
		}
		if v := r.history[3]; v.partial || len(v.changes) != 1 || v.changes[0].user != "u0" {
			t.Errorf("last version: partial %v, changes %+v; want a full version with u0's update", v.partial, v.changes)
		}
	})
}

// TestRegressFloodWindowAtHubStart: on the hub's clock (which starts at
// zero), the first refusal starts the first one-second window, as it did on
// the wall clock: a flood that starts right at the hub's start is closed
// 4029 no sooner than FloodSeconds after its first refusal, and one that
// ends before is not closed at all.
func TestRegressFloodWindowAtHubStart(t *testing.T) {
	const floodSeconds = 3
	tests := []struct {
		name      string
		burst     int
		after     time.Duration // the flood goes on this long after its first refusal
		wantClose bool
	}{
		{name: "default burst, FloodSeconds of refusals", after: floodSeconds*time.Second - 10*time.Millisecond},
		{name: "burst 1, FloodSeconds of refusals", burst: 1, after: floodSeconds*time.Second - 10*time.Millisecond},
		{name: "default burst, longer", after: (floodSeconds + 1) * time.Second, wantClose: true},
		{name: "burst 1, longer", burst: 1, after: (floodSeconds + 1) * time.Second, wantClose: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := startHub(t, Config{Insecure: true, Rate: 20, Burst: tt.burst, FloodSeconds: floodSeconds})
				c := dial(t, e.h, "alice")
				if hub := time.Duration(e.h.now()); hub >= 100*time.Millisecond {
					t.Fatalf("flood starts %v after the hub, want right at its start", hub)
				}
				var refused time.Time // the first refusal
				var closedAfter time.Duration
				for i := 0; refused.IsZero() || time.Since(refused) <= tt.after; i++ {
					c.send(`{"t":"ping","ts":%d}`, i+1) // 100 per second: five times the rate
					if closedAfter == 0 && c.lastClose() != 0 {
						closedAfter = time.Since(refused)
					}
					for _, ev := range c.events() {
						if refused.IsZero() && ev.T == wire.TErr && ev.Code == wire.ErrCodeRateLimited {
							refused = time.Now()
						}
					}
					time.Sleep(10 * time.Millisecond)
				}
				switch got := c.lastClose(); {
				case !tt.wantClose && got != 0:
					t.Errorf("closed %v %v after the first refusal, want no close within %v", got, closedAfter, tt.after)
				case tt.wantClose && got != wire.CloseRateLimited:
					t.Errorf("close %v, want 4029 within %v of the first refusal", got, tt.after)
				case tt.wantClose && closedAfter < floodSeconds*time.Second:
					t.Errorf("closed 4029 %v after the first refusal, want no sooner than %ds", closedAfter, floodSeconds)
				}
				c.s.HandleClose(endLost)
			})
		})
	}
}

// slowSink is a fakeSink whose Send takes d once slow is set, as a large
// room's fan-out does (each Send may be a write system call): it makes
// ticks longer than Config.Tick. (Only the hub's flushers may call it
// then: a test goroutine waiting on the room lock it sleeps under would
// stop the synctest clock.)
type slowSink struct {
	fakeSink
	d    time.Duration
	slow atomic.Bool
}

func (s *slowSink) Offer(frame []byte) error { return s.Send(frame) }

func (s *slowSink) Send(frame []byte) error {
	if s.slow.Load() {
		time.Sleep(s.d)
	}
	return s.fakeSink.Send(frame)
}

// TestRegressSlowStreakSlowTicks: when ticks take longer than Tick (the
// scheduler then starts the next one as soon as the last ends), the
// deliveries to a connection whose outbox stays full are still
// consecutive failures: it is closed 4002 after SlowTimeout.
func TestRegressSlowStreakSlowTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const slow = time.Second
		e := startHub(t, Config{Insecure: true, SlowTimeout: slow, Tick: 20 * time.Millisecond})
		alice := dial(t, e.h, "alice")
		alice.join("r", 1, "")
		bob := dial(t, e.h, "bob")
		bob.join("r", 1, "")
		bob.join("big", 2, "")
		// A subscriber of "big" whose every Send takes 100 ms (a tick of
		// tens of milliseconds is what the package doc expects of a very
		// large room), and whose outbox is full too, so that "big" is
		// retried, and a tick takes 100 ms, every tick.
		hs := &slowSink{d: 100 * time.Millisecond}
		heavy := e.h.Open(hs)
		heavy.HandleText([]byte(`{"t":"hello","v":1,"user":"heavy"}`))
		heavy.HandleText([]byte(`{"t":"join","id":1,"room":"big"}`))
		e.ticks(5)
		alice.events()
		bob.events()

		alice.sink.setFull(true)
		hs.setFull(true)
		bob.send(`{"t":"set","id":3,"room":"r","state":{"status":"away"}}`)
		bob.send(`{"t":"set","id":4,"room":"big","state":{"status":"away"}}`)
		bob.expect("ack", "ack")
		hs.slow.Store(true)
		start := time.Now()
		for time.Since(start) < 3*slow && alice.lastClose() == 0 {
			e.sleep(10 * time.Millisecond)
		}
		hs.slow.Store(false)
		if got := alice.lastClose(); got != wire.CloseSlowConsumer {
			t.Errorf("alice's outbox full for %v, every delivery failing, ticks of 100 ms: close %v, want 4002 after %v", time.Since(start), got, slow)
		}
	})
}
