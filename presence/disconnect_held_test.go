package presence

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// TestDisconnect40xxKeepsTheDrainRetry: a 40xx Disconnect that takes over
// a drained connection keeps its hold at bye's retry_ms + LeaveGrace: the
// client saw bye and comes back only after retry_ms.
func TestDisconnect40xxKeepsTheDrainRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 20 * time.Second
		e := startHub(t, Config{Insecure: true, LeaveGrace: time.Second})
		var cs []*client
		for i := range 6 {
			c := dial(t, e.h, fmt.Sprintf("u%d", i))
			c.join("r", 1, "")
			cs = append(cs, c)
		}
		e.tick()
		for _, c := range cs {
			c.events()
		}
		e.h.Drain(window)
		// The member with the longest retry_ms, so that it outlasts the grace.
		var c *client
		var retry time.Duration
		for _, x := range cs {
			if ev := x.expect("bye")[0]; time.Duration(ev.RetryMS)*time.Millisecond >= retry {
				c, retry = x, time.Duration(ev.RetryMS)*time.Millisecond
			}
		}
		if retry < 2*time.Second {
			t.Skipf("longest retry_ms %v: too short to tell from the grace", retry)
		}
		if cl, d := e.h.Disconnect(c.name, wire.CloseCode(4000)); cl != 0 || d != 1 {
			t.Fatalf("Disconnect(%s, 4000) = (%d, %d), want (0, 1)", c.name, cl, d)
		}
		if got := c.s.HandleClose(ConnEnd{EndClosed, wire.CloseGoingAway}); got != CloseAdmin {
			t.Fatalf("HandleClose = %v, want admin", got)
		}
		closed := time.Now()
		hold, tick := retry+e.h.cfg.LeaveGrace, e.h.cfg.Tick
		for time.Since(closed) < hold+2*tick {
			e.tick()
			members, _ := roomState(e.h, "r")
			_, held := members[c.name]
			if el := time.Since(closed); el < hold && !held || el >= hold+tick && held {
				t.Fatalf("%s (retry_ms %d): held %v %v after its close, want held for %v (retry_ms + LeaveGrace)",
					c.name, retry.Milliseconds(), held, el, hold)
			}
		}
	})
}
