package server_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// TestRepliesNeverVanish: while a connection is open, every command gets
// its ack or err, on both engines, even when one read brings more commands
// than the outbox holds answers for (the transport pauses the connection
// until the client reads), and beside a stream of room diffs filling the
// outbox of a client that is not reading. (That diffs, being offered, never
// take the room the reader checked for a reply is shown deterministically
// by poller's TestOfferKeepsReplyReserve: here the window is too narrow to
// hit on purpose.)
func TestRepliesNeverVanish(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine+"/a burst of refused joins", func(t *testing.T) {
			// The reproduction: -max-rooms 1 -outbox 4096, one
			// join, then 35 joins of 128-byte rooms in one write, each
			// refused with an err quoting the room (~215 bytes).
			n := startServer(t, server.Config{Engine: engine, Outbox: 4096, Presence: presence.Config{Insecure: true, MaxRooms: 1}})
			c := login(t, n, "alice")
			c.send(`{"t":"join","id":1,"room":"a"}`)
			expectAck(c, 1)
			c.expect("sync")
			var batch []string
			for id := 2; id <= 36; id++ {
				batch = append(batch, fmt.Sprintf(`{"t":"join","id":%d,"room":"%03d%s"}`, id, id, strings.Repeat("r", 125)))
			}
			c.sendBatch(batch...)
			for id := int64(2); id <= 36; id++ {
				expectErr(c, id, wire.ErrCodeTooManyRooms)
			}
		})
		t.Run(engine+"/commands beside a stream of diffs", func(t *testing.T) {
			n := startServer(t, server.Config{Engine: engine, Outbox: 8192, Presence: presence.Config{
				Insecure: true, Tick: 10 * time.Millisecond, Rate: 1000, Burst: 1000,
			}})
			busy := login(t, n, "busy")
			busy.send(`{"t":"join","id":1,"room":"r"}`)
			expectAck(busy, 1)
			c := dialSmallBuffer(t, n)
			c.send(`{"t":"hello","v":1,"user":"alice"}`)
			c.expect("welcome")
			c.send(`{"t":"join","id":1,"room":"r"}`)
			expectAck(c, 1)
			// busy changes its 400-byte meta every few milliseconds (and
			// reads everything) while alice does not read: her outbox
			// fills with diffs.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					if _, _, err := wsutil.ReadServerData(busy.conn); err != nil {
						return
					}
				}
			})
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					set := fmt.Sprintf(`{"t":"set","id":%d,"room":"r","state":{"meta":{"n":%d,"pad":%q}}}`, i+2, i, strings.Repeat("p", 400))
					if wsutil.WriteClientText(busy.conn, []byte(set)) != nil {
						return
					}
				}
			})
			t.Cleanup(func() { close(stop); busy.conn.Close(); wg.Wait() })
			time.Sleep(300 * time.Millisecond) // not a synchronization: lets diffs pile up
			var batch []string
			for id := 2; id <= 41; id++ {
				batch = append(batch, fmt.Sprintf(`{"t":"set","id":%d,"room":"r","state":{"status":"s%d"}}`, id, id))
			}
			c.sendBatch(batch...)
			acked := map[int64]bool{}
			deadline := time.Now().Add(20 * time.Second)
			for len(acked) < 40 && time.Now().Before(deadline) {
				e := c.next(10 * time.Second)
				switch e.T {
				case "ack":
					acked[e.ID] = true
				case "err":
					t.Fatalf("err %+v", e)
				}
			}
			for id := int64(2); id <= 41; id++ {
				if !acked[id] {
					t.Errorf("set %d got no ack", id)
				}
			}
		})
	}
}
