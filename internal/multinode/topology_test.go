package multinode

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redistest"
)

// topo is a Redis the nodes share: the -redis flags that reach it and a
// client of the tests' own.
type topo struct {
	name  string
	flags []string              // -redis URL [-redis-cluster | -redis-sentinel-master NAME]
	rdb   redis.UniversalClient // the tests' client: keys, CLIENT KILL, CLIENT PAUSE
	srv   *redistest.Server     // standalone only: Kill, Restart
}

// standalone starts one redis-server with args.
func standalone(t *testing.T, args ...string) *topo {
	t.Helper()
	srv := redistest.Start(t, args...)
	return &topo{name: "standalone", flags: []string{"-redis", srv.URL()}, rdb: srv.Client(t), srv: srv}
}

// redisCluster starts a Redis Cluster of three masters.
func redisCluster(t *testing.T) *topo {
	t.Helper()
	c := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	return &topo{name: "cluster", flags: []string{"-redis", "redis://" + strings.Join(c.Addrs(), ","), "-redis-cluster"}, rdb: rdb}
}

// nodes is a group of nodes sharing one topo.
type nodes struct {
	t    *testing.T
	topo *topo
	n    []*node
}

// startNodes starts count nodes, node0..node<count-1>, with extra flags,
// and waits until each holds its lease and counts every other live node.
func startNodes(t *testing.T, tp *topo, count int, extra ...string) *nodes {
	t.Helper()
	g := &nodes{t: t, topo: tp}
	for i := range count {
		g.n = append(g.n, startNode(t, fmt.Sprintf("node%d", i), tp.flags, extra...))
	}
	g.awaitMembership(g.n...)
	return g
}

// awaitMembership waits until each of live holds its lease and sees
// exactly len(live) live nodes.
func (g *nodes) awaitMembership(live ...*node) {
	g.t.Helper()
	eventually(g.t, startTimeout, func() error {
		for _, n := range live {
			if err := n.metricIs("presenced_redis_up", 1); err != nil {
				return err
			}
			if err := n.metricIs("presenced_cluster_nodes", float64(len(live))); err != nil {
				return err
			}
		}
		return nil
	})
}

// deadKeys lists what Redis still holds of the incarnations of node name
// once it is dead: keys naming an incarnation ("name#epoch"), and fields of
// the registry and of the rooms' seq hashes. The tombstone, the reaper's
// lock and last:<name> may stay (fences, with their own TTL).
func (tp *topo) deadKeys(ctx context.Context, name string) ([]string, error) {
	var left []string
	id := name + "#"
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, "*", 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			switch {
			case strings.Contains(k, "{n}:tomb:"), strings.Contains(k, "{n}:reap:"), strings.Contains(k, "{n}:last:"):
				continue
			case strings.Contains(k, id):
				left = append(left, k)
				continue
			}
			if typ, err := c.Type(ctx, k).Result(); err != nil || typ != "hash" {
				continue
			}
			if !strings.HasSuffix(k, "{n}:reg") && !strings.Contains(k, "}:n:") {
				continue
			}
			fields, err := c.HKeys(ctx, k).Result()
			if err != nil {
				return err
			}
			for _, f := range fields {
				if strings.HasPrefix(f, id) {
					left = append(left, k+" field "+f)
				}
			}
		}
		return iter.Err()
	}
	var err error
	switch c := tp.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	default:
		err = fmt.Errorf("deadKeys: client %T", tp.rdb)
	}
	return left, err
}

// noDeadKeys is an eventually condition: Redis holds nothing of name.
func (tp *topo) noDeadKeys(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	left, err := tp.deadKeys(ctx, name)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("redis still holds %d keys or fields of %s: %q", len(left), name, left)
	}
	return nil
}
