package bench

import (
	"os"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
)

// BenchmarkIdlePresenceRedis runs BenchmarkIdlePresence's workload (envConns
// connections, default 15000, in 1,000 rooms) on a single node
// (sub-benchmark engine/single) and on a node with a Redis (engine/redis:
// a cluster of one, which registers, publishes its members and watches
// every room, subscribed to its channel), with BenchmarkIdlePresence's
// metrics. Target (issue T3): redis within 10 % of single. A process's
// second run starts from the heap and RSS the first left behind, so
// compare runs of fresh processes, alternated:
//
//	for i in 1 2 3; do for v in single redis; do
//	  go test ./bench -run '^$' -bench "IdlePresenceRedis/epoll/$v" -benchtime 1x
//	done; done
func BenchmarkIdlePresenceRedis(b *testing.B) {
	n := benchConns()
	rooms := envInt(os.Getenv, envPresenceRooms, 1000)
	settle := envDurationOr(envSettle, 2*time.Second)
	for _, engine := range engines {
		b.Run(engine+"/single", func(b *testing.B) {
			runIdlePresence(b, idlePresenceConfig(engine, ""), n, rooms, settle).report(b)
		})
		b.Run(engine+"/redis", func(b *testing.B) {
			runIdlePresence(b, idlePresenceConfig(engine, redistest.Start(b).Addr()), n, rooms, settle).report(b)
		})
	}
}
