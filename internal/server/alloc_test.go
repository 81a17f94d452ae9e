package server_test

import (
	"io"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// TestCommandAllocsEndToEnd measures, on a live connection of a whole
// server, the allocations of handling one run of a row's messages: the
// poller reading and unmasking the frames, presence decoding and applying
// each command, encoding its answer, and the poller writing it (the client
// reads the answers, so each run ends when the server is done). The
// client's own writes and reads allocate nothing.
//
// The tick is an hour: no room flush (whose diff frame is allocated once
// per room and tick, outside any command) runs during the measurement, so
// the changes stay pending and a join's sync is owed, not sent. The room is
// kept alive by bob. Per row, the most allocations per run:
//   - set meta: 1, the changed meta the member keeps.
//   - leave+join: 2, the subscription and the member the join creates again
//     (alice's only connection leaves, so the member goes).
//   - everything else: 0.
//
// The netpoll engine adds 2 allocations per turn of its own (measured with
// -memprofile: a task of the library's goroutine pool, gopool, and the
// closure of connection.onProcess, both inside cloudwego/netpoll); the
// messages of a run are written at once, so they arrive in one turn.
func TestCommandAllocsEndToEnd(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without -race (make test runs them so)")
	}
	rows := []struct {
		name string
		msgs []string
		max  float64
	}{
		{"ping", []string{`{"t":"ping","ts":1700000000000}`}, 0},
		{"pong and ping", []string{`{"t":"pong","ts":1700000000000}`, `{"t":"ping","ts":1}`}, 0},
		{"rejoin", []string{`{"t":"join","id":1,"room":"chat:42"}`}, 0},
		{"set unchanged", []string{`{"t":"set","id":2,"room":"chat:42","state":{"status":"online"}}`}, 0},
		{"set status twice", []string{`{"t":"set","id":3,"room":"chat:42","state":{"status":"away"}}`, `{"t":"set","id":4,"room":"chat:42","state":{"status":"online"}}`}, 0},
		{"typing on, off and ping", []string{`{"t":"typing","room":"chat:42","on":true}`, `{"t":"typing","room":"chat:42","on":false}`, `{"t":"ping","ts":1}`}, 0},
		{"set meta", []string{`{"t":"set","id":5,"room":"chat:42","state":{"meta":{"n":"A"}}}`, `{"t":"set","id":6,"room":"chat:42","state":{"meta":{"n":"B"}}}`}, 2},
		{"leave and join", []string{`{"t":"leave","id":7,"room":"chat:42"}`, `{"t":"join","id":8,"room":"chat:42"}`}, 2},
	}
	overhead := map[string]float64{poller.EngineEpoll: 0, poller.EngineNetpoll: 2}
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			cfg := quickConfig(engine)
			cfg.Presence = presence.Config{Insecure: true, Tick: time.Hour, Rate: 1e9, Burst: 1 << 30}
			n := startServer(t, cfg)
			bob := login(t, n, "bob")
			bob.send(`{"t":"join","id":1,"room":"chat:42"}`)
			bob.expect("ack")
			alice := login(t, n, "alice")
			alice.send(`{"t":"join","id":1,"room":"chat:42"}`)
			alice.expect("ack")
			for _, row := range rows {
				t.Run(row.name, func(t *testing.T) {
					var in []byte
					var want int
					for _, m := range row.msgs {
						in = append(in, maskedText(m)...)
						want += len(answer(m))
					}
					out := make([]byte, want)
					run := func() {
						if _, err := alice.conn.Write(in); err != nil {
							t.Fatal(err)
						}
						if _, err := io.ReadFull(alice.conn, out); err != nil {
							t.Fatal(err)
						}
					}
					run() // warm up, and check the answers
					var got []byte
					for _, m := range row.msgs {
						got = append(got, answer(m)...)
					}
					if string(out) != string(got) {
						t.Fatalf("answers %q, want %q", out, got)
					}
					if a := leastAllocs(run); a > row.max+overhead[engine] {
						t.Errorf("%v allocations per run, want at most %v", a, row.max+overhead[engine])
					} else {
						t.Logf("%v allocations per run", a)
					}
				})
			}
		})
	}
}

// TestHeartbeatAllocsEndToEnd measures the server's heartbeat on a live,
// joined connection of a whole server: the poller's deadline sweep, the
// session's ping, its frame and the write. Each run waits for one ping (at
// the poller's deadline resolution, 100 ms).
func TestHeartbeatAllocsEndToEnd(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without -race (make test runs them so)")
	}
	if testing.Short() {
		t.Skip("a few seconds of pings")
	}
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			cfg := quickConfig(engine)
			cfg.Presence = presence.Config{Insecure: true, Tick: time.Hour, HeartbeatInterval: 50 * time.Millisecond}
			n := startServer(t, cfg)
			alice := login(t, n, "alice")
			alice.send(`{"t":"join","id":1,"room":"chat:42"}`)
			alice.expect("ack")
			ping := len(answer(`{"t":"ping","ts":1700000000000}`)) // a ping is as long as its pong
			out := make([]byte, ping)
			run := func() {
				if _, err := io.ReadFull(alice.conn, out); err != nil {
					t.Fatal(err)
				}
			}
			run()
			if string(out[2:11]) != `{"t":"pin` {
				t.Fatalf("got %q, want a ping", out)
			}
			// The least of two measurements, as in leastAllocs.
			least := testing.AllocsPerRun(20, run)
			if least > 0 {
				least = min(least, testing.AllocsPerRun(20, run))
			}
			if least > 0 {
				t.Errorf("%v allocations per ping, want 0 (3 before this guard)", least)
			}
		})
	}
}

// leastAllocs is testing.AllocsPerRun of run, the least of three
// measurements. It counts the allocations of the whole process: under CPU
// contention (other test binaries running) the runtime's own come and go,
// while the server's are in every measurement.
func leastAllocs(run func()) float64 {
	least := testing.AllocsPerRun(200, run)
	for range 2 {
		if least == 0 {
			break
		}
		least = min(least, testing.AllocsPerRun(200, run))
	}
	return least
}

// maskedText is msg as one masked client text frame.
func maskedText(msg string) []byte {
	b, err := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(msg))))
	if err != nil {
		panic(err)
	}
	return b
}

// answer is the server's frame answering msg: an ack, a pong, or nothing.
func answer(msg string) []byte {
	var c wire.Command
	if err := wire.DecodeCommand([]byte(msg), &c); err != nil {
		panic(err)
	}
	var p []byte
	switch c.T {
	case wire.TPing:
		p = wire.AppendPong(nil, c.TS)
	case wire.TJoin, wire.TLeave, wire.TSet:
		p = wire.AppendAck(nil, c.ID)
	default:
		return nil
	}
	return append([]byte{0x81, byte(len(p))}, p...)
}
