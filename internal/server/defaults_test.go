package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// TestRegressDefaultJWTLeeway: a library user of server.New with a zero
// JWT.Leeway gets the binary's default, auth.DefaultLeeway (5 s) of clock
// skew, not none: a token that expired 2 s ago is accepted, one that
// expired a minute ago is refused.
func TestRegressDefaultJWTLeeway(t *testing.T) {
	n := startServer(t, server.Config{JWT: auth.Config{HS256Secret: testSecret}})

	c := connect(t, n)
	w := tokenHello(c, signToken(t, "alice", time.Now().Add(-2*time.Second), nil))
	if w.User != "alice" {
		t.Fatalf("welcome user %q, want alice", w.User)
	}
	alive(c)

	c = connect(t, n)
	c.send(map[string]any{"t": "hello", "v": 1, "token": signToken(t, "alice", time.Now().Add(-time.Minute), nil)})
	if got := c.closeCode(); got != wire.CloseUnauthorized {
		t.Fatalf("a token expired a minute ago: close %d, want 4101", got)
	}
}

// TestMaxMessageAnnouncedIsEnforced: the max that welcome announces is the
// limit the transport enforces, whatever the Config says: a message of
// exactly max bytes is served, one byte more closes the connection with
// 1009. Presence.MaxMessage cannot make them disagree.
func TestMaxMessageAnnouncedIsEnforced(t *testing.T) {
	// padded is a ping of exactly n bytes.
	padded := func(n int) string {
		const head, tail = `{"t":"ping","ts":7,"pad":"`, `"}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	cases := []struct {
		name string
		cfg  func(cfg *server.Config)
		want int
	}{
		{name: "default", cfg: func(*server.Config) {}, want: poller.DefaultMaxMessage},
		{name: "set", cfg: func(cfg *server.Config) { cfg.MaxMessage = 2048 }, want: 2048},
		{name: "presence's own ignored", cfg: func(cfg *server.Config) {
			cfg.MaxMessage = 2048
			cfg.Presence.MaxMessage = 8000
		}, want: 2048},
	}
	for _, engine := range engines {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				cfg := server.Config{Engine: engine, Presence: presence.Config{Insecure: true}}
				tc.cfg(&cfg)
				n := startServer(t, cfg)
				c := connect(t, n)
				c.send(map[string]any{"t": "hello", "v": 1, "user": "alice"})
				if w := c.expect("welcome"); w.Max != tc.want {
					t.Fatalf("welcome max %d, want %d", w.Max, tc.want)
				}
				c.send(padded(tc.want))
				c.waitFor(5*time.Second, "pong 7", func(m message) bool { return m.T == "pong" && m.TS == 7 })
				c.send(padded(tc.want + 1))
				if got := c.closeCode(); got != wire.CloseTooBig {
					t.Fatalf("a message of max+1 bytes: close %d, want 1009", got)
				}
			})
		}
	}
}
