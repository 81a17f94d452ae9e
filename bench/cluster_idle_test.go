package bench

import (
	"os"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
)

// BenchmarkIdlePresenceRedis runs BenchmarkIdlePresence's workload (envConns
// connections, default 15000, in 1,000 rooms) twice in one invocation: on
// a single node, then on a node with a Redis (a cluster of one: it
// registers, publishes its members, and watches every room, subscribed to
// its channel). Reported with the prefixes single- and redis-, and the
// ratios redis/single of heap and of RSS without a forced GC (target,
// issue T3: within 10 %).
//
//	go test ./bench -run '^$' -bench IdlePresenceRedis -benchtime 1x
func BenchmarkIdlePresenceRedis(b *testing.B) {
	n := benchConns()
	rooms := envInt(os.Getenv, envPresenceRooms, 1000)
	settle := envDurationOr(envSettle, 2*time.Second)
	for _, engine := range engines {
		b.Run(engine, func(b *testing.B) {
			single := runIdlePresence(b, idlePresenceConfig(engine, ""), n, rooms, settle)
			redis := runIdlePresence(b, idlePresenceConfig(engine, redistest.Start(b).Addr()), n, rooms, settle)
			b.ReportMetric(0, "ns/op")
			for _, r := range []struct {
				name string
				r    idleResult
			}{{"single-", single}, {"redis-", redis}} {
				b.ReportMetric(r.r.heap, r.name+"heap-B/conn")
				b.ReportMetric(r.r.rss, r.name+"rss-B/conn")
				b.ReportMetric(r.r.rssNoGC, r.name+"rss-nogc-B/conn")
				b.ReportMetric(r.r.goroutines, r.name+"goroutines/conn")
				b.ReportMetric(100*r.r.cpu, r.name+"idle-cpu-%")
			}
			b.ReportMetric(redis.heap/single.heap, "redis/single-heap")
			b.ReportMetric(redis.rssNoGC/single.rssNoGC, "redis/single-rss-nogc")
		})
	}
}
