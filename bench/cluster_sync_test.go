package bench

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
)

// BenchmarkClusterSync measures how long the first local subscriber of a
// big room waits for the room's members held on another node: three
// nodes; envConns (default 10000) connections from load processes (mode
// presence-idle, one room) joined to room r0 on n1; then one client joins
// r0 on n2, and another on n3 (each the node's first subscriber of r0:
// the node reads the room from Redis in pages). Reported: the time from
// sending the join to the sync, the sync's count, and the time until a
// message (the sync or a later diff) counts every member; the room's
// members are more than list_limit (1000), so the sync lists 1000 and
// counts all. Also Redis's used_memory per member of that room.
//
//	go test ./bench -run '^$' -bench ClusterSync -benchtime 1x
func BenchmarkClusterSync(b *testing.B) {
	r := runClusterSync(b, envInt(os.Getenv, envConns, 10000))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.members), "members")
	for i, j := range r.joins {
		node := "n" + strconv.Itoa(i+2)
		b.ReportMetric(ms(j.sync), node+"-sync-ms")
		b.ReportMetric(float64(j.count), node+"-sync-count")
		b.ReportMetric(ms(j.full), node+"-full-count-ms")
	}
	b.ReportMetric(r.memPerMember, "redis-B/member")
}

type clusterSync struct {
	members      int
	joins        []firstJoin // on n2, n3
	memPerMember float64
}

// firstJoin is what one first subscriber saw.
type firstJoin struct {
	sync  time.Duration // join sent to sync received
	count int           // the sync's count
	full  time.Duration // join sent to the first message counting every member (-1: none within the wait)
}

func runClusterSync(tb testing.TB, n int) clusterSync {
	tb.Helper()
	warnIfBusy(tb)
	checkFDRoom(tb, n)
	const room = "r0" // presence-idle's room with envRooms=1
	rs := redistest.Start(tb)
	nodes := startCluster(tb, rs, 3, benchNodeConfig())
	rdb := rs.Client(tb)
	mem0 := usedMemory(tb, rdb)
	for k, part := range splitConns(n) {
		p := startLoad(tb, modeIdlePresence,
			envAddr+"="+nodes[0].Addr().String(),
			envLocalIP+"="+localIP(k),
			envFirst+"="+strconv.Itoa(part.first),
			envConns+"="+strconv.Itoa(part.n),
			envRooms+"=1",
			envInflight+"=32")
		defer p.kill()
		if _, err := p.waitLine("ready", 5*time.Minute); err != nil {
			tb.Fatalf("load process: %v", err)
		}
	}
	eventually(tb, time.Minute, fmt.Sprintf("n1 holds %d members", n), func() bool {
		return nodes[0].value(tb, "presenced_members") == float64(n)
	})
	nodes[0].waitQuiet(tb)
	time.Sleep(time.Second) // the last publish
	r := clusterSync{members: n, memPerMember: float64(usedMemory(tb, rdb)-mem0) / float64(n)}

	for i, node := range nodes[1:] {
		want := n + 1 + i // the members, this joiner and the earlier ones
		m := dialMember(tb, node.Addr().String(), "j"+strconv.Itoa(i+2))
		full := make(chan time.Time, 1)
		t0 := time.Now()
		sync := m.joinAndRead(tb, room, nil, func(p []byte, at time.Time) {
			if c, ok := intField(p, `"count":`); ok && c >= int64(want) {
				select {
				case full <- at:
				default:
				}
			}
		})
		j := firstJoin{sync: time.Since(t0), count: sync.Count, full: -1}
		if sync.Count >= want {
			j.full = j.sync
		} else {
			select {
			case at := <-full:
				j.full = at.Sub(t0)
			case <-time.After(30 * time.Second):
			}
		}
		tb.Logf("first subscriber on n%d: sync after %v with count %d (partial %v, %d listed); every member counted after %v",
			i+2, j.sync.Round(time.Microsecond), j.count, sync.Partial, len(sync.Members), j.full.Round(time.Microsecond))
		r.joins = append(r.joins, j)
	}
	tb.Logf("Redis used_memory: +%.0f B per member of one room of %d", r.memPerMember, n)
	return r
}
