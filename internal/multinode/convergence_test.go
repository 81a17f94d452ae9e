package multinode

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
)

// Convergence settings.
const (
	convUsers    = 30
	convRooms    = 5
	convDuration = 20 * time.Second
	convKillAt   = 8 * time.Second  // node2 is SIGKILLed ...
	convBackAt   = 11 * time.Second // ... and started again
	convOpEvery  = 20 * time.Millisecond
)

// TestConvergence: three nodes, thirty clients doing random joins, leaves,
// sets, typing and disconnects for 20 s with fixed seeds, and one node
// killed and restarted meanwhile. After quiescence and the bounds every
// client's view of every room equals the truth: no ghost, nobody missing,
// nobody typing.
func TestConvergence(t *testing.T) {
	tp := standalone(t)
	g := startNodes(t, tp, 3)
	peers := make([]*peer, convUsers)
	proxies := make([]*proxy, convUsers)
	for i := range peers {
		proxies[i] = newProxy(t, g.n[i%3].addr)
		peers[i] = dial(t, proxies[i].url(), fmt.Sprintf("u%02d", i))
	}

	ctx, cancel := context.WithTimeout(context.Background(), convDuration)
	defer cancel()
	var ops, failed atomic.Int64
	var wg sync.WaitGroup
	for d := range 3 {
		// Driver d works the clients of node d, with its own seed.
		rng := rand.New(rand.NewPCG(20261204, uint64(d)))
		wg.Go(func() {
			tick := time.NewTicker(convOpEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				i := d + 3*rng.IntN(convUsers/3)
				p := peers[i]
				if p.c.ConnState() != client.StateConnected {
					continue
				}
				ops.Add(1)
				if err := randomOp(rng, p, proxies[i]); err != nil {
					failed.Add(1)
					t.Logf("%s: %v", p.user, err)
				}
			}
		})
	}
	start := time.Now()
	wait := func(at time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(start.Add(at))):
		}
	}
	wait(convKillAt)
	g.n[2].kill()
	t.Logf("node2 killed at %v", time.Since(start).Round(time.Millisecond))
	wait(convBackAt)
	g.n[2].restart()
	t.Logf("node2 back at %v", time.Since(start).Round(time.Millisecond))
	wg.Wait()
	t.Logf("%d operations, %d failed", ops.Load(), failed.Load())

	// Quiescence: every client connected, then every bound.
	eventually(t, 10*time.Second, func() error {
		for _, p := range peers {
			if s := p.c.ConnState(); s != client.StateConnected {
				return fmt.Errorf("%s: %v", p.user, s)
			}
		}
		return nil
	})
	bound := leaveGrace + 2*nodeTTL + typingTTL + propagation
	took, err := within(bound, func() error { return viewsMatch(peers, nil, false) })
	if err != nil {
		t.Fatalf("views %v after quiescence (bound %v): %v", took, bound, err)
	}
	t.Logf("every view of every room true %v after quiescence", took)
	during(t, nodeTTL, func() error { return viewsMatch(peers, nil, false) })
}

// randomOp does one random thing as p: join, leave, set, typing, or a cut
// connection.
func randomOp(rng *rand.Rand, p *peer, px *proxy) error {
	room := fmt.Sprintf("room%d", rng.IntN(convRooms))
	p.mu.Lock()
	_, joined := p.intent[room]
	p.mu.Unlock()
	statuses := []string{"online", "away", "busy"}
	st := state(statuses[rng.IntN(len(statuses))], rng.IntN(1000))
	switch r := rng.IntN(100); {
	case r < 30:
		if joined {
			return p.trySet(room, st)
		}
		return p.tryJoin(room, st)
	case r < 45:
		if joined {
			return p.tryLeave(room)
		}
	case r < 70:
		if joined {
			return p.trySet(room, st)
		}
	case r < 95:
		if joined {
			_ = p.c.Typing(room, rng.IntN(3) > 0) // fire and forget
		}
	default:
		px.cut()
	}
	return nil
}
