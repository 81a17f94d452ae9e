package poller

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestOfferToSocketDoesNotAllocate: offering one pre-encoded frame (a
// room's diff) to one connection that keeps up, down to the write into a
// real socket, allocates nothing, on both engines.
func TestOfferToSocketDoesNotAllocate(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		srv, rec := startRecorded(t, engine, Config{})
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		sc := rec.conn(t, c.localAddr())

		frame := AppendTextFrame(nil, make([]byte, 200))
		const runs = 2000
		var wg sync.WaitGroup
		wg.Go(func() { // the peer reads everything, so the outbox stays empty
			buf := make([]byte, 64<<10)
			for total := 0; total < (runs+1)*len(frame); {
				n, err := c.conn.Read(buf)
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				total += n
			}
		})
		allocs := testing.AllocsPerRun(runs, func() {
			if err := sc.Offer(frame); err != nil {
				t.Fatal(err)
			}
		})
		wg.Wait()
		if allocs != 0 {
			t.Errorf("Offer to a socket: %v allocations, want 0", allocs)
		}
		c.closeHandshake(1000, "")
		rec.check(t)
	})
}

// TestManyDeadlines: deadlines of many connections, spread over several
// blocks of the sweep's index and both loops, set from other goroutines
// while the sweeps run, each fire exactly once and never early.
func TestManyDeadlines(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		const n = 100
		srv, rec := startRecorded(t, engine, Config{Tick: 5 * time.Millisecond, Loops: 2})
		clients := make([]*rawClient, n)
		conns := make([]*Conn, n)
		for i := range clients {
			clients[i] = dialRaw(t, srv.Addr())
			clients[i].upgrade()
			conns[i] = rec.conn(t, clients[i].localAddr())
		}
		want := make([]time.Time, n)
		var wg sync.WaitGroup
		for i := range conns {
			want[i] = time.Now().Add(time.Duration(rand.IntN(300)) * time.Millisecond)
			wg.Go(func() {
				conns[i].SetDeadline(want[i].Add(time.Hour)) // replaced below: never fires
				time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond)
				conns[i].SetDeadline(want[i])
			})
		}
		wg.Wait()
		eventually(t, ioTimeout, func() error {
			for i, c := range clients {
				if len(rec.deadlines(c.localAddr())) == 0 {
					return fmt.Errorf("connection %d: no OnDeadline yet", i)
				}
			}
			return nil
		})
		time.Sleep(50 * time.Millisecond) // a second call would come within a few ticks
		for i, c := range clients {
			fired := rec.deadlines(c.localAddr())
			if len(fired) != 1 {
				t.Errorf("connection %d: OnDeadline called %d times, want 1", i, len(fired))
				continue
			}
			if fired[0].Before(want[i]) {
				t.Errorf("connection %d: OnDeadline %v before its deadline", i, want[i].Sub(fired[0]))
			}
		}
		for _, c := range clients {
			c.closeHandshake(1000, "")
		}
		rec.check(t)
	})
}
