package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServer(t *testing.T) {
	s := Start(t, "--maxmemory", "10mb")
	ctx := context.Background()
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.ConfigGet(ctx, "maxmemory").Result(); err != nil || v["maxmemory"] != "10485760" {
		t.Fatalf("extra args: %v %v", v, err)
	}
	if s.URL() != "redis://"+s.Addr() || s.PID() == 0 {
		t.Fatalf("URL %q PID %d", s.URL(), s.PID())
	}

	s.Stop()
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := c.Get(short, "k").Err()
	cancel()
	if err == nil {
		t.Fatal("GET answered while stopped")
	}
	s.Cont()
	if err := eventuallyT(func() error { return c.Get(ctx, "k").Err() }); err != nil {
		t.Fatalf("after Cont: %v", err)
	}

	addr := s.Addr()
	s.Kill()
	if s.PID() != 0 || ping(addr) == nil {
		t.Fatal("still running after Kill")
	}
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", s.Addr(), addr)
	}
	if err := eventuallyT(func() error {
		n, err := c.Exists(ctx, "k").Result()
		if err == nil && n != 0 {
			t.Fatal("restarted server is not empty")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func eventuallyT(f func() error) error { return eventually(5*time.Second, f) }

func TestCluster(t *testing.T) {
	cl := StartCluster(t, 3)
	if len(cl.Addrs()) != 3 || cl.Node(2).Addr() != cl.Addrs()[2] {
		t.Fatalf("addrs %v", cl.Addrs())
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "d", "{n}:x"} {
		if err := c.Set(ctx, k, "1", 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	shards, err := c.ClusterShards(ctx).Result()
	if err != nil || len(shards) != 3 {
		t.Fatalf("shards %d %v", len(shards), err)
	}
}

func TestSentinel(t *testing.T) {
	s := StartSentinel(t)
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs()})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if s.Master().Addr() == s.Replica().Addr() {
		t.Fatal("master and replica share an address")
	}
}
