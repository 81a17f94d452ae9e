package redisbus

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed liveness.lua
var livenessLua string

// tombTTL is how long a dead id stays tombed in Redis (and remembered here).
const tombTTL = time.Hour

// livenessConfig is what liveness needs of Config.
type livenessConfig struct {
	node     string        // the node's name; ids are node#epoch
	ttl      time.Duration // the lease TTL; a round every ttl/3
	noEvents bool          // do not CONFIG SET notify-keyspace-events; expired events are not subscribed
	addr     string        // advertised in the registration info
	webhooks bool          // advertised in the registration info: this node produces webhook events
	db       int           // the database (for the expired events channel)
}

// livenessEvents receive what liveness learns, always on liveness's loop
// goroutine, never under its locks.
type livenessEvents interface {
	// registered: I hold a lease as id. fresh: a new incarnation (start,
	// reaped, Redis lost its data): republish everything, resync watched
	// rooms. Not fresh: renewals succeed again after an outage under the
	// same id (sent just before lost(true)).
	registered(id string, fresh bool)
	// down: peer id is dead (how: DeathProbe, DeathEvent, DeathAnnounce),
	// reported once per id. reaper: I must delete its keys.
	down(id string, how string, reaper bool)
	// lost: renewals fail (up=false, the lease may have expired) or
	// succeed again (up=true). Sent on changes only; the first successful
	// registration sends lost(true).
	lost(up bool)
}

// liveness holds this node's lease and decides, with its peers, who is
// dead: one script per round (liveness.lua) on the {n} slot.
//
// Lock order: roundMu, then mu. Events are emitted holding neither.
type liveness struct {
	c      redis.UniversalClient // static: the live client
	k      keys                  // static
	cfg    livenessConfig        // static
	ev     livenessEvents        // static
	log    *slog.Logger          // static
	m      *metrics              // static
	script *redis.Script         // static
	period time.Duration         // static: ttl/3
	start  time.Time             // static: the clock base of lastOK
	info   string                // static: the registration info
	// firstTick is the delay of the first periodic round after run starts
	// (random in [0, period)); static, replaced by tests.
	firstTick func(period time.Duration) time.Duration

	// onKick handles an operator's "kick" on the control channel; set by
	// the Bus after newLiveness, static afterwards. Called on the
	// subscription's goroutine, holding no lock.
	onKick func(msg string)

	kick chan string // run a round now, with how a death it finds counts as (cap 1)
	ctlc chan string // ctl messages for the loop

	lastOK   atomic.Int64 // since start, ns: when the last successful round was sent; 0 = none
	suspects atomic.Int64 // rounds that returned SUSPECT (tests, logs)

	roundMu sync.Mutex
	leaving bool // guarded by roundMu: leave ran; no more rounds

	// Owned by the round (under roundMu).
	gen       string          // the dataset id Redis had at my registration; "" = must register
	pending   string          // the id being registered
	prevID    string          // my previous incarnation, retired at registration
	counter   uint64          // the last lease value I tried
	confirmed uint64          // the lease value of my last successful renewal
	missing   []string        // ids found missing at the last round (SUSPECT)
	prevLive  map[string]bool // registered ids at the last successful round
	upState   bool            // the last lost() state sent
	fresh     bool            // registered(id, true) was sent in this round

	mu   sync.Mutex
	me   string               // guarded by mu: my current id ("" before registration)
	ds   string               // guarded by mu: the dataset id (gen) of my registration; "" while registering
	self map[string]bool      // guarded by mu (written by the round): every id this process registered
	live map[string]bool      // guarded by mu: registered at the last round
	dead map[string]time.Time // guarded by mu: known dead ids, when learnt
	// orphans: guarded by mu (written by the round): peers' ids of a
	// dataset Redis lost, and when they are down unless their node
	// registered again (zero: not counting yet); liveness_orphans.go.
	orphans map[string]time.Time
}

func newLiveness(c redis.UniversalClient, k keys, cfg livenessConfig, ev livenessEvents, log *slog.Logger, m *metrics) *liveness {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &liveness{
		c: c, k: k, cfg: cfg, ev: ev, log: log, m: m,
		script:    redis.NewScript(livenessLua),
		period:    cfg.ttl / 3,
		start:     time.Now(),
		info:      cfg.addr + "|" + strconv.FormatInt(time.Now().UnixMilli(), 10) + "|" + webhooksInfo(cfg.webhooks),
		firstTick: func(p time.Duration) time.Duration { return rand.N(p) },
		kick:      make(chan string, 1),
		ctlc:      make(chan string, 64),
		prevLive:  map[string]bool{},
		self:      map[string]bool{},
		live:      map[string]bool{},
		dead:      map[string]time.Time{},
		orphans:   map[string]time.Time{},
	}
}

// run registers at once, then runs a round every ttl/3 (random phase), at
// once on an expired lease event, and handles ctl announcements. It blocks
// until ctx is done; its goroutines are joined before it returns.
func (l *liveness) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.receive(ctx) }()
	defer wg.Wait()

	l.round(ctx, DeathProbe)
	t := time.NewTimer(l.firstTick(l.period))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.round(ctx, DeathProbe)
			t.Reset(l.period)
		case how := <-l.kick:
			l.round(ctx, how)
		case msg := <-l.ctlc:
			l.onCtl(ctx, msg)
		}
	}
}

// id is the current incarnation id ("" before the first registration).
func (l *liveness) id() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.me
}

// own reports whether id is an incarnation of this process (its messages
// and keys are never applied here), safe concurrently.
func (l *liveness) own(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.self[id]
}

// dataset is the dataset id (the gen key) Redis had at this node's
// registration, "" while (re)registering: a read that finds another one
// (or none) read a Redis that lost its data.
func (l *liveness) dataset() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ds
}

// alive: id was registered at the last round and is not known dead since.
func (l *liveness) alive(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live[id] && l.dead[id].IsZero()
}

// up: the lease is held (the last successful renewal was sent within ttl).
func (l *liveness) up() bool {
	ok := l.lastOK.Load()
	return ok != 0 && time.Since(l.start) < time.Duration(ok)+l.cfg.ttl
}

// leave ends this incarnation: publish bye on ctl, delete the lease, tomb
// it, unregister. No round runs after it.
func (l *liveness) leave(ctx context.Context) error {
	l.roundMu.Lock()
	defer l.roundMu.Unlock()
	if l.leaving {
		return nil
	}
	l.leaving = true
	l.lastOK.Store(0)
	l.m.up.Set(0)
	me := l.id()
	if me == "" || l.gen == "" {
		return nil
	}
	err := l.script.Run(ctx, l.c, []string{l.k.gen()}, l.k.live(""), "leave", me, "", "0", "0",
		l.cfg.ttl.Milliseconds(), "", l.cfg.node, "", "", "").Err()
	if err != nil {
		l.m.errors.WithLabelValues("liveness").Inc()
		return fmt.Errorf("redisbus: leave: %w", err)
	}
	return nil
}

// roundResult is the script's answer.
type roundResult struct {
	status                                     string
	reaped, live, suspects, retired, announced []string
	gen                                        string
}

func parseRound(v any) (roundResult, error) {
	var r roundResult
	a, ok := v.([]any)
	if !ok || len(a) == 0 {
		return r, fmt.Errorf("liveness script: unexpected reply %T %v", v, v)
	}
	r.status, _ = a[0].(string)
	if len(a) == 1 {
		return r, nil
	}
	if len(a) != 7 {
		return r, fmt.Errorf("liveness script: reply of %d elements", len(a))
	}
	for i, dst := range []*[]string{&r.reaped, &r.live, &r.suspects, &r.retired, nil, &r.announced} {
		if dst == nil {
			continue
		}
		xs, _ := a[i+1].([]any)
		for _, x := range xs {
			s, _ := x.(string)
			*dst = append(*dst, s)
		}
	}
	r.gen, _ = a[5].(string)
	return r, nil
}

// round runs the script (registering first when needed; once more at
// once after RESET, DEAD or ROLLBACK), then emits what it learnt.
func (l *liveness) round(ctx context.Context, how string) {
	var out []func()
	l.roundMu.Lock()
	if !l.leaving {
		for i := 0; i < 2 && l.roundLocked(ctx, how, &out); i++ {
		}
		l.upLocked(&out)
	}
	l.roundMu.Unlock()
	for _, f := range out {
		f()
	}
}

// roundLocked runs the script once; true: register again at once.
func (l *liveness) roundLocked(ctx context.Context, how string, out *[]func()) bool {
	mode, me := "tick", l.id()
	if l.gen == "" {
		mode = "reg"
		if l.pending == "" {
			l.pending = l.cfg.node + "#" + fmt.Sprintf("%016x", rand.Uint64())
		}
		me = l.pending
	}
	lo := l.confirmed
	if mode == "reg" {
		lo = 0
	}
	l.counter++
	gen := l.gen
	if mode == "reg" {
		gen = fmt.Sprintf("%016x", rand.Uint64())
	}
	sent := time.Since(l.start)
	rctx, cancel := context.WithTimeout(ctx, l.period)
	v, err := l.script.Run(rctx, l.c, []string{l.k.gen()}, l.k.live(""), mode, me, gen,
		strconv.FormatUint(lo, 10), strconv.FormatUint(l.counter, 10), l.cfg.ttl.Milliseconds(),
		l.info, l.cfg.node, l.prevID, strings.Join(l.missing, "\n"), how, l.peersLocked()).Result()
	cancel()
	var r roundResult
	if err == nil {
		r, err = parseRound(v)
	}
	if err != nil {
		if ctx.Err() == nil {
			l.m.errors.WithLabelValues("liveness").Inc()
			l.log.Debug("redisbus: liveness round failed", "mode", mode, "err", err)
		}
		return false
	}
	switch r.status {
	case "RESET", "DEAD", "ROLLBACK":
		l.log.Warn("redisbus: registering again under a new id", "id", me, "why", r.status)
		if r.status == "RESET" {
			l.orphanLocked()
			l.m.resets.Inc()
		}
		l.prevID, l.gen, l.pending, l.missing = me, "", "", nil
		l.mu.Lock()
		l.ds = ""
		l.mu.Unlock()
		return true
	case "OK", "SUSPECT":
	default:
		l.m.errors.WithLabelValues("liveness").Inc()
		l.log.Error("redisbus: liveness script: unknown status", "status", r.status)
		return false
	}
	l.lastOK.Store(int64(sent))
	l.confirmed = l.counter
	if mode == "reg" {
		l.gen, l.pending = r.gen, ""
		l.mu.Lock()
		l.me, l.ds = me, r.gen
		l.self[me] = true
		l.mu.Unlock()
		l.log.Info("redisbus: registered", "id", me)
		l.fresh = true
		*out = append(*out, func() { l.ev.registered(me, true) })
	}
	for _, id := range r.retired {
		l.declareLocked(id, DeathAnnounce, true, out)
	}
	for _, id := range r.reaped {
		l.declareLocked(id, how, true, out)
	}
	l.missing = r.suspects
	if r.status == "SUSPECT" {
		l.suspects.Add(1)
		l.log.Warn("redisbus: more than half the nodes vanished at once: confirming next round", "ids", r.suspects)
	}
	live := make(map[string]bool, len(r.live))
	for _, id := range r.live {
		live[id] = true
	}
	announced := make(map[string]bool, len(r.announced))
	for _, id := range r.announced {
		announced[id] = true
	}
	for id := range l.prevLive {
		if !live[id] && !l.self[id] {
			if announced[id] { // its bye or gone has not reached me yet
				l.declareLocked(id, DeathAnnounce, false, out)
			} else {
				l.declareLocked(id, how, false, out)
			}
		}
	}
	l.prevLive = live
	l.settleOrphansLocked(live, out)
	l.mu.Lock()
	l.live = make(map[string]bool, len(live))
	for id := range live {
		l.live[id] = true
	}
	for id, at := range l.dead {
		if time.Since(at) > tombTTL {
			delete(l.dead, id)
		}
	}
	l.mu.Unlock()
	l.m.nodes.Set(float64(len(live)))
	return false
}

// upLocked sends lost() on a change of the lease state.
func (l *liveness) upLocked(out *[]func()) {
	up, fresh := l.up(), l.fresh
	l.fresh = false
	if up == l.upState {
		return
	}
	l.upState = up
	if up {
		l.m.up.Set(1)
		if !fresh {
			me := l.id()
			l.log.Info("redisbus: lease renewed again", "id", me)
			*out = append(*out, func() { l.ev.registered(me, false) })
		}
		*out = append(*out, func() { l.ev.lost(true) })
		return
	}
	l.m.up.Set(0)
	l.log.Warn("redisbus: lease lost: renewals fail")
	*out = append(*out, func() { l.ev.lost(false) })
}

// peersLocked is the other ids registered at the last round,
// "\n"-separated (the script's ARGV[13]).
func (l *liveness) peersLocked() string {
	var b strings.Builder
	for id := range l.prevLive {
		if !l.self[id] {
			b.WriteString(id)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// declareLocked reports id dead once.
func (l *liveness) declareLocked(id, how string, reaper bool, out *[]func()) {
	l.mu.Lock()
	known := !l.dead[id].IsZero() || id == l.me
	if !known {
		l.dead[id] = time.Now()
		delete(l.live, id)
	}
	l.mu.Unlock()
	delete(l.prevLive, id)
	if known {
		return
	}
	l.m.deaths.WithLabelValues(how).Inc()
	l.log.Info("redisbus: node down", "id", id, "how", how, "reaper", reaper)
	*out = append(*out, func() { l.ev.down(id, how, reaper) })
}
