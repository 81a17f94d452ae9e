package bench

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/internal/wire"
)

// BenchmarkClusterLatency measures how long an explicit change takes to
// reach the clients of the other nodes: three nodes sharing one
// redis-server on loopback (default tick 100 ms); a changer on n1 sets its
// state envRate (default 20) times a second for envDuration (default
// 20 s), its meta numbering the sets; one listener on each node. For every
// set and listener the latency is from the set's send to the receipt of
// the first diff showing it or a later set (a diff coalesces the sets of a
// tick: an overwritten set is visible once its successor is). Reported:
// same-node (n1) and cross-node (n2, n3 pooled) p50, p99 and max, and the
// sets no diff covered. Target (issue T3): cross-node p99 ≤ 2 × tick +
// 20 ms.
//
//	go test ./bench -run '^$' -bench ClusterLatency -benchtime 1x
func BenchmarkClusterLatency(b *testing.B) {
	r := runClusterLatency(b, envInt(os.Getenv, envRate, 20), envDurationOr(envDuration, 20*time.Second))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.sets), "sets")
	b.ReportMetric(r.same.ms(0.5), "same-p50-ms")
	b.ReportMetric(r.same.ms(0.99), "same-p99-ms")
	b.ReportMetric(r.same.ms(1), "same-max-ms")
	b.ReportMetric(r.cross.ms(0.5), "cross-p50-ms")
	b.ReportMetric(r.cross.ms(0.99), "cross-p99-ms")
	b.ReportMetric(r.cross.ms(1), "cross-max-ms")
	b.ReportMetric(float64(r.missed), "missed")
}

type clusterLatency struct {
	sets        int
	same, cross latencies
	missed      int // (set, listener) pairs no diff covered
}

// runClusterLatency runs one latency experiment.
func runClusterLatency(tb testing.TB, rate int, d time.Duration) *clusterLatency {
	tb.Helper()
	warnIfBusy(tb)
	const room = "lat"
	nodes := startCluster(tb, redistest.Start(tb), 3, benchNodeConfig())
	total := int(d*time.Duration(rate)/time.Second) + 1
	sent := make([]atomic.Int64, total+1) // unix ns of set k's send
	res := &clusterLatency{}

	ch := dialMember(tb, nodes[0].Addr().String(), "changer")
	ch.joinAndRead(tb, room, changerState(0, 0, ""), nil)
	key := []byte(`{"u":"changer","s":"`)
	var seen []*atomic.Int64 // per listener: the newest set shown; -1 before the changer
	for i, n := range nodes {
		prev := new(atomic.Int64)
		prev.Store(-1)
		seen = append(seen, prev)
		lat := &res.cross
		if i == 0 {
			lat = &res.same
		}
		l := dialMember(tb, n.Addr().String(), "l"+strconv.Itoa(i+1))
		sync := l.joinAndRead(tb, room, nil, func(p []byte, at time.Time) {
			di, ok := parseDiff(p, key)
			if !ok || di.status == nil {
				return
			}
			for k := max(prev.Load(), 0) + 1; k <= di.n && k <= int64(total); k++ {
				lat.add(at.Sub(time.Unix(0, sent[k].Load())))
			}
			prev.Store(max(prev.Load(), di.n))
		})
		for _, m := range sync.Members {
			if m.U == "changer" {
				prev.Store(0)
			}
		}
	}
	eventually(tb, 10*time.Second, "every listener sees the changer", func() bool {
		for _, s := range seen {
			if s.Load() < 0 {
				return false
			}
		}
		return true
	})

	period := time.Second / time.Duration(rate)
	t0 := time.Now()
	var buf []byte
	for k := 1; k <= total; k++ {
		time.Sleep(time.Until(t0.Add(time.Duration(k) * period)))
		now := time.Now()
		sent[k].Store(now.UnixNano())
		buf = wire.AppendSet(buf[:0], int64(k+1), room, *changerState(int64(k), now.UnixNano(), ""))
		if err := ch.writeText(buf); err != nil {
			tb.Fatal(err)
		}
		res.sets = k
	}
	time.Sleep(time.Second)
	for _, s := range seen {
		res.missed += res.sets - int(s.Load())
	}
	tb.Logf("%d sets at %d/s; same node p50/p99/max %.1f/%.1f/%.1f ms (%d samples); cross node %.1f/%.1f/%.1f ms (%d samples); %d not covered",
		res.sets, rate, res.same.ms(0.5), res.same.ms(0.99), res.same.ms(1), res.same.len(),
		res.cross.ms(0.5), res.cross.ms(0.99), res.cross.ms(1), res.cross.len(), res.missed)
	return res
}

// BenchmarkClusterStorm shows that a node publishes at most one message
// per room per tick: three nodes, envStormClients (default 10) clients on
// each in one room, setting their state envRate (default 200) times a
// second in all for envDuration (default 10 s). Counted: PUBLISH, SPUBLISH,
// EVALSHA and EVAL calls in INFO commandstats (a script's calls included)
// over the window, and the messages on the room's channel by sender (a
// pattern subscriber), against nodes × window / tick.
//
//	go test ./bench -run '^$' -bench ClusterStorm -benchtime 1x
func BenchmarkClusterStorm(b *testing.B) {
	r := runClusterStorm(b, envInt(os.Getenv, envStormClients, 10), envInt(os.Getenv, envRate, 200),
		envDurationOr(envDuration, 10*time.Second))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.sets), "sets")
	b.ReportMetric(float64(r.calls["publish"]+r.calls["spublish"]), "publish-calls")
	b.ReportMetric(float64(r.calls["evalsha"]+r.calls["eval"]), "eval-calls")
	b.ReportMetric(float64(r.msgs), "room-msgs")
	b.ReportMetric(float64(r.bound), "bound-msgs")
	b.ReportMetric(r.perNodeTick, "max-msgs/node/tick")
	b.ReportMetric(float64(r.minGap)/float64(time.Millisecond), "min-gap-ms")
}

const envStormClients = "PRESENCED_BENCH_STORM_CLIENTS" // BenchmarkClusterStorm: clients per node; default 10

type stormResult struct {
	sets        int
	calls       cmdCalls
	msgs        int           // messages on the room's channel in the window
	bound       int           // nodes × ceil(window / tick)
	perNodeTick float64       // the most messages of one node, over window / tick
	minGap      time.Duration // the shortest time between two messages of one node
}

// runClusterStorm runs one storm experiment.
func runClusterStorm(tb testing.TB, perNode, rate int, d time.Duration) stormResult {
	tb.Helper()
	warnIfBusy(tb)
	const (
		room  = "storm"
		nodes = 3
		tick  = 100 * time.Millisecond
	)
	rs := redistest.Start(tb)
	cluster := startCluster(tb, rs, nodes, benchNodeConfig())
	rdb := rs.Client(tb)
	var clients []*member
	for i, n := range cluster {
		for j := range perNode {
			m := dialMember(tb, n.Addr().String(), "u"+strconv.Itoa(i)+"-"+strconv.Itoa(j))
			m.joinAndRead(tb, room, &wire.State{Status: "online"}, nil)
			clients = append(clients, m)
		}
	}
	// Every node has watched the room and published its joins.
	eventually(tb, 10*time.Second, "every node sees every member", func() bool {
		for _, n := range cluster {
			if n.value(tb, "presenced_members") != float64(len(clients)) {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second)

	// Messages on the room's channel, by sender (the message's third field).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps := rdb.PSubscribe(ctx, "presenced:{p*}:c:"+room)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		tb.Fatal(err)
	}
	var (
		mu     sync.Mutex
		count  = map[string]int{}
		last   = map[string]time.Time{}
		minGap = time.Hour
	)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for msg := range ps.Channel() {
			at := time.Now()
			p := []byte(msg.Payload)
			n, k := binary.Uvarint(p[min(2, len(p)):])
			if k <= 0 || 2+k+int(n) > len(p) {
				continue
			}
			sender := string(p[2+k : 2+k+int(n)])
			mu.Lock()
			if t, ok := last[sender]; ok {
				minGap = min(minGap, at.Sub(t))
			}
			count[sender]++
			last[sender] = at
			mu.Unlock()
		}
	}()

	calls0 := commandCalls(tb, rdb)
	t0 := time.Now()
	period := time.Second * time.Duration(len(clients)) / time.Duration(rate)
	var wg sync.WaitGroup
	var sets atomic.Int64
	for i, c := range clients {
		wg.Go(func() {
			start := t0.Add(period * time.Duration(i) / time.Duration(len(clients))) // spread over the period
			var buf []byte
			for k := 0; ; k++ {
				at := start.Add(time.Duration(k) * period)
				if at.Sub(t0) >= d {
					return
				}
				time.Sleep(time.Until(at))
				buf = wire.AppendSet(buf[:0], int64(k+2), room, wire.State{Status: "s" + strconv.Itoa(k)})
				if c.writeText(buf) != nil {
					return
				}
				sets.Add(1)
			}
		})
	}
	wg.Wait()
	time.Sleep(3 * tick) // the last flush and publish
	window := time.Since(t0)
	calls := commandCalls(tb, rdb).sub(calls0)
	cancel()
	ps.Close()
	<-recvDone

	res := stormResult{sets: int(sets.Load()), calls: calls, minGap: minGap}
	ticks := int((window + tick - 1) / tick)
	res.bound = nodes * ticks
	mu.Lock()
	for _, c := range count {
		res.msgs += c
		res.perNodeTick = max(res.perNodeTick, float64(c)/float64(ticks))
	}
	tb.Logf("%d sets in %v (%d clients on %d nodes); window %v = %d ticks; room messages by sender %v (bound %d in all); min gap %v; Redis calls in the window: %v",
		res.sets, d, len(clients), nodes, window.Round(time.Millisecond), ticks, count, res.bound, minGap, calls)
	mu.Unlock()
	return res
}
