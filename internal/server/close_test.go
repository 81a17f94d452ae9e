package server_test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
)

// closeLabels are the reason labels of presenced_connections_closed_total,
// as documented in docs/protocol.md (dashboards depend on them).
var closeLabels = []string{"peer", "reset", "heartbeat", "hello_timeout", "slow", "token_expired",
	"auth", "rate", "protocol", "drain", "shutdown", "internal", "admin"}

// closedByReason returns presenced_connections_closed_total by reason.
func closedByReason(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "presenced_connections_closed_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return got
}

// TestClosedByReason checks that each way a connection ends adds one to its
// own reason of presenced_connections_closed_total, and nothing to another,
// and that the "connection closed" log carries the reason and the code.
// Every label exists (at 0) before the first close.
func TestClosedByReason(t *testing.T) {
	const hello = `{"t":"hello","v":1,"user":"alice"}`
	cases := []struct {
		name   string
		cfg    func(cfg *server.Config)
		hello  string                                       // sent first unless empty
		act    func(t *testing.T, c *wsClient, stop func()) // ends the connection
		want   string                                       // the reason label
		code   wire.CloseCode                               // the close code logged (0: none)
		noRead bool                                         // act reads the close itself
	}{
		{
			name: "heartbeat timeout",
			cfg: func(cfg *server.Config) {
				cfg.Presence.HeartbeatInterval = 200 * time.Millisecond
				cfg.Presence.HeartbeatTimeout = 200 * time.Millisecond
			},
			hello: hello,
			act:   func(*testing.T, *wsClient, func()) {}, // answer no ping
			want:  "heartbeat", code: wire.CloseHeartbeat,
		},
		{
			name:  "invalid JSON",
			hello: hello,
			act:   func(_ *testing.T, c *wsClient, _ func()) { c.send(`{"t":"join",`) },
			want:  "protocol", code: wire.CloseInvalidPayload,
		},
		{
			name: "rate flood",
			cfg: func(cfg *server.Config) {
				cfg.Presence.Rate = 5
				cfg.Presence.Burst = 5
				cfg.Presence.FloodSeconds = 1
			},
			hello: hello,
			act: func(t *testing.T, c *wsClient, _ func()) {
				stop := c.flood(`{"t":"ping","ts":1}`, 2*time.Millisecond)
				defer stop()
				code := c.awaitClose()
				stop()
				c.answerClose()
				if code != wire.CloseRateLimited {
					t.Fatalf("close code %d, want 4029", code)
				}
			},
			want: "rate", code: wire.CloseRateLimited, noRead: true,
		},
		{
			name:  "binary frame",
			hello: hello,
			act:   func(t *testing.T, c *wsClient, _ func()) { writeFrames(t, c.conn, ws.OpBinary, "\x00\x01") },
			want:  "protocol", code: wire.CloseUnsupported,
		},
		{
			name: "message too big (the transport's 1009)",
			act: func(_ *testing.T, c *wsClient, _ func()) {
				c.send(`{"t":"ping","pad":"` + strings.Repeat("p", 4096) + `"}`)
			},
			want: "protocol", code: wire.CloseTooBig,
		},
		{
			name: "join before hello",
			act:  func(_ *testing.T, c *wsClient, _ func()) { c.send(`{"t":"join","id":1,"room":"r"}`) },
			want: "protocol", code: wire.CloseBadRequest,
		},
		{
			name: "hello timeout",
			cfg:  func(cfg *server.Config) { cfg.Presence.HelloTimeout = 200 * time.Millisecond },
			act:  func(*testing.T, *wsClient, func()) {},
			want: "hello_timeout", code: wire.CloseHelloTimeout,
		},
		{
			name: "bad token",
			cfg:  withJWT,
			act:  func(_ *testing.T, c *wsClient, _ func()) { c.send(`{"t":"hello","v":1,"token":"x.y.z"}`) },
			want: "auth", code: wire.CloseUnauthorized,
		},
		{
			name: "auth for another user",
			cfg:  withJWT,
			act: func(t *testing.T, c *wsClient, _ func()) {
				tokenHello(c, signToken(t, "alice", time.Now().Add(time.Hour), nil))
				c.send(map[string]any{"t": "auth", "id": 1, "token": signToken(t, "bob", time.Now().Add(time.Hour), nil)})
				expectErr(c, 1, wire.ErrCodeForbidden)
			},
			want: "auth", code: wire.CloseForbidden,
		},
		{
			name: "token expired",
			cfg: func(cfg *server.Config) {
				cfg.Presence.Insecure = false
				cfg.Presence.Auth = fakeAuth{}
				cfg.Presence.AuthGrace = 200 * time.Millisecond
			},
			act:  func(_ *testing.T, c *wsClient, _ func()) { tokenHello(c, "short") }, // alice for 300 ms
			want: "token_expired", code: wire.CloseTokenExpired,
		},
		{
			name: "the authenticator fails at hello",
			cfg: func(cfg *server.Config) {
				cfg.Presence.Insecure = false
				cfg.Presence.Auth = fakeAuth{}
			},
			act: func(_ *testing.T, c *wsClient, _ func()) {
				c.send(`{"t":"hello","v":1,"token":"boom"}`)
				expectErr(c, 0, wire.ErrCodeInternal)
			},
			want: "internal", code: wire.CloseInternalError,
		},
		{
			name:  "client close 1000",
			hello: hello,
			act:   func(_ *testing.T, c *wsClient, _ func()) { c.close() },
			want:  "peer", code: wire.CloseNormal, noRead: true,
		},
		{
			name:  "client close 1001",
			hello: hello,
			act: func(t *testing.T, c *wsClient, _ func()) {
				f := ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "")))
				if err := ws.WriteFrame(c.conn, f); err != nil {
					t.Fatal(err)
				}
			},
			want: "peer", code: wire.CloseGoingAway,
		},
		{
			name:  "connection dropped",
			hello: hello,
			act:   func(_ *testing.T, c *wsClient, _ func()) { c.drop() },
			want:  "reset", noRead: true,
		},
		{
			name:  "drain",
			hello: hello,
			act: func(t *testing.T, c *wsClient, stop func()) {
				go stop() // Run returns once the client answered
				c.expect("bye")
			},
			want: "drain", code: wire.CloseGoingAway,
		},
	}
	for _, engine := range engines {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				cfg := quickConfig(engine)
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				n, stop := startServerStop(t, cfg)
				before := closedByReason(t, n.reg)
				for _, l := range closeLabels {
					if v, ok := before[l]; !ok || v != 0 {
						t.Errorf("before any close: closed_total{reason=%q} = %v (exported: %v), want 0", l, v, ok)
					}
				}
				c := connect(t, n)
				if tc.hello != "" {
					c.send(tc.hello)
					c.expect("welcome")
				}
				tc.act(t, c, func() { _ = stop() })
				if !tc.noRead {
					if got := c.closeCode(); got != tc.code {
						t.Fatalf("close code %d, want %d", got, tc.code)
					}
				}
				eventually(t, 10*time.Second, func() error {
					got := closedByReason(t, n.reg)
					for l, v := range got {
						want := 0.0
						if l == tc.want {
							want = 1
						}
						if v != want {
							return fmt.Errorf("closed_total{reason=%q} = %v, want %v (all: %v)", l, v, want, got)
						}
					}
					if got[tc.want] != 1 {
						return fmt.Errorf("no closed_total{reason=%q} (all: %v)", tc.want, got)
					}
					if n.logs.find("msg", "connection closed", "reason", tc.want, "code", strconv.Itoa(int(tc.code))) == nil {
						return fmt.Errorf("no log of the close with reason=%s code=%d", tc.want, tc.code)
					}
					return nil
				})
				if got := slices.Sorted(maps.Keys(closedByReason(t, n.reg))); !slices.Equal(got, slices.Sorted(slices.Values(closeLabels))) {
					t.Errorf("reason labels %v, want %v", got, closeLabels)
				}
			})
		}
	}
}
