package redisbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/presence"
)

// TestClusterView: the operators' reads see every live node's part of
// every room, more rooms than one pipeline holds: names by prefix,
// counts with a user held by two nodes counted once, members with the
// newest state, a user's rooms, nodes with their reported connections;
// a kick reaches the other node's hub, not the sender's.
func TestClusterView(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startBus(t, "a", standalone(s), func(b *Bus) { b.cfg.NodeTTL = time.Second })
	b := startBus(t, "b", standalone(s), func(b *Bus) { b.cfg.NodeTTL = time.Second })
	a.h.mu.Lock()
	a.h.conns = 3
	a.h.mu.Unlock()
	const rooms = pipelineRooms + 44
	for i := range rooms {
		r := fmt.Sprintf("r/%03d", i)
		a.set(r, "u1", "online", true)
		if i%2 == 0 {
			b.set(r, "u2", "online", true)
		}
	}
	b.set("r/000", "u1", "away", true) // b's version is above a's first one: the newest state
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var names []string
	eventually(t, 10*time.Second, "every room listed", func() bool {
		var err error
		names, err = a.b.RoomNames(ctx, "r/")
		return err == nil && len(names) == rooms
	})
	if !slices.IsSorted(names) {
		t.Errorf("RoomNames not sorted")
	}
	eventually(t, 10*time.Second, "counts", func() bool {
		counts, err := b.b.RoomCounts(ctx, names)
		if err != nil {
			return false
		}
		for i, r := range names {
			want := 1 + (1 - i%2)
			if counts[r] != want {
				t.Logf("count of %s: %d, want %d", r, counts[r], want)
				return false
			}
		}
		return true
	})
	eventually(t, 10*time.Second, "members of r/000", func() bool {
		ms, err := b.b.RoomMembers(ctx, "r/000")
		return err == nil && slices.Equal(ms, []presence.MemberInfo{{User: "u1", Status: "away"}, {User: "u2", Status: "online"}})
	})
	if got, err := a.b.RoomNames(ctx, "r/00"); err != nil || len(got) != 10 {
		t.Errorf("RoomNames(r/00): %d rooms, %v; want 10", len(got), err)
	}
	if got, err := a.b.UserRooms(ctx, "u2"); err != nil || len(got) != rooms/2 || got[0] != "r/000" {
		t.Errorf("UserRooms(u2): %d rooms, %v; want %d", len(got), err, rooms/2)
	}
	if got, err := a.b.UserRooms(ctx, "nobody"); err != nil || len(got) != 0 {
		t.Errorf("UserRooms(nobody): %v, %v", got, err)
	}
	// The cap on index entries scanned per read (read only by the caller).
	a.b.scanCap = 100 // the indexes hold 300 + 150 entries
	if got, err := a.b.RoomNames(ctx, "r/"); !errors.Is(err, ErrTooManyRooms) {
		t.Errorf("RoomNames(r/) over the cap: %d rooms, %v; want ErrTooManyRooms", len(got), err)
	}
	if got, err := a.b.UserRooms(ctx, "u2"); !errors.Is(err, ErrTooManyRooms) {
		t.Errorf("UserRooms(u2) over the cap: %d rooms, %v; want ErrTooManyRooms", len(got), err)
	}
	a.b.scanCap = len(names) + rooms/2
	if got, err := a.b.RoomNames(ctx, "r/"); err != nil || len(got) != rooms {
		t.Errorf("RoomNames(r/) at the cap: %d rooms, %v; want %d", len(got), err, rooms)
	}
	a.b.scanCap = MaxScanRooms
	eventually(t, 5*time.Second, "nodes with their connections", func() bool {
		ns, err := b.b.Nodes(ctx)
		return err == nil && len(ns) == 2 && ns[0].ID == a.b.ID() && ns[0].Conns == 3 && ns[1].ID == b.b.ID() && ns[1].Conns == 0
	})

	// A node's count expires (PX NodeTTL): a node that stops reporting
	// leaves no count behind.
	if ttl, err := a.b.live.PTTL(ctx, a.b.k.conns(a.b.ID())).Result(); err != nil || ttl <= 0 || ttl > a.b.cfg.NodeTTL {
		t.Errorf("PTTL of conns:<id> = %v, %v; want in (0, NodeTTL=%v]", ttl, err, a.b.cfg.NodeTTL)
	}

	if err := a.b.Kick(ctx, "u1", 4103); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "b's hub told", func() bool {
		b.h.mu.Lock()
		defer b.h.mu.Unlock()
		return slices.Equal(b.h.kicks, []string{"u1 4103"})
	})
	a.h.mu.Lock()
	if len(a.h.kicks) != 0 {
		t.Errorf("the sender's hub got its own kick: %v", a.h.kicks)
	}
	a.h.mu.Unlock()
}

// TestKickQueueFull: a peer's kick that finds the kicker's queue full is
// dropped at once (the control channel's loop never waits), counted in
// errors{op="kick"} and logged at Warn; the queued ones stay.
func TestKickQueueFull(t *testing.T) {
	var logs bytes.Buffer
	b, err := New(Config{
		Redis: ClientOptions{Addrs: []string{"127.0.0.1:1"}}, Node: "a",
		Registerer: prometheus.NewRegistry(),
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range kickQueue {
		b.queueKick(fmt.Sprintf("kick b#1 4103 u%d", i))
	}
	if v := value(t, b.m.errors.WithLabelValues("kick")); v != 0 {
		t.Fatalf("errors{op=kick} = %v with the queue just full, want 0", v)
	}
	b.queueKick("kick b#1 4103 late")
	if v := value(t, b.m.errors.WithLabelValues("kick")); v != 1 {
		t.Errorf("errors{op=kick} = %v after a kick found the queue full, want 1", v)
	}
	if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "kick queue full") || !strings.Contains(got, "late") {
		t.Errorf("log %q: want a Warn naming the dropped kick", got)
	}
	if n := len(b.kicks); n != kickQueue {
		t.Errorf("%d kicks queued, want %d", n, kickQueue)
	}
}

// TestNodesWithoutReport: a live node whose connection count is not in
// Redis (it has not reported yet, or the key was lost) is listed with -1.
// NodeTTL is long, so the next report (every NodeTTL/3 = 10 s) does not
// come within the test.
func TestNodesWithoutReport(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startBus(t, "a", standalone(s), func(b *Bus) { b.cfg.NodeTTL = 30 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eventually(t, 5*time.Second, "registered", func() bool { return a.b.ID() != "" })
	// Reported or not yet (the first report may have come before the
	// registration): no count from here on.
	if err := a.b.live.Del(ctx, a.b.k.conns(a.b.ID())).Err(); err != nil {
		t.Fatal(err)
	}
	if ns, err := a.b.Nodes(ctx); err != nil || len(ns) != 1 || ns[0].ID != a.b.ID() || ns[0].Conns != -1 {
		t.Errorf("Nodes without the report: %+v, %v; want the node with -1", ns, err)
	}
}
