package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/presence"
)

// TestRedisBus: with Config.Redis the server runs the bus beside the hub:
// its collectors are on the server's registry, /readyz follows the lease
// with ReadyNeedsRedis, and the drain ends with the bus's Leave (the lease
// is gone from Redis when Run returns) and every goroutine joined
// (goleak).
func TestRedisBus(t *testing.T) {
	srv := redistest.Start(t)
	rc := &redisbus.Config{Redis: redisbus.ClientOptions{Addrs: []string{srv.Addr()}}, NodeTTL: time.Second}
	n, stop := startServerStop(t, server.Config{
		Presence:        presence.Config{Insecure: true},
		Redis:           rc,
		ReadyNeedsRedis: true,
	})
	if rc.Node != "" || rc.Registerer != nil {
		t.Errorf("server.New changed the caller's Redis config: %+v", rc)
	}
	eventually(t, 10*time.Second, func() error {
		if code, body := httpGet(t, "http://"+n.AdminAddr().String()+"/readyz"); code != 200 {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	if v := metric(t, n.reg, "presenced_redis_up"); v != 1 {
		t.Errorf("presenced_redis_up %v, want 1", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	rdb := srv.Client(t)
	leases := func() []string {
		keys, err := rdb.Keys(ctx, "*lease:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	if got := leases(); len(got) != 1 {
		t.Fatalf("leases %q, want one", got)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := leases(); len(got) != 0 {
		t.Errorf("leases %q after the drain, want none (Leave)", got)
	}
}

// TestRedisOutageReadyz: /readyz stays 200 through a Redis outage unless
// ReadyNeedsRedis, and turns 200 again when Redis is back.
func TestRedisOutageReadyz(t *testing.T) {
	srv := redistest.Start(t)
	start := func(ready bool) *node {
		return startServer(t, server.Config{
			Presence:        presence.Config{Insecure: true},
			Redis:           &redisbus.Config{Redis: redisbus.ClientOptions{Addrs: []string{srv.Addr()}}, NodeTTL: time.Second},
			ReadyNeedsRedis: ready,
		})
	}
	strict, lax := start(true), start(false)
	readyz := func(n *node) int {
		code, _ := httpGet(t, "http://"+n.AdminAddr().String()+"/readyz")
		return code
	}
	eventually(t, 10*time.Second, func() error {
		if c := readyz(strict); c != 200 {
			return fmt.Errorf("/readyz %d with the lease", c)
		}
		return nil
	})
	srv.Kill()
	eventually(t, 10*time.Second, func() error {
		if c := readyz(strict); c != 503 {
			return fmt.Errorf("ReadyNeedsRedis: /readyz %d with Redis gone, want 503", c)
		}
		return nil
	})
	if c := readyz(lax); c != 200 {
		t.Errorf("/readyz %d with Redis gone, want 200 (ReadyNeedsRedis off)", c)
	}
	// Redis back (empty): the lease again, and /readyz 200. (go-redis's
	// dialers also stop retrying, which goleak would see otherwise.)
	srv.Restart()
	eventually(t, 10*time.Second, func() error {
		if c := readyz(strict); c != 200 {
			return fmt.Errorf("ReadyNeedsRedis: /readyz %d with Redis back", c)
		}
		return nil
	})
}
