package redisbus

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	opts := ClientOptions{Addrs: cl.Addrs(), Cluster: true}
	a := startBus(t, "a", opts, nil)
	b := startBus(t, "b", opts, nil)
	if !a.b.cluster {
		t.Fatal("not a Cluster client")
	}
	var rooms []string
	for i := range 12 {
		rooms = append(rooms, "room-"+strconv.Itoa(i))
	}
	// Half the rooms written before the watch (loaded), half after (messages).
	for _, r := range rooms[:6] {
		a.set(r, "early", "online", true)
	}
	for _, r := range rooms {
		b.b.Watch(r)
	}
	for _, r := range rooms {
		eventually(t, 10*time.Second, "loaded", func() bool { return b.h.count(isLoaded(r)) == 1 })
	}
	for i, r := range rooms {
		a.set(r, "u"+strconv.Itoa(i), "online", true)
	}
	for _, r := range rooms {
		converged(t, b, a, r, 10*time.Second)
	}
	// Room messages go by SPUBLISH (PUBLISH serves liveness's ctl channel only).
	spublish := 0
	for i := range 3 {
		spublish += commandCalls(t, cl.Node(i).Client(t), "spublish")
	}
	if spublish < 18 {
		t.Fatalf("SPUBLISH %d times, want >= 18 (a message per set)", spublish)
	}
	if got := value(t, b.b.m.received); got < 12 {
		t.Fatalf("received %v", got)
	}

	// The slot of a watched room moves to another master: Redis pushes
	// an sunsubscribe; the PubSub is recreated on the new owner and the
	// rooms of the partition resynced.
	room := rooms[0]
	moveSlot(t, cl, a.b.k.channel(room))
	eventually(t, 10*time.Second, "unsubscribed resync", func() bool {
		return value(t, b.b.m.resyncs.WithLabelValues(ResyncUnsubscribed)) >= 1
	})
	a.set(room, "after-move", "online", true)
	converged(t, b, a, room, 10*time.Second)
}

// moveSlot migrates key's slot (and its keys) to another master.
func moveSlot(t *testing.T, cl *redistest.Cluster, key string) {
	t.Helper()
	ctx := context.Background()
	c0 := cl.Node(0).Client(t)
	slot, err := c0.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 3)
	src := -1
	for i := range 3 {
		c := cl.Node(i).Client(t)
		if ids[i], err = c.Do(ctx, "CLUSTER", "MYID").Text(); err != nil {
			t.Fatal(err)
		}
		if n, _ := c.ClusterCountKeysInSlot(ctx, int(slot)).Result(); n > 0 {
			src = i
		}
	}
	if src < 0 {
		t.Fatal("no keys in the slot")
	}
	dst := (src + 1) % 3
	sc, dc := cl.Node(src).Client(t), cl.Node(dst).Client(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(dc.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src]).Err())
	must(sc.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst]).Err())
	keys, err := sc.ClusterGetKeysInSlot(ctx, int(slot), 1000).Result()
	must(err)
	host, port, _ := strings.Cut(cl.Node(dst).Addr(), ":")
	args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
	for _, k := range keys {
		args = append(args, k)
	}
	must(sc.Do(ctx, args...).Err())
	for _, i := range []int{dst, src, (src + 2) % 3} {
		must(cl.Node(i).Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[dst]).Err())
	}
}
