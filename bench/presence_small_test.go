package bench

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/poller"
)

// The tests below run the presence benchmarks at a small scale so that
// `go test ./...` keeps them working. They check behaviour, never timings
// or memory figures.

func TestIdlePresenceSmall(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			r := runIdlePresence(t, idlePresenceConfig(engine, ""), 200, 20, 100*time.Millisecond)
			t.Logf("%d conns: heap %.0f B/conn, rss %.0f B/conn, %.2f goroutines/conn", r.conns, r.heap, r.rss, r.goroutines)
			if r.goroutines >= 0.5 {
				t.Errorf("%.2f goroutines per connection, want 0", r.goroutines)
			}
		})
	}
}

// TestFanoutSmall checks the fan-out harness: runFanout itself fails the
// test on a broken cursor chain, more than one diff per tick, or a
// listener without the changer's final status.
func TestFanoutSmall(t *testing.T) {
	r := runFanout(t, poller.EngineEpoll, 200, 500*time.Millisecond, 50*time.Millisecond)
	if r.counts.cdiffs == 0 {
		t.Errorf("no diff carried the changer's state: %+v", r.counts)
	}
}

func TestSlowConsumerSmall(t *testing.T) {
	// Filling the kernel's buffers and the outbox takes about a second at
	// the changer's 100 diffs a second, longer on a busy machine: the
	// stall lasts until the close, bounded generously.
	const bound = 30 * time.Second
	r := runSlowConsumer(t, poller.EngineEpoll, slowConfig{
		d: bound, untilClosed: true, slowTimeout: 300 * time.Millisecond, tick: 10 * time.Millisecond,
		history: 8, outbox: 4096, pad: 400, rcvbuf: 2048,
	})
	if r.closedAt < 0 {
		t.Errorf("the slow client was not closed with 4002 within %v", bound)
	}
}

// TestParseDiff checks the listeners' shortcut parser against
// wire.DecodeEvent on diffs built the way the server builds them.
func TestParseDiff(t *testing.T) {
	member := func(p []byte, user, status, meta string) []byte {
		return wire.AppendMember(p, user, status, []byte(meta))
	}
	from, cur := wire.Cursor{Epoch: 123456, Seq: 41}, wire.Cursor{Epoch: 123456, Seq: 42}
	start := func() []byte { return wire.AppendDiffStart(nil, "fan", from, cur, 10001) }
	cases := []struct {
		name       string
		msg        []byte
		wantStatus string // "" when the changer has no change
	}{
		{
			name: "changer update",
			msg: wire.AppendEnd(wire.AppendListEnd(member(wire.AppendListStart(start(), "update"),
				"changer", "s7", `{"n":7,"ts":1762000000123456789}`))),
			wantStatus: "s7",
		},
		{
			name: "changer among joins and updates",
			msg: wire.AppendEnd(wire.AppendListEnd(member(member(wire.AppendListStart(
				wire.AppendListEnd(member(wire.AppendListStart(start(), "join"), "l1", "online", "")), "update"),
				"changer2", "x", `{"n":1,"ts":2}`), "changer", "s8", `{"n":8,"ts":1762000000999999999,"p":"xx"}`))),
			wantStatus: "s8",
		},
		{
			name: "joins only",
			msg:  wire.AppendEnd(wire.AppendListEnd(member(wire.AppendListStart(start(), "join"), "l2", "online", `{"i":2}`))),
		},
		{
			name: "changer leaves",
			msg:  wire.AppendEnd(wire.AppendListEnd(wire.AppendListString(wire.AppendListStart(start(), "leave"), "changer"))),
		},
		{
			name: "typing only",
			msg:  wire.AppendEnd(wire.AppendStrings(start(), "typing", []string{"changer"})),
		},
	}
	key := []byte(`{"u":"changer","s":"`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e wire.Event
			if err := wire.DecodeEvent(tc.msg, &e); err != nil {
				t.Fatalf("the test's diff does not decode: %v\n%s", err, tc.msg)
			}
			d, ok := parseDiff(tc.msg, key)
			if !ok {
				t.Fatalf("parseDiff(%s) failed", tc.msg)
			}
			if string(d.from) != e.From || string(d.cur) != e.Cur {
				t.Errorf("from, cur = %s, %s; DecodeEvent says %s, %s", d.from, d.cur, e.From, e.Cur)
			}
			var want *wire.Member
			for i := range e.Update {
				if e.Update[i].U == "changer" {
					want = &e.Update[i]
				}
			}
			if want == nil {
				if d.status != nil {
					t.Errorf("status %q, want none", d.status)
				}
				return
			}
			var meta struct{ N, TS int64 }
			if err := json.Unmarshal(want.M, &meta); err != nil {
				t.Fatal(err)
			}
			if string(d.status) != tc.wantStatus || string(d.status) != want.S || d.n != meta.N || d.ts != meta.TS {
				t.Errorf("status %q n %d ts %d; DecodeEvent says %q %d %d", d.status, d.n, d.ts, want.S, meta.N, meta.TS)
			}
		})
	}
	if _, ok := parseDiff([]byte(`{"t":"sync","room":"fan"}`), key); ok {
		t.Error("parseDiff accepted a sync")
	}
}
