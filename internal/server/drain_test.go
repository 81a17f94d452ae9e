package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// TestDrainHoldsClusterPart: with Redis, a drained node stays in the
// cluster until the drain window has passed, while it holds drained
// members: its lease and its part of the room stay in Redis, /readyz
// answers 503, presenced_draining is 1 and the admin listener serves; then
// it leaves (no lease, no part).
func TestDrainHoldsClusterPart(t *testing.T) {
	const window = 2 * time.Second
	srv := redistest.Start(t)
	n, stop := startServerStop(t, server.Config{
		Presence: presence.Config{Insecure: true, Tick: 20 * time.Millisecond, LeaveGrace: 3 * time.Second},
		Redis:    &redisbus.Config{Redis: redisbus.ClientOptions{Addrs: []string{srv.Addr()}}, NodeTTL: time.Second},
		Drain:    window,
	})
	admin := "http://" + n.AdminAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := srv.Client(t)
	keys := func() (lease, part bool) {
		ks, err := rdb.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			lease = lease || strings.Contains(k, "lease:")
			part = part || strings.Contains(k, ":m:r|")
		}
		return lease, part
	}
	alice := login(t, n, "alice")
	alice.send(`{"t":"join","id":1,"room":"r"}`)
	alice.expect("ack")
	alice.expect("sync")
	eventually(t, 10*time.Second, func() error {
		if lease, part := keys(); !lease || !part {
			return fmt.Errorf("lease %v, room part %v: want both", lease, part)
		}
		return nil
	})
	if v := metric(t, n.reg, "presenced_draining"); v != 0 {
		t.Errorf("presenced_draining %v before the drain, want 0", v)
	}

	began := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	alice.expectMsg("bye")
	if got := alice.closeCode(); got != wire.CloseGoingAway {
		t.Errorf("close %d, want 1001", got)
	}
	// alice's hold (retry_ms + 3 s) outlasts the window: the node stays
	// until the window has passed. Checked only while it surely must.
	checked := time.Now()
	lease, part := keys()
	status, _ := httpGet(t, admin+"/readyz")
	_, body := httpGet(t, admin+"/metrics")
	if time.Since(began) < window {
		if !lease || !part {
			t.Errorf("%v into the drain: lease %v, room part %v; want both (the node stays until the window has passed)", checked.Sub(began), lease, part)
		}
		if status != 503 {
			t.Errorf("/readyz %d while draining, want 503", status)
		}
		if !strings.Contains(body, "presenced_draining 1\n") {
			t.Error("/metrics lacks presenced_draining 1 while draining")
		}
	} else {
		t.Logf("checks made %v into the drain, after its window: skipped", checked.Sub(began))
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if took := time.Since(began); took < window {
		t.Errorf("Run returned %v after the drain began, want at least the window %v", took, window)
	}
	if lease, part := keys(); lease || part {
		t.Errorf("after Run: lease %v, room part %v; want neither (Leave)", lease, part)
	}
}

// TestDrainSingleNodeNoWait: without Redis, the drain does not wait for
// its window: the node's members go with the process.
func TestDrainSingleNodeNoWait(t *testing.T) {
	const window = time.Minute
	cfg := quickConfig("epoll")
	cfg.Drain = window
	n, stop := startServerStop(t, cfg)
	alice := login(t, n, "alice")
	alice.send(`{"t":"join","id":1,"room":"r"}`)
	alice.expect("ack")
	alice.expect("sync")
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	alice.expectMsg("bye")
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(window / 2):
		t.Fatalf("Run still running %v after the drain began: a single node must not wait for its window", window/2)
	}
	if v := metric(t, n.reg, "presenced_draining"); v != 1 {
		t.Errorf("presenced_draining %v after the drain, want 1", v)
	}
}

// TestDrainHoldEndsWhenRedisIsDown: a drained node whose Redis became
// unreachable does not hold its members for the whole window: its lease
// is not renewed (presenced_redis_up 0 after node-ttl), so the other
// nodes declare it dead anyway. Run returns within node-ttl plus the
// Leave's bound, not after the window.
func TestDrainHoldEndsWhenRedisIsDown(t *testing.T) {
	const window, ttl = 30 * time.Second, time.Second
	srv := redistest.Start(t)
	n, stop := startServerStop(t, server.Config{
		Presence: presence.Config{Insecure: true, Tick: 20 * time.Millisecond, LeaveGrace: time.Minute},
		Redis:    &redisbus.Config{Redis: redisbus.ClientOptions{Addrs: []string{srv.Addr()}}, NodeTTL: ttl},
		Drain:    window,
	})
	alice := login(t, n, "alice")
	alice.send(`{"t":"join","id":1,"room":"r"}`)
	alice.expect("ack")
	alice.expect("sync")
	eventually(t, 10*time.Second, func() error {
		if v := metric(t, n.reg, "presenced_redis_up"); v != 1 {
			return fmt.Errorf("presenced_redis_up %v, want 1", v)
		}
		return nil
	})
	began := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	alice.expectMsg("bye")
	alice.closeCode() // answers the 1001: alice is held for retry_ms + a minute
	srv.Kill()
	// stop gives Run 10 s (a third of the window): without Redis the hold
	// ends a node-ttl after the last renewal, then the Leave gives up
	// within its 2 s.
	if err := <-stopped; err != nil {
		t.Fatalf("Run with Redis down during the drain (window %v, node-ttl %v): %v", window, ttl, err)
	}
	t.Logf("Run returned %v after the drain began", time.Since(began))
}
