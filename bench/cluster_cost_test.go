package bench

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// BenchmarkClusterRedisCost measures what joins and leaves cost Redis:
// three nodes, otherwise idle; envConns (default 1000) connections on n1
// each join one of envRooms rooms (sub-benchmarks: as many rooms as
// connections, the first join of a room then also starts its watch; and
// 10 a room), then each leaves. Redis's calls (INFO commandstats, a
// script's calls included) are counted over fixed windows: idle (the
// liveness rounds of the three nodes, envDuration, default 5 s), the joins
// (envDuration from the first join) and the leaves (leave grace + 2 s from
// the first leave: a room's watch ends a grace after its last local
// subscriber left). Reported per join and per leave, with the idle rate
// over the same time subtracted; and Redis's used_memory per member.
//
//	go test ./bench -run '^$' -bench ClusterRedisCost -benchtime 1x
func BenchmarkClusterRedisCost(b *testing.B) {
	n := envInt(os.Getenv, envConns, 1000)
	for _, rooms := range []int{n, n / 10} {
		b.Run("rooms="+strconv.Itoa(rooms), func(b *testing.B) {
			r := runClusterCost(b, n, rooms, envDurationOr(envDuration, 5*time.Second), presence.DefaultLeaveGrace)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.perJoin, "cmds/join")
			b.ReportMetric(r.perLeave, "cmds/leave")
			b.ReportMetric(r.idlePerSec, "idle-cmds/s")
			b.ReportMetric(r.memPerMember, "redis-B/member")
			b.ReportMetric(r.memLeft, "redis-B-left")
		})
	}
}

type clusterCost struct {
	perJoin, perLeave float64 // Redis calls, background subtracted
	idlePerSec        float64 // Redis calls a second with the nodes idle
	memPerMember      float64 // used_memory growth over the members, bytes
	memLeft           float64 // used_memory after the leaves, above the start
	// Room messages published in the join and leave phases: the idle
	// nodes publish none, so these need no background subtracted.
	joinPublishes, leavePublishes int64
}

// runClusterCost runs one cost experiment: the nodes' leave grace is
// leaveGrace.
func runClusterCost(tb testing.TB, n, rooms int, window, leaveGrace time.Duration) clusterCost {
	tb.Helper()
	rs := redistest.Start(tb)
	pc := benchNodeConfig()
	pc.LeaveGrace = leaveGrace
	nodes := startCluster(tb, rs, 3, pc)
	rdb := rs.Client(tb)
	ms := make([]*member, n)
	if err := openAll(n, 32, func(i int) error {
		var err error
		ms[i], err = openMember(tb, nodes[0].Addr().String(), "u"+strconv.Itoa(i))
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	room := func(i int) string { return "r" + strconv.Itoa(i%rooms) }
	mem0 := usedMemory(tb, rdb)

	// calls counts Redis's calls over d from when do starts.
	calls := func(d time.Duration, do func()) cmdCalls {
		c0, t0 := commandCalls(tb, rdb), time.Now()
		do()
		time.Sleep(time.Until(t0.Add(d)))
		return commandCalls(tb, rdb).sub(c0)
	}
	idle := calls(window, func() {})
	bg := func(d time.Duration) float64 { return float64(idle[""]) * float64(d) / float64(window) }
	joins := calls(window, func() {
		if err := openAll(n, 32, func(i int) error {
			_, err := ms[i].joinRead(room(i), &wire.State{Status: "online"}, nil)
			return err
		}); err != nil {
			tb.Fatal(err)
		}
		eventually(tb, window, "n1 holds every member", func() bool { return nodes[0].value(tb, "presenced_members") == float64(n) })
	})
	time.Sleep(time.Second) // the last publish
	mem1 := usedMemory(tb, rdb)
	leaveWindow := leaveGrace + 2*time.Second
	leaves := calls(leaveWindow, func() {
		for i, m := range ms {
			if err := m.writeText(wire.AppendLeave(nil, 2, room(i))); err != nil {
				tb.Fatal(err)
			}
		}
		eventually(tb, window, "n1 holds no member", func() bool { return nodes[0].value(tb, "presenced_members") == 0 })
	})
	mem2 := usedMemory(tb, rdb)
	r := clusterCost{
		perJoin:        (float64(joins[""]) - bg(window)) / float64(n),
		perLeave:       (float64(leaves[""]) - bg(leaveWindow)) / float64(n),
		idlePerSec:     float64(idle[""]) / window.Seconds(),
		memPerMember:   float64(mem1-mem0) / float64(n),
		memLeft:        float64(mem2 - mem0),
		joinPublishes:  joins["publish"] + joins["spublish"],
		leavePublishes: leaves["publish"] + leaves["spublish"],
	}
	tb.Logf("%d joins into %d rooms on n1 of 3 nodes; idle %v: %v", n, rooms, window, idle)
	tb.Logf("joins, %v: %v", window, joins)
	tb.Logf("leaves, %v: %v", leaveWindow, leaves)
	tb.Logf("used_memory %d before, %d after the joins, %d after the leaves", mem0, mem1, mem2)
	tb.Logf("per join %.2f calls, per leave %.2f calls (idle rate subtracted); %.0f B of Redis memory per member", r.perJoin, r.perLeave, r.memPerMember)
	return r
}
