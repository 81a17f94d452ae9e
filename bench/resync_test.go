package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// BenchmarkResyncLoopLatency measures what a whole-room resync costs the
// other connections of the event loops that serve the room (issue T2b,
// finding 1): while a room of N subscribers (envResyncConns, default
// 10,000, held by load processes) is resynced as a whole on every flush,
// probe connections of this process send one command at a time and time
// its answer. Reported per probe kind (hot-set: a set in the resyncing
// room; ping: a client ping; cold-set: a set in a room of its own):
// p50/p99/max in ms; and deliveries/s (syncs the subscribers received)
// and this process's CPU per delivery (the server's: the subscribers are
// in the load processes; the few changers and probes are not). See
// resyncResult.report and RESULTS.md. The load side is
// resync_load_test.go.
//
//	go test ./bench -run '^$' -bench ResyncLoopLatency -benchtime 1x
func BenchmarkResyncLoopLatency(b *testing.B) {
	cfg := resyncConfig{
		n:    envInt(os.Getenv, envResyncConns, 10000),
		d:    envDurationOr(envResyncTime, 10*time.Second),
		tick: envDurationOr(envResyncTick, 100*time.Millisecond),
	}
	for _, engine := range engines {
		b.Run(engine, func(b *testing.B) {
			runResyncLoop(b, engine, cfg).report(b)
		})
	}
}

// TestResyncLoopSmall runs the resync benchmark with 200 subscribers for
// half a second (a 50 ms tick), so that `go test ./bench` keeps it
// working. It checks behaviour (whole-room resyncs happened and reached
// every subscriber, every probe was answered), never timings.
func TestResyncLoopSmall(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			r := runResyncLoop(t, engine, resyncConfig{n: 200, d: 500 * time.Millisecond, tick: 50 * time.Millisecond})
			t.Logf("%d subscribers: %d syncs (%d to %d each), %d diffs; probes answered: %d hot-set, %d ping, %d cold-set",
				r.counts.conns, r.counts.syncs, r.counts.minSyncs, r.counts.maxSyncs, r.counts.diffs,
				len(r.lat[probeHotSet]), len(r.lat[probePing]), len(r.lat[probeColdSet]))
		})
	}
}

const (
	envResyncConns = "PRESENCED_BENCH_RESYNC_CONNS" // BenchmarkResyncLoopLatency: subscribers; default 10000
	envResyncTime  = "PRESENCED_BENCH_RESYNC_TIME"  // BenchmarkResyncLoopLatency: measured window; default 10s
	envResyncTick  = "PRESENCED_BENCH_RESYNC_TICK"  // BenchmarkResyncLoopLatency: Presence.Tick; default 100ms
)

// The resync experiment's fixed settings.
const (
	resyncRoom = "hot"
	// resyncBudget is Presence.SyncBudget: a sync lists members up to
	// ~512 bytes (it is partial), and a diff that carries one changer
	// update (its meta padded with resyncPad bytes) is over it, so every
	// subscriber is resynced instead of getting the diff.
	resyncBudget = 512
	resyncPad    = 440 // the meta is at most wire.MaxMetaLen (512) bytes
	// resyncSetGap is the time between two changer sets, all changers
	// together: several per tick, so that every flush publishes one.
	resyncSetGap = 20 * time.Millisecond
	// probePause is the most a probe connection waits between two
	// commands (uniformly random, so probes do not lock onto the tick).
	probePause = 10 * time.Millisecond
)

// resyncConfig configures runResyncLoop.
type resyncConfig struct {
	n    int           // subscribers, in load processes
	d    time.Duration // measured window
	tick time.Duration // Presence.Tick; 0 is the default, 100 ms
}

// probeKind is one kind of command the probes time.
type probeKind int

const (
	probeHotSet  probeKind = iota // set in the resyncing room
	probePing                     // a client ping, answered with a pong
	probeColdSet                  // set in a room with only this probe
	probeKinds
)

func (k probeKind) String() string {
	return [...]string{"hot-set", "ping", "cold-set"}[k]
}

// resyncResult is one resync experiment.
type resyncResult struct {
	conns      int
	loops      int // runtime.GOMAXPROCS: the server's epoll loops, changers and probes
	d, tick    time.Duration
	counts     resyncCounts // the subscribers', summed over the load processes
	lat        [probeKinds][]time.Duration
	serverCPU  time.Duration // this process in the window: the server, and the changers and probes (see RESULTS.md)
	clientCPU  time.Duration // the load processes in the window
	machine    machineTimes
	framesSent float64 // presenced_frames_sent_total in the window
	versions   float64 // presenced_diffs_total in the window: versions of every room (hot and the probes' cold rooms)
	sets       int     // changer sets sent in the window
}

func (r resyncResult) report(b *testing.B) {
	c := r.counts
	dels := float64(c.syncs)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.conns), "conns")
	for k := range probeKinds {
		lat := slices.Sorted(slices.Values(r.lat[k]))
		b.ReportMetric(ms(quantile(lat, 0.50)), k.String()+"-p50-ms")
		b.ReportMetric(ms(quantile(lat, 0.99)), k.String()+"-p99-ms")
		b.ReportMetric(ms(quantile(lat, 1)), k.String()+"-max-ms")
		b.ReportMetric(float64(len(lat)), k.String()+"-probes")
	}
	b.ReportMetric(dels/r.d.Seconds(), "deliveries/s")
	b.ReportMetric(float64(r.serverCPU.Nanoseconds())/1e3/dels, "cpu-µs/delivery")
	b.ReportMetric(float64(r.clientCPU.Nanoseconds())/1e3/dels, "client-cpu-µs/delivery")
	b.ReportMetric(float64(r.machine.softirq.Nanoseconds())/1e3/dels, "softirq-µs/delivery")
	b.ReportMetric(100*r.machine.busyShare(), "machine-busy-%")
	// resyncs/tick: whole-room resyncs a subscriber received per tick of
	// the window (the most any one received); 1 means every tick.
	b.ReportMetric(float64(c.maxSyncs)*r.tick.Seconds()/r.d.Seconds(), "resyncs/tick")
	// sync-coverage: syncs received / (subscribers × the most one
	// received); 1 means every subscriber got every resync.
	b.ReportMetric(dels/float64(int64(c.conns)*max(c.maxSyncs, 1)), "sync-coverage")
	b.ReportMetric(float64(c.diffs), "diffs-received")
	b.ReportMetric(float64(c.syncBytes)/max(dels, 1), "sync-B")
}

// runResyncLoop runs one resync experiment: n subscribers join room
// resyncRoom from load processes; then, one at a time, runtime.GOMAXPROCS
// changers and as many probes connect from this process; for d the
// changers set a large meta in the room every resyncSetGap (round robin)
// while every probe sends its commands one at a time; then the room is let
// settle and the subscribers report what they received.
func runResyncLoop(tb testing.TB, engine string, cfg resyncConfig) resyncResult {
	tb.Helper()
	checkFDRoom(tb, cfg.n)
	if loops := runtime.GOMAXPROCS(0); cfg.n < loops {
		tb.Fatalf("%d subscribers cannot fill the server's %d event loops", cfg.n, loops)
	}
	warnIfBusy(tb)
	tick := cmp(cfg.tick, 100*time.Millisecond)
	s := startPresenceServer(tb, server.Config{Engine: engine, Presence: presence.Config{
		Insecure:   true,
		Tick:       tick,
		Rate:       1000, // the changers' and probes' commands are not limited
		Burst:      1000,
		ListLimit:  2*cfg.n + 100, // a room over list_limit sends diffs without member state: none would exceed the budget
		SyncBudget: resyncBudget,
	}})
	addr := s.Addr().String()
	t0 := time.Now()

	// The subscribers. While they join, the join diffs exceed the small
	// sync budget too, so the room already resyncs as a whole, and each
	// join waits for the room lock and then for a flush to get its sync:
	// many joins in flight keep the 2,000 joins a second.
	parts := splitConns(cfg.n)
	joinRate := max(1, 2000/len(parts))
	var ls []*lineProc
	for k, part := range parts {
		ls = append(ls, startLineProc(tb, fmt.Sprintf("subscribers-%d", k), modeResync,
			envAddr+"="+addr, envLocalIP+"="+localIP(k+1), envRoom+"="+resyncRoom,
			envFirst+"="+strconv.Itoa(part.first), envConns+"="+strconv.Itoa(part.n),
			envJoinRate+"="+strconv.Itoa(joinRate), envInflight+"=256"))
	}
	for _, p := range ls {
		p.expect(tb, "ready", 5*time.Minute)
	}
	eventually(tb, time.Minute, fmt.Sprintf("%d subscribers in the room", cfg.n), func() bool {
		return s.value(tb, "presenced_members") == float64(cfg.n) && s.value(tb, "presenced_sessions") == float64(cfg.n)
	})

	// The changers, then the probes, each connected only once the previous
	// one is welcomed: the epoll engine gives accepted connections to its
	// runtime.GOMAXPROCS loops round robin, so consecutive connections
	// land on distinct loops, and every loop holds a changer, a probe and
	// about n/loops subscribers. (The netpoll engine has no loops of its
	// own; its handlers run on netpoll's goroutine pool.)
	loops := runtime.GOMAXPROCS(0)
	var changers []*changerConn
	var probes []*probeConn
	closeAll := func() {
		for _, c := range changers {
			c.c.conn.Close()
		}
		for _, p := range probes {
			p.c.conn.Close()
		}
	}
	defer closeAll()
	for k := range loops {
		c, err := dialJoined(addr, "c"+strconv.Itoa(k), resyncRoom)
		if err != nil {
			tb.Fatalf("changer %d: %v", k, err)
		}
		changers = append(changers, &changerConn{c: c})
	}
	for k := range loops {
		c, err := dialJoined(addr, "p"+strconv.Itoa(k), resyncRoom, "cold"+strconv.Itoa(k))
		if err != nil {
			tb.Fatalf("probe %d: %v", k, err)
		}
		probes = append(probes, &probeConn{c: c, cold: "cold" + strconv.Itoa(k), id: 10})
	}
	var readers sync.WaitGroup
	for _, c := range changers {
		readers.Go(c.read) // ends when closeAll closes the connection
	}
	s.waitQuiet(tb)
	setup := time.Since(t0)

	for _, p := range ls {
		p.send(tb, "go")
	}
	for _, p := range ls {
		p.expect(tb, "going", 30*time.Second)
	}
	frames0, versions0 := s.value(tb, "presenced_frames_sent_total"), s.value(tb, "presenced_diffs_total")
	ccpu0, mach0, cpu0 := procsCPU(tb, ls), machineCPU(tb), cpuTime(tb)

	start := time.Now()
	end := start.Add(cfg.d)
	var work sync.WaitGroup
	for k, c := range changers {
		work.Go(func() {
			c.setUntil(start.Add(time.Duration(k)*resyncSetGap), time.Duration(len(changers))*resyncSetGap, end)
		})
	}
	for _, p := range probes {
		work.Go(func() { p.probeUntil(end) })
	}
	work.Wait()
	s.waitQuiet(tb) // the last sets are published and resynced

	cpu1, mach1, ccpu1 := cpuTime(tb), machineCPU(tb), procsCPU(tb, ls)
	r := resyncResult{
		conns:      cfg.n,
		loops:      loops,
		d:          cfg.d,
		tick:       tick,
		serverCPU:  cpu1 - cpu0,
		clientCPU:  ccpu1 - ccpu0,
		machine:    mach1.sub(mach0),
		framesSent: s.value(tb, "presenced_frames_sent_total") - frames0,
		versions:   s.value(tb, "presenced_diffs_total") - versions0,
	}
	for _, p := range ls {
		p.send(tb, "stop")
	}
	for _, p := range ls {
		c, err := parseResyncCounts(p.expect(tb, "result", time.Minute))
		if err != nil {
			tb.Fatalf("%s: %v", p.name, err)
		}
		r.counts.add(c)
	}
	var probeErrs []error
	for _, p := range probes {
		for k := range probeKinds {
			r.lat[k] = append(r.lat[k], p.lat[k]...)
		}
		if p.err != nil {
			probeErrs = append(probeErrs, p.err)
		}
	}
	var changerErrs []string
	for _, c := range changers {
		r.sets += c.sent
		if c.err != nil {
			changerErrs = append(changerErrs, c.err.Error())
		}
		if n := c.errs.Load(); n > 0 {
			changerErrs = append(changerErrs, fmt.Sprintf("%d err answers, the last %s", n, *c.lastErr.Load()))
		}
	}
	slowCloses := s.value(tb, "presenced_slow_consumer_closes_total")
	tb.Logf("%s: %d loops (GOMAXPROCS), %d subscribers (set up in %v): %+v; %d changer sets, %.0f versions published, %.0f frames queued; server CPU %v, clients' CPU %v; machine: %v",
		engine, loops, cfg.n, setup.Round(time.Millisecond), r.counts, r.sets, r.versions, r.framesSent, r.serverCPU, r.clientCPU, r.machine)

	c := r.counts
	if c.conns != cfg.n {
		tb.Errorf("%d subscribers reported, want %d", c.conns, cfg.n)
	}
	if c.maxSyncs < 2 || c.minSyncs < 1 {
		tb.Errorf("subscribers received %d to %d syncs in %v: the room did not resync as a whole", c.minSyncs, c.maxSyncs, cfg.d)
	}
	if c.errs != 0 || c.closed != 0 || slowCloses != 0 {
		tb.Errorf("subscribers: %d err messages, %d closed (%v slow-consumer closes)", c.errs, c.closed, slowCloses)
	}
	if err := errors.Join(probeErrs...); err != nil {
		tb.Errorf("probes: %v", err)
	}
	if len(changerErrs) > 0 {
		tb.Errorf("changers: %s", strings.Join(changerErrs, "; "))
	}
	for k := range probeKinds {
		if len(r.lat[k]) == 0 {
			tb.Errorf("no %s probe was answered", k)
		}
	}

	closeAll()
	readers.Wait()
	for _, p := range ls {
		p.kill()
	}
	eventually(tb, time.Minute, "server ends every session", func() bool { return s.value(tb, "presenced_sessions") == 0 })
	s.stop(tb)
	return r
}

// dialJoined opens a connection from this process, says hello as user and
// joins rooms in order, each with {"status":"online"}.
func dialJoined(addr, user string, rooms ...string) (*wsClient, error) {
	c, err := dialWS(addr, netip.Addr{}, sockOpts{})
	if err != nil {
		return nil, err
	}
	if err := c.hello(user); err != nil {
		c.conn.Close()
		return nil, err
	}
	for i, room := range rooms {
		if err := c.joinAmid(int64(i+1), room); err != nil {
			c.conn.Close()
			return nil, err
		}
	}
	return c, nil
}

// joinAmid joins room as command id and waits for its ack and sync,
// skipping the messages of rooms joined before.
func (c *wsClient) joinAmid(id int64, room string) error {
	c.conn.SetDeadline(time.Now().Add(time.Minute))
	defer c.conn.SetDeadline(time.Time{})
	if err := c.writeText(wire.AppendJoin(nil, id, room, &wire.State{Status: "online"})); err != nil {
		return err
	}
	acked, synced := false, false
	for !acked || !synced {
		p, err := c.read()
		if err != nil {
			return fmt.Errorf("join %s: %w", room, err)
		}
		var e wire.Event
		if err := wire.DecodeEvent(p, &e); err != nil {
			return fmt.Errorf("join %s: %w", room, err)
		}
		switch {
		case e.T == wire.TPing:
			if err := c.pong(e.TS); err != nil {
				return err
			}
		case e.T == wire.TErr:
			return fmt.Errorf("join %s: %s", room, p)
		case e.T == wire.TAck && e.ID == id:
			acked = true
		case e.T == wire.TSync && e.Room == room:
			synced = true
		}
	}
	return nil
}

// resyncMeta is a meta of resyncPad bytes of padding and n: a diff that
// carries it is over resyncBudget.
func resyncMeta(n int64) json.RawMessage {
	return json.RawMessage(`{"n":` + strconv.FormatInt(n, 10) + `,"p":"` + strings.Repeat("x", resyncPad) + `"}`)
}

// changerConn is a member of the resyncing room that sets a large meta on
// a schedule: each of its diffs exceeds the sync budget.
type changerConn struct {
	c *wsClient

	// Owned by setUntil; read once it has returned.
	sent int
	err  error

	// Written by read.
	errs    atomic.Int64
	lastErr atomic.Pointer[string]
}

// setUntil sends a set at first, first+period, ... until end, without
// waiting for the acks (read counts them).
func (c *changerConn) setUntil(first time.Time, period time.Duration, end time.Time) {
	var buf []byte
	for next := first; next.Before(end); next = next.Add(period) {
		time.Sleep(time.Until(next))
		c.sent++
		id := int64(c.sent) + 100
		buf = wire.AppendSet(buf[:0], id, resyncRoom, wire.State{Status: "c" + strconv.Itoa(c.sent), Meta: resyncMeta(id)})
		if err := c.c.writeText(buf); err != nil {
			c.err = err
			return
		}
	}
}

// read reads everything the changer receives until the connection ends,
// answering pings and counting err answers.
func (c *changerConn) read() {
	for {
		p, err := c.c.read()
		if err != nil {
			return
		}
		if ts, ok := pingTS(p); ok {
			c.c.pong(ts)
			continue
		}
		if strings.HasPrefix(string(p[:min(len(p), 10)]), `{"t":"err"`) {
			c.errs.Add(1)
			last := string(p)
			c.lastErr.Store(&last)
		}
	}
}

// probeConn is a member of the resyncing room and of a room of its own
// that times its commands, one at a time.
type probeConn struct {
	c    *wsClient
	cold string // its own room
	id   int64  // the last command id used

	// Owned by probeUntil; read once it has returned.
	lat [probeKinds][]time.Duration
	err error
	buf []byte
}

// probeUntil sends the probe kinds in turn, each once its previous command
// was answered and a random pause of up to probePause has passed, until
// end.
func (p *probeConn) probeUntil(end time.Time) {
	for i := 0; time.Now().Before(end); i++ {
		k := probeKind(i % int(probeKinds))
		d, err := p.roundTrip(k)
		if err != nil {
			p.err = fmt.Errorf("%s probe: %w", k, err)
			return
		}
		p.lat[k] = append(p.lat[k], d)
		time.Sleep(rand.N(probePause))
	}
}

// roundTrip sends one command of kind k and returns the time until its
// answer (an ack, or the pong carrying its ts). Syncs, diffs and pings
// read meanwhile are skipped (pings answered).
func (p *probeConn) roundTrip(k probeKind) (time.Duration, error) {
	p.id++
	switch k {
	case probeHotSet:
		// With the changers' padding: every version of the room is over
		// the sync budget, even one that publishes only this set.
		p.buf = wire.AppendSet(p.buf[:0], p.id, resyncRoom, wire.State{Status: "h" + strconv.FormatInt(p.id, 10), Meta: resyncMeta(p.id)})
	case probeColdSet:
		p.buf = wire.AppendSet(p.buf[:0], p.id, p.cold, wire.State{Status: "c" + strconv.FormatInt(p.id, 10)})
	case probePing:
		p.buf = wire.AppendPing(p.buf[:0], p.id)
	}
	p.c.conn.SetReadDeadline(time.Now().Add(time.Minute))
	t0 := time.Now()
	if err := p.c.writeText(p.buf); err != nil {
		return 0, err
	}
	for {
		msg, err := p.c.read()
		if err != nil {
			return 0, err
		}
		d := time.Since(t0)
		if len(msg) >= 11 {
			switch string(msg[:11]) {
			case `{"t":"sync"`, `{"t":"diff"`:
				continue
			}
		}
		var e wire.Event
		if err := wire.DecodeEvent(msg, &e); err != nil {
			return 0, err
		}
		switch {
		case e.T == wire.TPing:
			if err := p.c.pong(e.TS); err != nil {
				return 0, err
			}
		case e.T == wire.TErr:
			return 0, fmt.Errorf("answered %s", msg)
		case k == probePing && e.T == wire.TPong && e.TS == p.id,
			k != probePing && e.T == wire.TAck && e.ID == p.id:
			return d, nil
		}
	}
}
