package redisbus

import (
	"context"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/presence"
)

// TestWriteAllocs reports the allocations of one room's write (a delta
// of one user, over a real Redis), webhooks off and on: off must not pay
// for the events' keys and arguments (review #8).
func TestWriteAllocs(t *testing.T) {
	opts := standalone(redistest.Start(t))
	off := startBusWith(t, Config{Redis: opts, Node: "off"}, nil)
	on, _ := startEventBus(t, opts, "on")
	measure := func(n *node) float64 {
		eventually(t, 5*time.Second, "registered", func() bool { return n.b.ID() != "" })
		w := writerState{id: n.b.ID(), seqs: map[string]uint64{}, indexed: map[string]bool{}, acked: map[string]uint64{}}
		ctx := context.Background()
		rooms := []string{"alloc"}
		i := 0
		run := func() {
			i++
			batch := map[string]*pending{"alloc": {hs: map[string]presence.Holding{
				"u": {User: "u", Held: true, Status: "online", Version: uint64(i)}}}}
			if f, _, _ := n.b.write(ctx, &w, rooms, batch); len(f) > 0 {
				t.Fatalf("write failed")
			}
		}
		run()
		least := testing.AllocsPerRun(200, run)
		for range 2 {
			least = min(least, testing.AllocsPerRun(200, run))
		}
		return least
	}
	a, b := measure(off), measure(on)
	t.Logf("allocs per write: webhooks off %.0f, on %.0f", a, b)
	// The events' 4 keys and 3 arguments (and their interface boxing)
	// are built only with webhooks. Off costs what main (before webhooks)
	// cost with the same loop: 43 (go-redis v9.23, Go 1.26).
	if b-a < 8 {
		t.Errorf("webhooks off: %.0f allocs per write, on %.0f: off still builds the events' keys and arguments", a, b)
	}
	if a > 43 {
		t.Errorf("webhooks off: %.0f allocs per write, more than the 43 of the bus without webhooks", a)
	}
}
