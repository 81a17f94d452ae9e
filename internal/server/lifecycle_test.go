package server_test

// End-to-end tests of a connection's life through a whole server over real
// sockets: authentication and token refresh, heartbeats and leave grace,
// backpressure (slow consumers), rate limits and the drain.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

var lcEngines = []string{poller.EngineEpoll, poller.EngineNetpoll}

// lcForEngines runs fn as a parallel subtest per engine.
func lcForEngines(t *testing.T, fn func(t *testing.T, engine string)) {
	for _, engine := range lcEngines {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			fn(t, engine)
		})
	}
}

func TestAuthTokens(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := lcPKIX(t, &rsaKey.PublicKey)
	secret := []byte("lifecycle-test-secret-0123456789abcdef")
	hs := auth.Config{HS256Secret: secret}
	rs := auth.Config{PublicKeyPEM: rsaPEM}
	es := auth.Config{PublicKeyPEM: lcPKIX(t, &ecKey.PublicKey)}
	hsIssAud := auth.Config{HS256Secret: secret, Issuer: "https://login.example", Audience: "presenced"}
	issAud := jwt.MapClaims{"iss": "https://login.example", "aud": "presenced"}

	cases := []struct {
		name      string
		jwt       auth.Config
		hello     map[string]any // "t" and "v" are added
		wantUser  string         // welcome.user; "" when the hello must fail
		wantClose wire.CloseCode
	}{
		{
			name:     "HS256",
			jwt:      hs,
			hello:    map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("alice", nil))},
			wantUser: "alice",
		},
		{
			name:     "RS256",
			jwt:      rs,
			hello:    map[string]any{"token": lcSign(t, jwt.SigningMethodRS256, rsaKey, lcClaims("bob", nil))},
			wantUser: "bob",
		},
		{
			name:     "ES256",
			jwt:      es,
			hello:    map[string]any{"token": lcSign(t, jwt.SigningMethodES256, ecKey, lcClaims("carol", nil))},
			wantUser: "carol",
		},
		{
			name:     "issuer and audience match",
			jwt:      hsIssAud,
			hello:    map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("dave", issAud))},
			wantUser: "dave",
		},
		{
			name: "token wins over user",
			jwt:  hs,
			hello: map[string]any{"user": "mallory",
				"token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("erin", nil))},
			wantUser: "erin",
		},
		{
			name:      "alg none",
			jwt:       hs,
			hello:     map[string]any{"token": lcSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, lcClaims("alice", nil))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name:      "HS256 signed with the RSA public key on an RS256 server",
			jwt:       rs,
			hello:     map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, rsaPEM, lcClaims("alice", nil))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name:      "RS256 on an ES256 server",
			jwt:       es,
			hello:     map[string]any{"token": lcSign(t, jwt.SigningMethodRS256, rsaKey, lcClaims("alice", nil))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name:      "wrong secret",
			jwt:       hs,
			hello:     map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef!!"), lcClaims("alice", nil))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name:      "missing exp",
			jwt:       hs,
			hello:     map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("alice", jwt.MapClaims{"exp": nil}))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name:      "expired",
			jwt:       hs,
			hello:     map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("alice", jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name: "wrong issuer",
			jwt:  hsIssAud,
			hello: map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, secret,
				lcClaims("alice", jwt.MapClaims{"iss": "https://evil.example", "aud": "presenced"}))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name: "wrong audience",
			jwt:  hsIssAud,
			hello: map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, secret,
				lcClaims("alice", jwt.MapClaims{"iss": "https://login.example", "aud": "other"}))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name:      "subject not a valid user id",
			jwt:       hs,
			hello:     map[string]any{"token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("not a user", nil))},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name:      "garbage token",
			jwt:       hs,
			hello:     map[string]any{"token": "not.a.jwt"},
			wantClose: wire.CloseUnauthorized,
		},
		{
			name:      "user without token on a secure server",
			jwt:       hs,
			hello:     map[string]any{"user": "alice"},
			wantClose: wire.CloseUnauthorized,
		},
	}

	lcForEngines(t, func(t *testing.T, engine string) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				n := startServer(t, server.Config{Engine: engine, JWT: tc.jwt})
				c := connect(t, n)
				hello := map[string]any{"t": "hello", "v": 1}
				for k, v := range tc.hello {
					hello[k] = v
				}
				c.send(hello)
				if tc.wantUser != "" {
					if e := c.expect("welcome"); e.User != tc.wantUser {
						t.Fatalf("welcome user %q, want %q", e.User, tc.wantUser)
					}
					return
				}
				if code := c.closeCode(); code != tc.wantClose {
					t.Fatalf("close code %d, want %d", code, tc.wantClose)
				}
				eventually(t, 5*time.Second, func() error {
					if got := metric(t, n.reg, "presenced_hello_failures_total", "reason", "unauthorized"); got != 1 {
						return fmt.Errorf(`hello_failures_total{reason="unauthorized"} = %v, want 1`, got)
					}
					return nil
				})
			})
		}

		t.Run("rooms claim", func(t *testing.T) {
			n := startServer(t, server.Config{Engine: engine, JWT: hs})
			c := connect(t, n)
			c.send(map[string]any{"t": "hello", "v": 1,
				"token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("alice", jwt.MapClaims{"rooms": []string{"chat:*"}}))})
			c.expect("welcome")

			c.send(map[string]any{"t": "join", "id": 1, "room": "chat:1"})
			if e := c.expect("ack"); e.ID != 1 {
				t.Fatalf("ack id %d, want 1", e.ID)
			}
			if e := c.expect("sync"); e.Room != "chat:1" || e.Count != 1 {
				t.Fatalf("sync %+v, want chat:1 with 1 member", e)
			}
			c.send(map[string]any{"t": "join", "id": 2, "room": "lobby"})
			if e := c.expect("err"); e.ID != 2 || e.Code != wire.ErrCodeForbidden {
				t.Fatalf("join lobby: %+v, want err forbidden id 2", e)
			}
			// The connection stays open.
			c.send(map[string]any{"t": "ping", "ts": 7})
			if e := c.expect("pong"); e.TS != 7 {
				t.Fatalf("pong ts %d, want 7", e.TS)
			}
			// A renewed token brings its own rooms claim: the connection
			// leaves the rooms it no longer allows.
			c.send(map[string]any{"t": "auth", "id": 3,
				"token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("alice", jwt.MapClaims{"rooms": []string{"lobby"}}))})
			if e := c.expect("ack"); e.ID != 3 {
				t.Fatalf("auth ack id %d, want 3", e.ID)
			}
			if e := c.expect("err"); e.ID != 0 || e.Code != wire.ErrCodeForbidden || !strings.Contains(e.Msg, "chat:1") {
				t.Fatalf("after a narrower token: %+v, want err forbidden without id naming chat:1", e)
			}
			c.send(map[string]any{"t": "join", "id": 4, "room": "lobby"})
			if e := c.expect("ack"); e.ID != 4 {
				t.Fatalf("join lobby after auth: ack id %d, want 4", e.ID)
			}
			c.expect("sync")
			c.send(map[string]any{"t": "set", "id": 5, "room": "chat:1", "state": map[string]any{"status": "away"}})
			if e := c.expect("err"); e.ID != 5 || e.Code != wire.ErrCodeNotJoined {
				t.Fatalf("set in the room left: %+v, want err not_joined id 5", e)
			}
		})

		t.Run("refresh", func(t *testing.T) {
			const grace = 500 * time.Millisecond
			n := startServer(t, server.Config{Engine: engine, JWT: hs,
				Presence: presence.Config{RefreshBefore: 2 * time.Second, AuthGrace: grace}})
			exp := time.Now().Add(3 * time.Second).Unix()
			short := func(user string) string {
				return lcSign(t, jwt.SigningMethodHS256, secret, lcClaims(user, jwt.MapClaims{"exp": exp}))
			}
			hello := func(token string) *wsClient {
				c := connect(t, n)
				c.send(map[string]any{"t": "hello", "v": 1, "token": token})
				c.expect("welcome")
				return c
			}
			renews, silent := hello(short("alice")), hello(short("bob"))
			for _, c := range []*wsClient{renews, silent} {
				if e := c.expect("refresh"); e.Exp != exp {
					t.Fatalf("refresh exp %d, want %d", e.Exp, exp)
				}
			}
			renews.send(map[string]any{"t": "auth", "id": 1, "token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("alice", nil))})
			if e := renews.expect("ack"); e.ID != 1 {
				t.Fatalf("auth ack id %d, want 1", e.ID)
			}

			// A refused token: err unauthorized, then 4101.
			refused := hello(lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("carol", nil)))
			refused.send(map[string]any{"t": "auth", "id": 2, "token": "not.a.jwt"})
			if e := refused.expect("err"); e.ID != 2 || e.Code != wire.ErrCodeUnauthorized {
				t.Fatalf("refused auth: %+v, want err unauthorized id 2", e)
			}
			if code := refused.closeCode(); code != wire.CloseUnauthorized {
				t.Fatalf("refused auth: close %d, want 4101", code)
			}
			// A token for another user: err forbidden, then 4103.
			other := hello(lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("dave", nil)))
			other.send(map[string]any{"t": "auth", "id": 3, "token": lcSign(t, jwt.SigningMethodHS256, secret, lcClaims("erin", nil))})
			if e := other.expect("err"); e.ID != 3 || e.Code != wire.ErrCodeForbidden {
				t.Fatalf("auth for another user: %+v, want err forbidden id 3", e)
			}
			if code := other.closeCode(); code != wire.CloseForbidden {
				t.Fatalf("auth for another user: close %d, want 4103", code)
			}

			// Not answering the refresh: 4003 once exp + grace has passed.
			if code := silent.closeCode(); code != wire.CloseTokenExpired {
				t.Fatalf("silent client: close %d, want 4003", code)
			}
			if now := time.Now(); now.Before(time.Unix(exp, 0)) {
				t.Fatalf("silent client closed at %v, before its token's exp %v", now, time.Unix(exp, 0))
			}
			// The renewed connection outlives the old exp + grace.
			time.Sleep(time.Until(time.Unix(exp, 0).Add(grace + 300*time.Millisecond)))
			renews.send(map[string]any{"t": "ping", "ts": 9})
			if e := renews.expect("pong"); e.TS != 9 {
				t.Fatalf("pong ts %d, want 9", e.TS)
			}
			for name, want := range map[string]float64{
				"presenced_token_refreshes_total":        1,
				"presenced_token_refresh_failures_total": 2,
			} {
				if got := metric(t, n.reg, name); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		})
	})
}

// TestHeartbeat: a client that answers pings stays, a silent one is closed
// 4001 no earlier than hb + timeout after its last message and leaves no
// earlier than the grace after that. The exact times are checked on a fake
// clock in presence; here hbWait (how late a pong may come) is generous
// under -race on a busy machine, and only lower bounds are put on the
// observed times (upper ones would measure the machine; the hard stop
// bounds them all).
func TestHeartbeat(t *testing.T) {
	const (
		hb      = 300 * time.Millisecond
		hbWait  = time.Second
		grace   = 500 * time.Millisecond
		room    = "hb"
		stayFor = 2500 * time.Millisecond // beyond hb + hbWait + grace
	)
	lcForEngines(t, func(t *testing.T, engine string) {
		n := startServer(t, server.Config{Engine: engine, Presence: presence.Config{
			Insecure: true, HeartbeatInterval: hb, HeartbeatTimeout: hbWait, LeaveGrace: grace, Tick: 20 * time.Millisecond,
		}})
		observer, _ := lcJoin(t, n, "observer", room)
		alive, _ := lcJoin(t, n, "alive", room)
		silentSent := time.Now() // its last message is sent after this
		silent, _ := lcJoin(t, n, "silent", room)
		silentEvents := silent.events

		var leaveAt time.Time
		var pongs int
		deadline := time.After(stayFor)
		stayed := false
		hardStop := time.After(stayFor + 5*time.Second)
		for !stayed || leaveAt.IsZero() {
			select {
			case e, ok := <-observer.events:
				if !ok {
					t.Fatalf("observer closed %d (%v) though it answers pings", observer.code, observer.err)
				}
				observer.answerPing(t, e)
				if e.T == "diff" && slices.Contains(e.Leave, "alive") {
					t.Fatal("observer saw alive leave")
				}
				if e.T == "diff" && slices.Contains(e.Leave, "silent") && leaveAt.IsZero() {
					leaveAt = e.at
				}
			case e, ok := <-alive.events:
				if !ok {
					t.Fatalf("alive closed %d (%v) though it answers pings", alive.code, alive.err)
				}
				if alive.answerPing(t, e) {
					pongs++
				}
			case _, ok := <-silentEvents:
				if !ok {
					silentEvents = nil // closed: its code is read below
				}
			case <-deadline:
				stayed = true
			case <-hardStop:
				t.Fatalf("observer did not see silent leave (silent closed %d at %v)", silent.code, silent.closedAt)
			}
		}
		if pongs < 2 {
			t.Errorf("alive answered %d pings in %v, want several", pongs, stayFor)
		}
		select {
		case <-silent.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the silent client's connection did not end")
		}
		if silent.code != wire.CloseHeartbeat {
			t.Fatalf("silent client: close %d (%v), want 4001", silent.code, silent.err)
		}
		if d := silent.closedAt.Sub(silentSent); d < hb+hbWait {
			t.Errorf("silent client closed %v after its last message, want no earlier than hb + timeout = %v", d, hb+hbWait)
		}
		// The grace starts once the close is answered, after closedAt.
		if d := leaveAt.Sub(silent.closedAt); d < grace {
			t.Errorf("leave seen %v after the close, want no earlier than leave_grace %v", d, grace)
		}
		if got := lcHistCount(t, n.reg, "presenced_heartbeat_rtt_seconds"); got == 0 {
			t.Error("presenced_heartbeat_rtt_seconds has no samples after pongs")
		}
	})
}

func TestSlowConsumer(t *testing.T) {
	lcForEngines(t, func(t *testing.T, engine string) {
		t.Run("never reads", func(t *testing.T) {
			r := lcSlowStart(t, engine, time.Second)
			r.fill(t, 15*time.Second, func() bool {
				return metric(t, r.n.reg, "presenced_slow_consumer_closes_total") > 0
			})
			eventually(t, 5*time.Second, func() error {
				if got := metric(t, r.n.reg, "presenced_slow_consumer_closes_total"); got != 1 {
					return fmt.Errorf("slow_consumer_closes_total = %v, want 1", got)
				}
				return nil
			})
			closedAt := time.Now()
			// What the slow client had been sent still forms valid chains;
			// its close frame may be lost with the outbox.
			code, err := lcDrain(r.slow.conn, r.slowChain)
			switch {
			case err != nil:
				t.Errorf("slow client: %v", err)
			case code == 0:
				t.Log("slow client: the connection ended without its close frame")
			case code != wire.CloseSlowConsumer:
				t.Errorf("slow client: close %d, want 4002", code)
			}
			eventually(t, 10*time.Second, func() error {
				if got, want := metric(t, r.n.reg, "presenced_sessions"), float64(r.others); got != want {
					return fmt.Errorf("sessions = %v, want %v (all but the slow client)", got, want)
				}
				if got := lcSum(t, r.n.reg, "presenced_connections_closed_total"); got != 1 {
					return fmt.Errorf("connections_closed_total = %v, want 1", got)
				}
				return nil
			})
			// The observer got every diff in order all along, and still
			// gets them once the slow client is gone.
			var last time.Time
			var diffs, syncs int
			chain := lcChain{lcBusy: r.obsCur}
			eventually(t, 10*time.Second, func() error {
				for {
					select {
					case e, ok := <-r.observer.events:
						if !ok {
							t.Fatalf("observer closed %d (%v)", r.observer.code, r.observer.err)
						}
						if err := chain.apply(e.Event); err != nil {
							t.Fatalf("observer: %v", err)
						}
						switch e.T {
						case "diff":
							diffs++
							last = e.at
						case "sync":
							syncs++
						}
						continue
					default:
					}
					break
				}
				if !last.After(closedAt) {
					return errors.New("observer got no diff after the slow client was closed")
				}
				return nil
			})
			r.w.stop(t)
			if diffs < 10 {
				t.Errorf("observer got %d diffs, want many", diffs)
			}
			if syncs != 0 {
				t.Errorf("observer got %d syncs after the one of its join, want none", syncs)
			}
			t.Run("send_full_total", func(t *testing.T) {
				if got := metric(t, r.n.reg, "presenced_send_full_total"); got <= 0 {
					t.Errorf("presenced_send_full_total = %v, want > 0", got)
				}
			})
		})

		t.Run("resumes reading", func(t *testing.T) {
			r := lcSlowStart(t, engine, 5*time.Second)
			start := time.Now()
			r.fill(t, 15*time.Second, func() bool {
				return metric(t, r.n.reg, "presenced_diffs_dropped_total") > 0
			})
			if got := metric(t, r.n.reg, "presenced_diffs_dropped_total"); got <= 0 {
				t.Fatalf("diffs_dropped_total = %v after filling the slow client's buffers, want > 0", got)
			}
			t.Logf("buffers full after %v", time.Since(start))
			slow := lcStartPump(t, r.slow.conn, true)
			time.Sleep(200 * time.Millisecond) // the writers go on while it catches up
			r.w.stop(t)
			r.w.mark(t, "done") // the last change: both clients must end on it

			obsChain, slowChain := lcChain{lcBusy: r.obsCur}, r.slowChain
			var obsDone, slowDone string // the cursors at which each saw the mark
			resyncs := 0
			eventually(t, 15*time.Second, func() error {
				for {
					select {
					case e, ok := <-r.observer.events:
						if !ok {
							t.Fatalf("observer closed %d (%v)", r.observer.code, r.observer.err)
						}
						if err := obsChain.apply(e.Event); err != nil {
							t.Fatalf("observer: %v", err)
						}
						if lcHasStatus(e.Event, "done") {
							obsDone = e.Cur
						}
						continue
					case e, ok := <-slow.events:
						if !ok {
							t.Fatalf("slow client closed %d (%v) before slow_timeout", slow.code, slow.err)
						}
						if err := slowChain.apply(e.Event); err != nil {
							t.Fatalf("slow client: %v", err)
						}
						if e.Room != lcBusy {
							continue
						}
						if e.T == "sync" {
							resyncs++
						}
						if lcHasStatus(e.Event, "done") {
							slowDone = e.Cur
						}
						continue
					default:
					}
					break
				}
				if obsDone == "" || slowDone == "" || slowChain[lcBusy] != obsChain[lcBusy] {
					return fmt.Errorf("not converged: observer at %s (mark at %q), slow client at %s (mark at %q)",
						obsChain[lcBusy], obsDone, slowChain[lcBusy], slowDone)
				}
				return nil
			})
			if resyncs == 0 {
				t.Error("the slow client got no sync of its room after its diffs were dropped")
			}
			if err := slow.send(map[string]any{"t": "ping", "ts": 5}); err != nil {
				t.Fatal(err)
			}
			if e := slow.until(t, "pong", 5*time.Second); e.TS != 5 {
				t.Fatalf("pong ts %d, want 5", e.TS)
			}
			if got := metric(t, r.n.reg, "presenced_slow_consumer_closes_total"); got != 0 {
				t.Errorf("slow_consumer_closes_total = %v, want 0", got)
			}
		})
	})
}

// A client that reads everything gets the sync of a room whose members
// would not fit a small Config.Outbox: the sync budget follows the outbox,
// so the sync is partial rather than never sent (and the client closed
// 4002).
func TestSyncLargerThanOutbox(t *testing.T) {
	n := startServer(t, server.Config{Outbox: 8 << 10, Presence: presence.Config{Insecure: true, SlowTimeout: time.Second}})
	meta := map[string]any{"k": strings.Repeat("m", 480)}
	for i := range 20 { // a sync of about 10 KiB
		c := login(t, n, fmt.Sprintf("member%d", i))
		c.send(map[string]any{"t": "join", "id": 1, "room": lcBig, "state": map[string]any{"meta": meta}})
		lcUntil(c, "ack")
	}
	c := login(t, n, "reader")
	c.send(map[string]any{"t": "join", "id": 1, "room": lcBig})
	c.expect("ack")
	if e := c.expect("sync"); e.Count != 21 || !e.Partial || len(e.Members) == 0 || len(e.Members) >= 21 {
		t.Fatalf("sync count %d, partial %v, %d members; want count 21, partial, some members listed", e.Count, e.Partial, len(e.Members))
	}
}

// Rooms of the slow consumer tests.
const (
	lcBusy = "busy" // writers change their state here all the time
	lcBig  = "big"  // members with large metas: large syncs
)

// lcSlowRig is a server where a client with a tiny receive buffer joined
// lcBig and lcBusy and stopped reading, and where writers keep changing
// their state in lcBusy, watched by an observer that reads everything.
type lcSlowRig struct {
	n         *node
	observer  *lcPump
	obsCur    string    // the observer's cursor of lcBusy at its join
	slow      *wsClient // nobody reads it
	slowChain lcChain   // its cursors when it stopped reading
	w         *lcWriters
	others    int // connections other than slow
}

// lcSlowStart builds an lcSlowRig. The kernel grows the server's socket send
// buffer up to megabytes (net.ipv4.tcp_wmem) whatever the client's receive
// buffer, and lcBusy's diffs would take long to fill it: fill asks for syncs
// of lcBig, about 4 KiB each, instead.
func lcSlowStart(t *testing.T, engine string, slowTimeout time.Duration) *lcSlowRig {
	t.Helper()
	const members, writers = 8, 2
	n := startServer(t, server.Config{Engine: engine, Outbox: 8 << 10, Presence: presence.Config{
		Insecure: true, SlowTimeout: slowTimeout, Tick: 20 * time.Millisecond, Rate: 1000, Burst: 1000,
	}})
	meta := map[string]any{"k": strings.Repeat("m", 480)}
	for i := range members {
		c := login(t, n, fmt.Sprintf("member%d", i))
		c.send(map[string]any{"t": "join", "id": 1, "room": lcBig, "state": map[string]any{"meta": meta}})
		lcUntil(c, "ack")
	}
	r := &lcSlowRig{n: n, others: members + 1 + writers}
	r.observer, r.obsCur = lcJoin(t, n, "observer", lcBusy)
	r.slow, r.slowChain = lcJoinSlow(t, n, "slow", lcBig, lcBusy)
	r.w = lcStartWriters(t, n, lcBusy, writers)
	return r
}

// fill has the slow client ask for a sync of lcBig every millisecond (the
// rate) for at most d or until done says so. One sync is queued per
// request, where a burst of requests read at once would be refused beyond
// the outbox, so the syncs reach the kernel and fill its buffers.
func (r *lcSlowRig) fill(t *testing.T, d time.Duration, done func() bool) {
	t.Helper()
	req, err := json.Marshal(map[string]any{"t": "sync", "id": 2, "room": lcBig})
	if err != nil {
		t.Fatal(err)
	}
	for end, i := time.Now().Add(d), 0; time.Now().Before(end); i++ {
		if i%20 == 0 && done() {
			return
		}
		if err := wsutil.WriteClientText(r.slow.conn, req); err != nil {
			return // closed
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRateLimit(t *testing.T) {
	const floodSeconds = 2
	lcForEngines(t, func(t *testing.T, engine string) {
		// Rate 1: no token frees up while a batch is read, however slow
		// the machine (a second would have to pass).
		n := startServer(t, server.Config{Engine: engine, Presence: presence.Config{
			Insecure: true, Rate: 1, Burst: 5, FloodSeconds: floodSeconds, Tick: 20 * time.Millisecond,
		}})

		t.Run("joins over the burst", func(t *testing.T) {
			c := login(t, n, "joiner")
			var batch []byte
			for i := 1; i <= 6; i++ {
				f := ws.MaskFrame(ws.NewTextFrame(fmt.Appendf(nil, `{"t":"join","id":%d,"room":"r%d"}`, i, i)))
				b, err := ws.CompileFrame(f)
				if err != nil {
					t.Fatal(err)
				}
				batch = append(batch, b...)
			}
			if _, err := c.conn.Write(batch); err != nil {
				t.Fatal(err)
			}
			answers := map[int64]wire.Event{}
			for len(answers) < 6 {
				e := c.next(5 * time.Second)
				if e.T == "ack" || e.T == "err" {
					answers[e.ID] = e
				}
			}
			for id := int64(1); id <= 5; id++ {
				if e := answers[id]; e.T != "ack" {
					t.Errorf("join %d: %+v, want ack", id, e)
				}
			}
			if e := answers[6]; e.T != "err" || e.Code != wire.ErrCodeRateLimited {
				t.Errorf("join 6: %+v, want err rate_limited", e)
			}
		})

		t.Run("typing flood", func(t *testing.T) {
			c, _ := lcJoin(t, n, "typist", "chat")
			start := time.Now()
			tick := time.NewTicker(10 * time.Millisecond) // 100/s: a hundred times the rate
			defer tick.Stop()
			timeout := time.After(floodSeconds*time.Second + 8*time.Second)
		flood:
			for on := true; ; on = !on {
				select {
				case e, ok := <-c.events:
					if !ok {
						break flood
					}
					if e.T == "err" {
						t.Fatalf("typing answered with %+v", e)
					}
				case <-tick.C:
					if err := c.send(map[string]any{"t": "typing", "room": "chat", "on": on}); err != nil {
						<-c.done // the server closed: the reader has the code
						break flood
					}
				case <-timeout:
					t.Fatal("no close after flooding")
				}
			}
			for e := range c.events {
				if e.T == "err" {
					t.Fatalf("typing answered with %+v", e)
				}
			}
			if c.code != wire.CloseRateLimited {
				t.Fatalf("close %d (%v), want 4029", c.code, c.err)
			}
			if d := c.closedAt.Sub(start); d < floodSeconds*time.Second {
				t.Errorf("closed %v after the flood began, want at least FloodSeconds (%ds)", d, floodSeconds)
			}
			if got := metric(t, n.reg, "presenced_rate_limited_total"); got <= 0 {
				t.Errorf("rate_limited_total = %v, want > 0", got)
			}
		})
	})
}

func TestDrain(t *testing.T) {
	const (
		window  = 2 * time.Second
		clients = 20
	)
	lcForEngines(t, func(t *testing.T, engine string) {
		n, cancel, done := lcStart(t, server.Config{Engine: engine, Drain: window, Presence: presence.Config{Insecure: true}})
		cs := make([]*wsClient, clients)
		for i := range cs {
			cs[i] = login(t, n, fmt.Sprintf("u%d", i))
			cs[i].send(map[string]any{"t": "join", "id": 1, "room": fmt.Sprintf("room:%d", i%4)})
			lcUntil(cs[i], "ack")
		}

		cancel()
		readyz := "http://" + n.AdminAddr().String() + "/readyz"
		eventually(t, 5*time.Second, func() error {
			status, err := lcStatus(readyz)
			if err != nil {
				return err
			}
			if status != http.StatusServiceUnavailable {
				return fmt.Errorf("/readyz: %d, want 503", status)
			}
			return nil
		})
		eventually(t, 5*time.Second, func() error {
			ctx, stop := context.WithTimeout(context.Background(), time.Second)
			defer stop()
			conn, _, _, err := ws.Dial(ctx, "ws://"+n.Addr().String()+"/ws")
			if err == nil {
				conn.Close()
				return errors.New("a new connection was upgraded after cancel")
			}
			return nil
		})

		retries := map[int64]bool{}
		for i, c := range cs {
			e := lcUntil(c, "bye")
			if e.Reason != "draining" || e.RetryMS < 0 || e.RetryMS >= window.Milliseconds() {
				t.Errorf("client %d: bye %+v, want reason draining and 0 <= retry_ms < %d", i, e, window.Milliseconds())
			}
			retries[e.RetryMS] = true
			if code := c.closeCode(); code != wire.CloseGoingAway {
				t.Errorf("client %d: close %d, want 1001", i, code)
			}
		}
		if len(retries) < clients/2 {
			t.Errorf("retry_ms took %d distinct values over %d clients, want them spread", len(retries), clients)
		}

		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return 5 s after its clients closed")
		}
		if _, err := lcStatus(readyz); err == nil {
			t.Error("admin listener still serves after Run returned")
		}
	})
}

// lcStart starts a server like startServer, but lets the test cancel Run
// and read its error. The cleanup cancels too and checks Run's error if the
// test did not read it.
func lcStart(t *testing.T, cfg server.Config) (*node, context.CancelFunc, <-chan error) {
	t.Helper()
	cfg.Addr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	cfg.Registry = prometheus.NewRegistry()
	s, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err, ok := <-done:
			if ok && err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return 10 s after cancel")
		}
	})
	return &node{Server: s, reg: cfg.Registry, logs: logs}, cancel, done
}

// lcStatus GETs url without keeping the connection.
func lcStatus(url string) (int, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// lcUntil reads c until a message of type typ, skipping every other one.
func lcUntil(c *wsClient, typ string) wire.Event {
	c.t.Helper()
	for {
		if e := c.next(5 * time.Second); e.T == typ {
			return e
		}
	}
}

// lcPKIX PEM-encodes a public key as PKIX ("PUBLIC KEY").
func lcPKIX(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// lcClaims are valid claims for sub (exp in an hour) with extra applied: a
// nil value removes the claim.
func lcClaims(sub string, extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func lcSign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// lcSum is the sum of every series of the counter or gauge name.
func lcSum(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// lcHistCount is the sample count of the histogram name.
func lcHistCount(t *testing.T, reg prometheus.Gatherer, name string) uint64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// lcEvent is a server message and when it was read.
type lcEvent struct {
	wire.Event
	at time.Time
}

// lcPump reads a connection on its own goroutine, so a test can wait on
// several clients at once and send while reading.
type lcPump struct {
	conn   net.Conn
	wmu    sync.Mutex    // serializes writes
	events chan lcEvent  // closed when the connection ends
	done   chan struct{} // closed after events
	quit   chan struct{} // closed by the cleanup

	// Set before events is closed.
	code     wire.CloseCode // the server's close code; 0 without a close frame
	closedAt time.Time      // when the close frame came, before it was answered
	err      error          // a read error other than a close frame
}

// lcStartPump starts reading conn. With keep false the messages are
// discarded (a writer that must not become a slow consumer itself).
func lcStartPump(t *testing.T, conn net.Conn, keep bool) *lcPump {
	p := &lcPump{
		conn:   conn,
		events: make(chan lcEvent, 4096),
		done:   make(chan struct{}),
		quit:   make(chan struct{}),
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	go p.run(keep)
	t.Cleanup(func() {
		close(p.quit)
		conn.Close()
		<-p.done
	})
	return p
}

func (p *lcPump) run(keep bool) {
	defer close(p.done)
	defer close(p.events)
	var closeAt time.Time
	for {
		msg, op, err := lcReadServerData(p.conn, func() { closeAt = time.Now() })
		now := time.Now()
		if err != nil {
			p.closedAt = now
			if !closeAt.IsZero() {
				p.closedAt = closeAt
			}
			var closed wsutil.ClosedError
			if errors.As(err, &closed) {
				p.code = wire.CloseCode(closed.Code)
			} else {
				p.err = err
			}
			return
		}
		if !keep {
			continue
		}
		var e lcEvent
		if op != ws.OpText {
			p.err = fmt.Errorf("server sent opcode %v", op)
			return
		}
		if err := wire.DecodeEvent(msg, &e.Event); err != nil {
			p.err = fmt.Errorf("decode %q: %w", msg, err)
			return
		}
		e.at = now
		select {
		case p.events <- e:
		case <-p.quit:
			return
		}
	}
}

// lcReadServerData is wsutil.ReadServerData (it answers control frames)
// calling onClose as soon as the server's close frame arrives, before the
// answer lets the server finish the connection.
func lcReadServerData(conn net.Conn, onClose func()) ([]byte, ws.OpCode, error) {
	control := wsutil.ControlFrameHandler(conn, ws.StateClientSide)
	rd := &wsutil.Reader{Source: conn, State: ws.StateClientSide, CheckUTF8: true, OnIntermediate: control}
	for {
		h, err := rd.NextFrame()
		if err != nil {
			return nil, 0, err
		}
		if h.OpCode.IsControl() {
			if h.OpCode == ws.OpClose {
				onClose()
			}
			if err := control(h, rd); err != nil {
				return nil, 0, err
			}
			continue
		}
		if h.OpCode&(ws.OpText|ws.OpBinary) == 0 {
			if err := rd.Discard(); err != nil {
				return nil, 0, err
			}
			continue
		}
		msg, err := io.ReadAll(rd)
		return msg, h.OpCode, err
	}
}

// send writes v as a JSON text message.
func (p *lcPump) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return wsutil.WriteClientText(p.conn, b)
}

// answerPing answers e if it is a server ping, reporting whether it was.
func (p *lcPump) answerPing(t *testing.T, e lcEvent) bool {
	t.Helper()
	if e.T != "ping" {
		return false
	}
	if err := p.send(map[string]any{"t": "pong", "ts": e.TS}); err != nil {
		t.Fatalf("pong: %v", err)
	}
	return true
}

// until waits for a message of type typ, skipping others.
func (p *lcPump) until(t *testing.T, typ string, timeout time.Duration) lcEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-p.events:
			if !ok {
				t.Fatalf("connection ended (close %d, %v) waiting for %s", p.code, p.err, typ)
			}
			if e.T == typ {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s after %v", typ, timeout)
		}
	}
}

// lcJoin logs user in, joins room, waits for its sync and hands the
// connection to a pump. It returns the pump and the sync's cursor.
func lcJoin(t *testing.T, n *node, user, room string) (*lcPump, string) {
	t.Helper()
	c := login(t, n, user)
	p := lcStartPump(t, c.conn, true)
	if err := p.send(map[string]any{"t": "join", "id": 1, "room": room}); err != nil {
		t.Fatal(err)
	}
	p.until(t, "ack", 5*time.Second)
	return p, p.until(t, "sync", 5*time.Second).Cur
}

// lcJoinSlow connects with a tiny receive buffer, logs user in and joins
// rooms, reading up to their syncs. It returns the client, which nobody
// reads any more, and its cursors.
func lcJoinSlow(t *testing.T, n *node, user string, rooms ...string) (*wsClient, lcChain) {
	t.Helper()
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
			}); err != nil {
				return err
			}
			return serr
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, "ws://"+n.Addr().String()+"/ws")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if br != nil {
		t.Fatal("server sent data before hello")
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &wsClient{t: t, conn: conn}
	c.send(map[string]any{"t": "hello", "v": 1, "user": user})
	c.expect("welcome")
	chain := lcChain{}
	for i, room := range rooms {
		c.send(map[string]any{"t": "join", "id": i + 1, "room": room})
		for {
			e := c.next(5 * time.Second)
			if err := chain.apply(e); err != nil {
				t.Fatal(err)
			}
			if e.T == "sync" && e.Room == room {
				break
			}
		}
	}
	return c, chain
}

// lcDrain reads conn to its end, checking that each room's events continue
// chain. It returns the close code (0 if none came).
func lcDrain(conn net.Conn, chain lcChain) (wire.CloseCode, error) {
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Read first, decode after: the close frame must be read before the
	// server's close timeout.
	var msgs [][]byte
	var code wire.CloseCode
	for {
		msg, _, err := wsutil.ReadServerData(conn)
		var closed wsutil.ClosedError
		if errors.As(err, &closed) {
			code = wire.CloseCode(closed.Code)
			break
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			break
		}
		if err != nil {
			return 0, err
		}
		msgs = append(msgs, msg)
	}
	for _, msg := range msgs {
		var e wire.Event
		if err := wire.DecodeEvent(msg, &e); err != nil {
			return 0, err
		}
		if err := chain.apply(e); err != nil {
			return 0, err
		}
	}
	return code, nil
}

// lcChain follows the cursors of rooms on one connection: each diff must
// continue from its room's previous cursor; a sync starts anew.
type lcChain map[string]string

func (c lcChain) apply(e wire.Event) error {
	switch e.T {
	case "sync":
		c[e.Room] = e.Cur
	case "diff":
		cur, ok := c[e.Room]
		if !ok {
			return fmt.Errorf("diff of %s before its sync", e.Room)
		}
		if e.From != cur {
			return fmt.Errorf("diff of %s from %s, want from %s (the previous cursor): a gap in the chain", e.Room, e.From, cur)
		}
		c[e.Room] = e.Cur
	}
	return nil
}

// lcHasStatus reports whether a sync or diff shows a member with status.
func lcHasStatus(e wire.Event, status string) bool {
	for _, l := range [][]wire.Member{e.Members, e.Join, e.Update} {
		for _, m := range l {
			if m.S == status {
				return true
			}
		}
	}
	return false
}

// lcWriters change their state in one room as fast as the test allows.
type lcWriters struct {
	pumps []*lcPump
	room  string
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error // guarded by mu: the first write error
}

// lcStartWriters logs k writers into room and starts changing their meta
// (about 400 bytes, a new value each time) every few milliseconds.
func lcStartWriters(t *testing.T, n *node, room string, k int) *lcWriters {
	t.Helper()
	w := &lcWriters{room: room, stopc: make(chan struct{})}
	for i := range k {
		c := login(t, n, fmt.Sprintf("writer%d", i))
		c.send(map[string]any{"t": "join", "id": 1, "room": room})
		lcUntil(c, "ack")
		w.pumps = append(w.pumps, lcStartPump(t, c.conn, false))
	}
	pad := strings.Repeat("x", 400)
	w.wg.Go(func() {
		for i := int64(2); ; i++ {
			select {
			case <-w.stopc:
				return
			default:
			}
			for _, p := range w.pumps {
				err := p.send(map[string]any{"t": "set", "id": i, "room": room,
					"state": map[string]any{"meta": map[string]any{"pad": pad, "n": i}}})
				if err != nil {
					w.mu.Lock()
					w.err = err
					w.mu.Unlock()
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Cleanup(func() { w.halt() })
	return w
}

func (w *lcWriters) halt() {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
	w.wg.Wait()
}

// stop stops the writers and fails the test if one could not write.
func (w *lcWriters) stop(t *testing.T) {
	t.Helper()
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
}

// mark sets the first writer's status: a last change the readers can spot.
func (w *lcWriters) mark(t *testing.T, status string) {
	t.Helper()
	if err := w.pumps[0].send(map[string]any{"t": "set", "id": 1, "room": w.room,
		"state": map[string]any{"status": status}}); err != nil {
		t.Fatal(err)
	}
}
