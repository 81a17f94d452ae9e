// Package redisbus connects the presence hubs of several nodes through
// Redis: it implements presence.Bus.
//
// The bus owns liveness (leases, deaths: liveness.go) and the rooms: the
// publish path (publish.go: a bounded per-room coalescing queue and one
// writer goroutine that pipelines one script per room per round), the
// subscriptions (subscribe.go: own Receive loops, markers, probes), and
// the rooms loop (rooms.go, watch.go: per room and sender seqs, snapshot
// loads, resyncs, anti-entropy), and the reaper's cleanup (reap.go).
// admin.go reads the cluster's rooms, members and nodes for operators
// (from the caller's goroutine, never a loop's), publishes kicks on the
// control channel and reports this node's connection count.
//
// Usage:
//
//	b, err := redisbus.New(redisbus.Config{Redis: opts, Node: "n1"})
//	// hub := presence.New(presence.Config{Bus: b, ...})
//	go b.Run(ctx, hub) // returns after Leave or when ctx is done
//
// Publish, Watch and Unwatch are safe for concurrent use and never block
// on Redis: they take queueMu or cmdMu, tiny mutexes held by nothing that
// calls out. The Hub's methods are called from the bus's goroutines with
// none of the bus's locks held. Lock order: none nests (sub.mu, queueMu,
// cmdMu and liveness's mu are leaves).
//
// An Apply may reach the Hub for a room just after its Unwatch (it was in
// flight): the Hub ignores Apply for rooms it does not watch.
package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// Defaults of Config.
const (
	DefaultPrefix  = "presenced:"
	DefaultNodeTTL = 5 * time.Second
)

// Config configures a Bus. The zero value of every field but Redis and
// Node is usable.
type Config struct {
	Redis ClientOptions // required (Addrs non-empty)
	// Node is the node's name (presence Config.Node); required; no '#',
	// '|', '{' or '}'.
	Node string
	// Prefix of every key and channel; default DefaultPrefix; no '{' or '}'.
	Prefix string
	// NodeTTL is the lease TTL; default DefaultNodeTTL; renewed every NodeTTL/3.
	NodeTTL time.Duration
	// NoKeyspaceEvents: do not CONFIG SET notify-keyspace-events (probing only).
	NoKeyspaceEvents bool
	// WatchTimeout bounds loading a watched room before Hub.Loaded is
	// called anyway (the rest follows as Apply). Give the Hub's
	// (presence.Config.WatchTimeout); default presence.DefaultWatchTimeout.
	WatchTimeout time.Duration
	// Events, when set, receives the rooms' membership transitions
	// (webhooks): the room's write script decides them in Redis, so each
	// is given to exactly one node's Events (docs/webhooks.md). Default
	// nil: none are computed.
	Events presence.Events
	// LeaveGrace is how long a dead node's members stay members for
	// Events (the Hub's presence.Config.LeaveGrace); default
	// presence.DefaultLeaveGrace.
	LeaveGrace time.Duration
	// Addr is advertised in the registration info (optional).
	Addr string
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer for the metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Hub is what the bus calls on the presence hub (presence.Hub implements
// it). The bus calls it from its own goroutines, holding none of its locks.
type Hub interface {
	// Apply: node's (an incarnation id) holdings of room changed; full
	// replaces node's whole part of room.
	Apply(room, node string, hs []presence.Holding, full bool)
	// Loaded: the room's remote holdings are loaded (or WatchTimeout
	// passed): the first syncs may go.
	Loaded(room string)
	// NodeDown: node is dead: members held only by it get leave grace.
	NodeDown(node string)
	// Republish: the Hub's next flush of room ("" every room) calls
	// Publish(room, all local holdings, true).
	Republish(room string)
	// Disconnect closes user's connections on this node with code (an
	// operator's request, maybe from another node); their memberships
	// end without leave grace for 4100-4199 and keep it for 4000-4099
	// (a code inviting a reconnect). It returns how many closes it
	// started, how many draining connections it took over and, for
	// 4100-4199, how many memberships held only for a leave grace it
	// ended (including those of a node that left or died).
	Disconnect(user string, code wire.CloseCode) (closed, draining, held int)
	// NodeInfo reports this node's open connections (Conns), written to
	// Redis for the other nodes' node lists.
	NodeInfo() presence.NodeInfo
}

// Bus is a presence.Bus over Redis.
type Bus struct {
	cfg     Config                // static
	k       keys                  // static
	live    redis.UniversalClient // static: liveness only
	data    redis.UniversalClient // static: rooms, scripts, Pub/Sub
	cluster bool                  // static: data is a Cluster client (SPUBLISH/SSUBSCRIBE)
	log     *slog.Logger          // static
	m       *metrics              // static
	lv      *liveness             // static

	// Tunables, static after New (tests shorten them before Run).
	maxQueued   int             // rooms queued for publishing
	recvQueue   int             // received messages queued for the rooms loop
	maxBuffered int             // messages buffered per room during a load
	probeQuiet  time.Duration   // a quiet subscription is probed after this
	probeWait   time.Duration   // ... and recreated when the probe is not back after this
	antiEntropy time.Duration   // period of the seq comparison of watched rooms
	loaders     int             // concurrent room loads
	sweepEvery  time.Duration   // with Events: period of the pending releases' sweep
	sweepLate   time.Duration   // ... which takes those due this long ago (the reaper's go first)
	rcEvery     time.Duration   // period of the registry check and, with Events, the membership reconcile
	rcCount     int             // rooms per partition per reconcile round (SSCAN COUNT)
	rcPage      int             // members of a room per reconcileScript call (SSCAN COUNT)
	reapHook    func(id string) // tests: called before reap takes the lock

	hub     Hub           // set by Run before any goroutine starts
	running atomic.Bool   // Run was called
	left    chan struct{} // closed by Leave
	stopped chan struct{} // closed when Run returns
	leaveMu sync.Once

	q publishQueue

	cmdMu    sync.Mutex
	cmds     []command           // guarded by cmdMu: for the rooms loop, in order
	overflow map[string]struct{} // guarded by cmdMu: rooms whose messages were dropped
	cmdKick  chan struct{}       // cap 1
	kicks    chan string         // peers' "kick" messages, for kicker (admin.go); cap kickQueue
	scanCap  int                 // static: MaxScanRooms (smaller in tests)

	recvq    chan event    // bounded: receive loops -> rooms loop
	jobs     chan fetchJob // rooms loop -> loaders
	results  chan fetchResult
	flushReq chan chan struct{} // Leave -> writer
}

var (
	_ presence.Bus = (*Bus)(nil)
	_ Hub          = (*presence.Hub)(nil)
)

// New builds the bus and its clients; it does no I/O.
func New(cfg Config) (*Bus, error) {
	if len(cfg.Redis.Addrs) == 0 {
		return nil, errors.New("redisbus: Config.Redis.Addrs is empty")
	}
	if cfg.Node == "" || strings.ContainsAny(cfg.Node, "#|{}") {
		return nil, fmt.Errorf("redisbus: Config.Node %q: must be non-empty, without '#', '|', '{' or '}'", cfg.Node)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, fmt.Errorf("redisbus: Config.Prefix %q contains '{' or '}'", cfg.Prefix)
	}
	if cfg.NodeTTL <= 0 {
		cfg.NodeTTL = DefaultNodeTTL
	}
	if cfg.LeaveGrace <= 0 {
		cfg.LeaveGrace = presence.DefaultLeaveGrace
	}
	if cfg.WatchTimeout <= 0 {
		cfg.WatchTimeout = presence.DefaultWatchTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("redisbus: register metrics: %w", err)
	}
	live, data, err := newClients(cfg.Redis, cfg.NodeTTL)
	if err != nil {
		return nil, err
	}
	_, cluster := data.(*redis.ClusterClient)
	b := &Bus{
		cfg: cfg, k: keys{prefix: cfg.Prefix}, live: live, data: data, cluster: cluster,
		log: cfg.Logger, m: m,
		maxQueued: 65536, recvQueue: 1024, maxBuffered: 10000,
		probeQuiet: 2 * time.Second, probeWait: 2 * time.Second, antiEntropy: 30 * time.Second,
		loaders: 4, sweepEvery: 5 * time.Second, sweepLate: 30 * time.Second,
		rcEvery: 10 * time.Second, rcCount: 64, rcPage: rcPage,
		left:     make(chan struct{}),
		stopped:  make(chan struct{}),
		overflow: map[string]struct{}{},
		cmdKick:  make(chan struct{}, 1),
		kicks:    make(chan string, kickQueue),
		scanCap:  MaxScanRooms,
		jobs:     make(chan fetchJob),
		results:  make(chan fetchResult),
		flushReq: make(chan chan struct{}),
	}
	b.q.init()
	b.lv = newLiveness(live, b.k, livenessConfig{
		node: cfg.Node, ttl: cfg.NodeTTL, noEvents: cfg.NoKeyspaceEvents, addr: cfg.Addr, db: cfg.Redis.DB,
		webhooks: cfg.Events != nil,
	}, b, cfg.Logger, m)
	b.lv.onKick = b.queueKick
	return b, nil
}

// Run runs liveness, the writer, the rooms loop and the subscriptions
// until Leave or ctx is done; it joins them all and closes the clients
// before it returns. It runs once.
func (b *Bus) Run(ctx context.Context, hub Hub) error {
	if hub == nil {
		return errors.New("redisbus: Run: nil Hub")
	}
	if b.running.Swap(true) {
		return errors.New("redisbus: Run called twice")
	}
	b.hub = hub
	b.recvq = make(chan event, b.recvQueue)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { b.lv.run(ctx) })
	wg.Go(func() { b.writer(ctx) })
	wg.Go(func() { b.reportConns(ctx) })
	wg.Go(func() { b.kicker(ctx) })
	if b.cfg.Events != nil {
		wg.Go(func() { b.sweeper(ctx) })
	}
	wg.Go(func() { b.reconciler(ctx) })
	for range b.loaders {
		wg.Go(func() { b.loader(ctx) })
	}
	wg.Go(func() { newRoomsLoop(b, &wg).run(ctx) })
	select {
	case <-ctx.Done():
	case <-b.left:
	}
	cancel()
	wg.Wait()
	close(b.stopped)
	return errors.Join(b.data.Close(), b.live.Close())
}

// Up reports whether the lease is currently held.
func (b *Bus) Up() bool { return b.lv.up() }

// ID is the current incarnation id.
func (b *Bus) ID() string { return b.lv.id() }

// Leave ends the node gracefully, after the hub's drain: it writes what
// is queued, announces the end (peers act at once), removes its room keys
// (with Events: leaves them to a peer's reaper, unless none reaps:
// leaveEvents) and makes Run return.
func (b *Bus) Leave(ctx context.Context) error {
	var err error
	if b.running.Load() {
		req := make(chan struct{})
		select {
		case b.flushReq <- req:
			select {
			case <-req:
			case <-ctx.Done():
			}
		case <-b.stopped:
		case <-ctx.Done():
		}
	}
	id := b.selfID()
	err = b.lv.leave(ctx)
	switch {
	case id == "":
	case b.cfg.Events == nil:
		// Best effort within ctx, without the reaper's lock: the peers
		// told of the end reap too (under the lock), and deleting twice
		// is harmless.
		if rerr := b.reapOnce(ctx, id, map[string][]string{}); rerr != nil {
			b.m.errors.WithLabelValues("reap").Inc()
		}
	default:
		b.leaveEvents(ctx, id)
	}
	b.leaveMu.Do(func() { close(b.left) })
	return err
}

// selfID is the registered incarnation id, "" before the first registration.
func (b *Bus) selfID() string { return b.lv.id() }

// isOwn: id is an incarnation of this process (its messages and keys are
// never applied here).
func (b *Bus) isOwn(id string) bool { return b.lv.own(id) }

// Publish queues the room's changed (or, full, all) local holdings; it
// never blocks.
func (b *Bus) Publish(room string, hs []presence.Holding, full bool) {
	if b.q.put(room, hs, full, b.maxQueued) {
		return
	}
	b.m.drops.Inc()
}

// Watch starts loading and following the room's remote holdings.
func (b *Bus) Watch(room string) { b.command(command{op: opWatch, room: room}) }

// Unwatch stops following the room.
func (b *Bus) Unwatch(room string) { b.command(command{op: opUnwatch, room: room}) }

// registered implements livenessEvents.
func (b *Bus) registered(id string, fresh bool) {
	b.q.kickWriter()
	b.command(command{op: opRegistered, room: id, fresh: fresh})
}

// down implements livenessEvents.
func (b *Bus) down(id string, how string, reaper bool) {
	b.command(command{op: opDown, room: id, old: how, fresh: reaper})
}

// lost implements livenessEvents: nothing in the Hub changes while Redis
// is away (remote members freeze, nobody is declared dead).
func (b *Bus) lost(up bool) {
	b.log.Info("redisbus: lease", "up", up)
}

type opKind int

const (
	opWatch opKind = iota
	opUnwatch
	opRegistered // room: new id, fresh
	opDown       // room: dead id, old: how, fresh: I am its reaper
)

// command is a request for the rooms loop.
type command struct {
	op    opKind
	room  string
	old   string
	fresh bool
}

func (b *Bus) command(c command) {
	b.cmdMu.Lock()
	b.cmds = append(b.cmds, c)
	b.cmdMu.Unlock()
	select {
	case b.cmdKick <- struct{}{}:
	default:
	}
}

// takeCommands returns the queued commands and overflowed rooms.
func (b *Bus) takeCommands() ([]command, []string) {
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	cs := b.cmds
	b.cmds = nil
	var ov []string
	for r := range b.overflow {
		ov = append(ov, r)
	}
	clear(b.overflow)
	return cs, ov
}

// noteOverflow records that a message of room was dropped.
func (b *Bus) noteOverflow(room string) {
	b.cmdMu.Lock()
	b.overflow[room] = struct{}{}
	b.cmdMu.Unlock()
	select {
	case b.cmdKick <- struct{}{}:
	default:
	}
}

// group is the subscription group of room: its partition in Cluster (one
// sharded PubSub per partition), else 0 (one PubSub for every room).
func (b *Bus) group(room string) int {
	if b.cluster {
		return partition(room)
	}
	return 0
}

// publishCmd is the publish command for room channels.
func (b *Bus) publishCmd() string {
	if b.cluster {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// every runs fn every d until ctx is done (the first run after d).
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// retryPause waits *backoff or until ctx is done (false), then doubles
// *backoff up to 5 s: the pause between tries of the reaper and of the
// releases it leads to.
func retryPause(ctx context.Context, backoff *time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, 5*time.Second)
	return true
}
