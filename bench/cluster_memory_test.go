package bench

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/internal/wire"
)

// BenchmarkClusterRedisMemory measures Redis's used_memory per member by
// what the member adds to the key layout (docs/cluster.md: one members
// hash per room and node, one field per node in the room's seqs, one
// entry per room in the node's room set, one subscriber per watching
// node on the room's channel). Three nodes, envConns (default 1200)
// rooms, three phases:
//
//   - new-room: on n1, one member per room, each the first of its room;
//   - new-pair: on n2, one member per room: a (room, node) pair new to Redis;
//   - same-pair: on n1 again, 4 more members per room, where n1 already
//     holds the room (4, not 1: a small hash grows inside the allocator's
//     size class of its listpack for a while, then jumps to the next).
//
// Each phase's used_memory growth (1 s after the last join, so the last
// publish is in) over its members. used_memory moves by about ±100 KB
// on its own: ±80 B a member for 1200, ±20 B for 4800. 8400 connections:
// 16,800 fds in this process.
//
//	go test ./bench -run '^$' -bench ClusterRedisMemory -benchtime 1x -count 3
func BenchmarkClusterRedisMemory(b *testing.B) {
	n := envInt(os.Getenv, envConns, 1200)
	rs := redistest.Start(b)
	nodes := startCluster(b, rs, 3, benchNodeConfig())
	rdb := rs.Client(b)
	room := func(i int) string { return "r" + strconv.Itoa(i) }
	total := 0 // members in the rooms: each watching node counts all of them
	phase := func(name string, node int, prefix string, per int) float64 {
		mem0 := usedMemory(b, rdb)
		if err := openAll(n*per, 32, func(i int) error {
			m, err := openMember(b, nodes[node].Addr().String(), prefix+strconv.Itoa(i))
			if err != nil {
				return err
			}
			_, err = m.joinRead(room(i%n), &wire.State{Status: "online"}, nil)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		total += n * per
		eventually(b, 30*time.Second, name+": every member seen", func() bool {
			return nodes[node].value(b, "presenced_members") == float64(total)
		})
		time.Sleep(time.Second) // the last publish
		mem1 := usedMemory(b, rdb)
		bytes := float64(mem1-mem0) / float64(n*per)
		b.Logf("%s: %d members: used_memory %d -> %d: %.0f B per member", name, n*per, mem0, mem1, bytes)
		return bytes
	}
	newRoom := phase("new-room", 0, "u", 1)
	newPair := phase("new-pair", 1, "v", 1)
	samePair := phase("same-pair", 0, "w", 4)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(newRoom, "new-room-B/member")
	b.ReportMetric(newPair, "new-pair-B/member")
	b.ReportMetric(samePair, "same-pair-B/member")
}
