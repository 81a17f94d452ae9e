package bench

import (
	"testing"
	"time"
)

// The tests below run the benchmark harness at a small scale so that
// `go test ./...` keeps it working. They check behaviour (connections
// opened, released, no goroutine per connection), never timings or memory
// figures.

func TestIdleSmall(t *testing.T) {
	const n = 200
	for _, engine := range engines {
		for _, mode := range []string{modeIdle, modeSlowloris} {
			t.Run(engine+"/"+mode, func(t *testing.T) {
				r := runIdle(t, engine, mode, n, 100*time.Millisecond)
				t.Logf("%d conns: heap %.0f B/conn, rss %.0f B/conn, %.2f goroutines/conn", r.conns, r.heap, r.rss, r.goroutines)
				// Not a measurement at this scale, but a goroutine per
				// connection (or per stalled handshake) would show.
				if r.goroutines >= 0.5 {
					t.Errorf("%.2f goroutines per connection, want 0", r.goroutines)
				}
			})
		}
	}
}

func TestHandshakeSmall(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			r := runHandshakes(t, engine, 4, 300*time.Millisecond)
			if r.count == 0 || r.errors != 0 {
				t.Errorf("%d handshakes, %d errors; want some and none", r.count, r.errors)
			}
		})
	}
}
