package server_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// Regression tests for the review fixes of commit "presence: monotonic hub
// clock ...": the server refuses a sync budget that no outbox could take,
// and passes the JWT leeway to the verifier.

// TestRegressSyncBudgetOutbox: server.New refuses a Presence.SyncBudget
// that does not fit the outbox with its frame header (every sync would be
// refused by the outbox, and the client closed 4002); one that fits works.
func TestRegressSyncBudgetOutbox(t *testing.T) {
	tests := []struct {
		name    string
		outbox  int // 0: the default, 64 KiB
		budget  int
		wantErr bool
		wantIn  string // what the error names: SyncBudget unless set
	}{
		{name: "budget larger than the outbox", outbox: 4096, budget: 8192, wantErr: true},
		{name: "budget the size of the outbox", outbox: 4096, budget: 4096, wantErr: true},
		{name: "budget larger than the default outbox", budget: 64<<10 + 1, wantErr: true},
		{name: "budget beside the reply reserve", outbox: 4096, budget: 4096 - presence.MaxReplyBytes - 16},
		{name: "budget into the reply reserve", outbox: 4096, budget: 4096 - presence.MaxReplyBytes - 15, wantErr: true},
		{name: "no budget: half the outbox, or what the reserve leaves", outbox: 4096},
		{name: "an outbox below the minimum", outbox: server.MinOutbox - 1, wantErr: true, wantIn: "Outbox"},
	}
	for i := range tests {
		if tests[i].wantIn == "" {
			tests[i].wantIn = "SyncBudget"
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := quickConfig(poller.EngineEpoll)
			cfg.Addr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
			cfg.Outbox = tt.outbox
			cfg.Presence.SyncBudget = tt.budget
			if !tt.wantErr {
				n := startServer(t, cfg)
				c := login(t, n, "alice")
				if s := joinRoom(c, "r"); s.Count != 1 {
					t.Errorf("sync count %d, want 1", s.Count)
				}
				return
			}
			s, err := server.New(cfg)
			if err == nil {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				_ = s.Run(ctx) // release the listeners
				t.Fatalf("server.New with SyncBudget %d and Outbox %d: no error", tt.budget, tt.outbox)
			}
			if want := tt.wantIn; !strings.Contains(err.Error(), want) {
				t.Errorf("server.New: %v, want an error naming %s", err, want)
			}
		})
	}
}

// TestRegressNegativeSyncBudget: a negative Presence.SyncBudget must not
// bypass the outbox check: either server.New refuses it, or syncs still fit
// the outbox (a client gets the sync of a room larger than the outbox).
func TestRegressNegativeSyncBudget(t *testing.T) {
	cfg := quickConfig(poller.EngineEpoll)
	cfg.Outbox = 4096
	cfg.Presence.SyncBudget = -1
	cfg.Presence.SlowTimeout = time.Second
	cfg.Addr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	s, err := server.New(cfg)
	if err != nil {
		if !strings.Contains(err.Error(), "SyncBudget") {
			t.Errorf("server.New: %v, want an error naming SyncBudget", err)
		}
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Run(ctx) // accepted: check its syncs on a server of its own
	n := startServer(t, cfg)
	meta := map[string]any{"k": strings.Repeat("m", 480)}
	for i := range 12 { // a sync of about 6 KiB
		c := login(t, n, fmt.Sprintf("member%d", i))
		c.send(map[string]any{"t": "join", "id": 1, "room": "big", "state": map[string]any{"meta": meta}})
		lcUntil(c, "ack")
	}
	c := login(t, n, "reader")
	c.send(map[string]any{"t": "join", "id": 1, "room": "big"})
	c.expect("ack")
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		m, err := readFrame(c.conn)
		if err != nil {
			t.Fatalf("waiting for the sync: %v", err)
		}
		if m.Header.OpCode == ws.OpClose && len(m.Payload) >= 2 {
			t.Fatalf("closed %d before any sync: the sync does not fit the outbox", binary.BigEndian.Uint16(m.Payload))
		}
		var e wire.Event
		if wire.DecodeEvent(m.Payload, &e) == nil && e.T == wire.TSync {
			if e.Count != 13 || !e.Partial {
				t.Errorf("sync count %d partial %v, want 13, partial", e.Count, e.Partial)
			}
			return
		}
	}
}

// TestRegressJWTLeeway: cfg.JWT.Leeway reaches the verifier: a token
// issued a little in the future (the issuer's clock ahead) is accepted
// within the leeway and refused beyond it.
func TestRegressJWTLeeway(t *testing.T) {
	token := func(t *testing.T, claims jwt.MapClaims) string {
		t.Helper()
		claims["sub"] = "alice"
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		return tok
	}
	leeway := func(d time.Duration) func(cfg *server.Config) {
		return func(cfg *server.Config) {
			withJWT(cfg)
			cfg.JWT.Leeway = d
		}
	}
	accepted := func(claim string, ahead time.Duration) func(t *testing.T, n *node, _ func() error) {
		return func(t *testing.T, n *node, _ func() error) {
			c := connect(t, n)
			w := tokenHello(c, token(t, jwt.MapClaims{claim: time.Now().Add(ahead).Unix()}))
			if w.User != "alice" {
				t.Errorf("welcome user %q, want alice", w.User)
			}
			alive(c)
		}
	}
	refused := func(claim string, ahead time.Duration) func(t *testing.T, n *node, _ func() error) {
		return func(t *testing.T, n *node, _ func() error) {
			c := connect(t, n)
			c.send(map[string]any{"t": "hello", "v": 1, "token": token(t, jwt.MapClaims{claim: time.Now().Add(ahead).Unix()})})
			if got := c.closeCode(); got != wire.CloseUnauthorized {
				t.Fatalf("close code %d, want 4101", got)
			}
		}
	}
	runContract(t, []contractCase{
		{name: "leeway 5s: iat 2s ahead accepted", cfg: leeway(5 * time.Second), run: accepted("iat", 2*time.Second)},
		{name: "leeway 5s: nbf 2s ahead accepted", cfg: leeway(5 * time.Second), run: accepted("nbf", 2*time.Second)},
		{name: "leeway 5s: iat 30s ahead refused", cfg: leeway(5 * time.Second), run: refused("iat", 30*time.Second)},
		{name: "leeway 5s: nbf 30s ahead refused", cfg: leeway(5 * time.Second), run: refused("nbf", 30*time.Second)},
		// 4 s: within the 5 s leeway above, and still ahead of the server's
		// clock (iat has second precision) 3 s after signing.
		{name: "no leeway: iat 4s ahead refused", cfg: leeway(auth.NoLeeway), run: refused("iat", 4*time.Second)},
	})
}
