package server_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// The contract tests check docs/protocol.md (the wire contract) end to end:
// a whole server on each engine, raw WebSocket clients over real sockets,
// every message type, error code and close code, with the exact JSON
// shapes.

// testSecret signs the tests' HS256 tokens.
var testSecret = []byte("presenced-contract-test-secret-0123456789")

// signToken returns an HS256 token for sub expiring at exp; rooms, when not
// nil, is its rooms claim.
func signToken(t *testing.T, sub string, exp time.Time, rooms []string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": exp.Unix()}
	if rooms != nil {
		claims["rooms"] = rooms
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return tok
}

// withJWT makes cfg verify tokens signed with testSecret (and refuse
// insecure hellos).
func withJWT(cfg *server.Config) {
	cfg.Presence.Insecure = false
	cfg.JWT = auth.Config{HS256Secret: testSecret}
}

// tokenHello says hello with token and returns the welcome.
func tokenHello(c *wsClient, token string) message {
	c.t.Helper()
	c.send(map[string]any{"t": "hello", "v": 1, "token": token})
	return c.expectMsg("welcome")
}

// joinRoom joins room with the command id 1 and returns the sync that
// follows the ack.
func joinRoom(c *wsClient, room string) message {
	c.t.Helper()
	c.send(map[string]any{"t": "join", "id": 1, "room": room})
	if a := c.expect("ack"); a.ID != 1 {
		c.t.Fatalf("ack id %d, want 1", a.ID)
	}
	return c.expectMsg("sync")
}

// expectErr reads an err (skipping pings) and checks its id, code and
// shape: id is present only when the command had one.
func expectErr(c *wsClient, id int64, code string) message {
	c.t.Helper()
	m := c.expectMsg("err")
	if id > 0 {
		checkKeys(c.t, m, "t", "id", "code", "msg")
	} else {
		checkKeys(c.t, m, "t", "code", "msg")
	}
	if m.ID != id || m.Code != code || m.Msg == "" {
		c.t.Fatalf("got %s, want err id %d code %s with a msg", m.raw, id, code)
	}
	return m
}

// expectAck reads an ack (skipping pings) and checks its id and shape.
func expectAck(c *wsClient, id int64) {
	c.t.Helper()
	m := c.expectMsg("ack")
	checkKeys(c.t, m, "t", "id")
	if m.ID != id {
		c.t.Fatalf("got %s, want ack id %d", m.raw, id)
	}
}

// awaitAck waits for the ack of id, skipping the presence events (sync,
// diff, ping) that may come first.
func awaitAck(c *wsClient, id int64) {
	c.t.Helper()
	c.waitFor(5*time.Second, fmt.Sprintf("ack %d", id), func(m message) bool {
		switch m.T {
		case "ack":
			checkKeys(c.t, m, "t", "id")
			if m.ID != id {
				c.t.Fatalf("got %s, want ack %d", m.raw, id)
			}
			return true
		case "sync", "diff", "ping":
			return false
		}
		c.t.Fatalf("got %s, want ack %d", m.raw, id)
		return false
	})
}

// alive checks that the connection still answers a ping, skipping the
// presence events (sync, diff, ping) that may come first.
func alive(c *wsClient) {
	c.t.Helper()
	c.send(`{"t":"ping","ts":4242}`)
	c.waitFor(5*time.Second, "pong 4242", func(m message) bool {
		switch m.T {
		case "pong":
			checkKeys(c.t, m, "t", "ts")
			if m.TS != 4242 {
				c.t.Fatalf("got %s, want pong ts 4242", m.raw)
			}
			return true
		case "sync", "diff", "ping":
			return false
		}
		c.t.Fatalf("got %s, want pong 4242", m.raw)
		return false
	})
}

// expectDiff reads the next message (skipping pings), which must be a diff
// continuing from, with exactly the fields keys.
func expectDiff(c *wsClient, from string, keys ...string) message {
	c.t.Helper()
	m := c.expectMsg("diff")
	checkKeys(c.t, m, append([]string{"t", "room", "from", "cur", "count"}, keys...)...)
	if m.From != from || m.Cur == "" || m.Cur == from {
		c.t.Fatalf("diff %s does not continue from %s", m.raw, from)
	}
	return m
}

// awaitClose reads frames until the server's close frame and returns its
// code, without answering it.
func (c *wsClient) awaitClose() wire.CloseCode {
	c.t.Helper()
	return c.readUntilClose(nil)
}

// closeAfterPings is awaitClose for a client that expects nothing but
// server pings before the close: any other message fails the test.
func (c *wsClient) closeAfterPings() wire.CloseCode {
	c.t.Helper()
	return c.readUntilClose(func(payload []byte) {
		var e wire.Event
		if err := wire.DecodeEvent(payload, &e); err != nil || e.T != "ping" {
			c.t.Fatalf("got %s, want nothing but pings before the close", payload)
		}
	})
}

// readUntilClose reads frames for up to 10 s until the server's close
// frame and returns its code; text frames before it go to text, if set.
func (c *wsClient) readUntilClose(text func(payload []byte)) wire.CloseCode {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		f, err := readFrame(c.conn)
		if err != nil {
			c.t.Fatalf("no close within 10 s: read: %v", err)
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			if len(f.Payload) < 2 {
				return 1005
			}
			return wire.CloseCode(binary.BigEndian.Uint16(f.Payload))
		case ws.OpText:
			if text != nil {
				text(f.Payload)
			}
		}
	}
}

// readFrame reads one server frame of at most 64 KiB.
func readFrame(r io.Reader) (ws.Frame, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > 64<<10 {
		return ws.Frame{}, fmt.Errorf("frame of %d bytes", h.Length)
	}
	f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
	_, err = io.ReadFull(r, f.Payload)
	return f, err
}

// answerClose sends the closing handshake's answer (1000).
func (c *wsClient) answerClose() {
	c.t.Helper()
	f := ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	if err := ws.WriteFrame(c.conn, f); err != nil {
		c.t.Fatalf("write close: %v", err)
	}
}

// sendBatch writes msgs as text frames in one write, so that the server
// reads them together.
func (c *wsClient) sendBatch(msgs ...string) {
	c.t.Helper()
	var batch []byte
	for _, m := range msgs {
		f, err := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(m))))
		if err != nil {
			c.t.Fatal(err)
		}
		batch = append(batch, f...)
	}
	if _, err := c.conn.Write(batch); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// flood writes the frame msg (a masked text frame) every interval from a
// goroutine until the returned stop is called; write errors end it early.
func (c *wsClient) flood(msg string, interval time.Duration) (stop func()) {
	frame, err := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(msg))))
	if err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := c.conn.Write(frame); err != nil {
				return
			}
			if interval > 0 {
				time.Sleep(interval)
			}
		}
	})
	return sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
}

// fakeAuth accepts the tokens "alice" and "bob" (no expiry) and "short"
// (alice for 300 ms), fails with a plain error
// (an internal failure, not a refusal) on "boom" and refuses the rest.
type fakeAuth struct{}

func (fakeAuth) Authenticate(token string) (presence.Identity, error) {
	switch token {
	case "alice", "bob":
		return presence.Identity{User: token}, nil
	case "short":
		return presence.Identity{User: "alice", Expires: time.Now().Add(300 * time.Millisecond)}, nil
	case "boom":
		return presence.Identity{}, errors.New("key server unreachable")
	}
	return presence.Identity{}, fmt.Errorf("%w: unknown token", presence.ErrUnauthorized)
}

var _ presence.Authenticator = fakeAuth{}

// contractCase is one clause of the contract: cfg adjusts quickConfig (an
// insecure server with a 20 ms tick), run drives the server; stop drains it.
type contractCase struct {
	name string
	cfg  func(cfg *server.Config)
	run  func(t *testing.T, n *node, stop func() error)
}

// runContract runs each case on each engine, in parallel.
func runContract(t *testing.T, cases []contractCase) {
	t.Helper()
	for _, engine := range engines {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				cfg := quickConfig(engine)
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				n, stop := startServerStop(t, cfg)
				tc.run(t, n, stop)
			})
		}
	}
}

// TestContractMessages covers every message type of the contract, both
// ways, with its exact fields.
func TestContractMessages(t *testing.T) {
	runContract(t, []contractCase{
		{
			name: "hello with a token gets welcome",
			cfg: func(cfg *server.Config) {
				withJWT(cfg)
				cfg.MaxMessage = 2048
				cfg.Presence.HeartbeatInterval = 7 * time.Second
				cfg.Presence.Node = "node-7"
			},
			run: func(t *testing.T, n *node, _ func() error) {
				c := connect(t, n)
				w := tokenHello(c, signToken(t, "alice@example.com", time.Now().Add(time.Hour), nil))
				checkKeys(t, w, "t", "v", "node", "conn", "user", "hb", "max")
				if w.V != 1 || w.Node != "node-7" || !strings.HasPrefix(w.Conn, "node-7-") ||
					w.User != "alice@example.com" || w.HB != 7000 || w.Max != 2048 {
					t.Fatalf("welcome %s", w.raw)
				}
				// Two connections get two connection ids.
				if w2 := tokenHello(connect(t, n), signToken(t, "alice@example.com", time.Now().Add(time.Hour), nil)); w2.Conn == w.Conn {
					t.Fatalf("two connections share the id %s", w.Conn)
				}
			},
		},
		{
			name: "hello with resume and state",
			run: func(t *testing.T, n *node, _ func() error) {
				c := connect(t, n)
				c.send(`{"t":"hello","v":1,"user":"alice","resume":{"chat:1":"","lobby":""},"state":{"status":"busy","meta":{"k":"v"}}}`)
				c.expect("welcome")
				// Rooms without a cursor resume with a sync each.
				var rooms []string
				for range 2 {
					s := c.expectMsg("sync")
					if s.field("members") != `[{"u":"alice","s":"busy","m":{"k":"v"}}]` {
						t.Fatalf("got %s, want a sync with alice busy", s.raw)
					}
					rooms = append(rooms, s.Room)
				}
				if slices.Sort(rooms); !slices.Equal(rooms, []string{"chat:1", "lobby"}) {
					t.Fatalf("syncs of %v, want chat:1 and lobby", rooms)
				}
			},
		},
		{
			name: "join gets ack then sync",
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				alice.send(`{"t":"join","id":3,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice"}},"unknown":"ignored"}`)
				expectAck(alice, 3)
				s := alice.expectMsg("sync")
				checkKeys(t, s, "t", "room", "cur", "count", "members", "typing", "partial")
				if s.field("partial") != "false" || s.field("typing") != "[]" || s.Count != 1 ||
					s.field("members") != `[{"u":"alice","s":"online","m":{"name":"Alice"}}]` {
					t.Fatalf("sync %s", s.raw)
				}
				if _, ok := wire.ParseCursor(s.Cur); !ok {
					t.Fatalf("sync cursor %q is not <epoch>.<seq> in base 36", s.Cur)
				}
				// Default state: status online, meta {}.
				bob := login(t, n, "bob")
				bs := joinRoom(bob, "chat:42")
				if bs.Count != 2 || !strings.Contains(bs.field("members"), `{"u":"alice","s":"online","m":{"name":"Alice"}}`) ||
					!strings.Contains(bs.field("members"), `{"u":"bob","s":"online","m":{}}`) || len(bs.Members) != 2 {
					t.Fatalf("bob's sync %s, want alice as she set herself and bob with the default state", bs.raw)
				}
				// Joining again is idempotent: ack and a fresh sync, no diff.
				bob.send(`{"t":"join","id":4,"room":"chat:42"}`)
				expectAck(bob, 4)
				if s := bob.expectMsg("sync"); s.Count != 2 {
					t.Fatalf("sync after a second join: %s", s.raw)
				}
				alice.waitFor(5*time.Second, "diff joining bob", func(m message) bool { return m.T == "diff" })
				alice.quiet(100 * time.Millisecond)
			},
		},
		{
			name: "diffs: join, update, leave",
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				cur := joinRoom(alice, "r").Cur
				bob := login(t, n, "bob")
				bob.send(`{"t":"join","id":1,"room":"r","state":{"meta":{"name":"Bob"}}}`)
				expectAck(bob, 1)
				bob.expect("sync")

				d := expectDiff(alice, cur, "join")
				if d.Count != 2 || d.Room != "r" || d.field("join") != `[{"u":"bob","s":"online","m":{"name":"Bob"}}]` {
					t.Fatalf("join diff %s", d.raw)
				}
				// set merges: a missing meta keeps the old one.
				bob.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
				awaitAck(bob, 2)
				d = expectDiff(alice, d.Cur, "update")
				if d.Count != 2 || d.field("update") != `[{"u":"bob","s":"away","m":{"name":"Bob"}}]` {
					t.Fatalf("update diff %s", d.raw)
				}
				// ...and a missing status keeps the old one.
				bob.send(`{"t":"set","id":3,"room":"r","state":{"meta":{"name":"Bobby"}}}`)
				awaitAck(bob, 3)
				d = expectDiff(alice, d.Cur, "update")
				if d.field("update") != `[{"u":"bob","s":"away","m":{"name":"Bobby"}}]` {
					t.Fatalf("update diff %s", d.raw)
				}
				// Setting the same state again changes nothing: no diff.
				bob.send(`{"t":"set","id":4,"room":"r","state":{"status":"away","meta":{"name":"Bobby"}}}`)
				awaitAck(bob, 4)
				alice.quiet(100 * time.Millisecond)

				bob.send(`{"t":"leave","id":5,"room":"r"}`)
				awaitAck(bob, 5)
				d = expectDiff(alice, d.Cur, "leave")
				if d.Count != 1 || d.field("leave") != `["bob"]` {
					t.Fatalf("leave diff %s", d.raw)
				}
				// Leaving again is acked and changes nothing.
				bob.send(`{"t":"leave","id":6,"room":"r"}`)
				awaitAck(bob, 6)
				alice.quiet(100 * time.Millisecond)
			},
		},
		{
			name: "coalescing: a join and a leave within one tick send nothing",
			cfg:  func(cfg *server.Config) { cfg.Presence.Tick = 300 * time.Millisecond },
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				joinRoom(alice, "r")
				bob := login(t, n, "bob")
				bob.sendBatch(`{"t":"join","id":1,"room":"r"}`, `{"t":"leave","id":2,"room":"r"}`)
				expectAck(bob, 1)
				expectAck(bob, 2)
				alice.quiet(700 * time.Millisecond)
			},
		},
		{
			name: "typing",
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				cur := joinRoom(alice, "r").Cur
				bob := login(t, n, "bob")
				joinRoom(bob, "r")
				cur = expectDiff(alice, cur, "join").Cur

				bob.send(`{"t":"typing","room":"r","on":true}`)
				d := expectDiff(alice, cur, "typing")
				if d.field("typing") != `["bob"]` {
					t.Fatalf("typing diff %s", d.raw)
				}
				// typing is present only when the set changed.
				bob.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
				awaitAck(bob, 2)
				d = expectDiff(alice, d.Cur, "update")
				// A sync lists the current typing set.
				alice.send(`{"t":"sync","id":9,"room":"r"}`)
				expectAck(alice, 9)
				if s := alice.expectMsg("sync"); s.field("typing") != `["bob"]` || s.Cur != d.Cur {
					t.Fatalf("sync %s, want typing [bob] at %s", s.raw, d.Cur)
				}
				bob.send(`{"t":"typing","room":"r","on":false}`)
				d = expectDiff(alice, d.Cur, "typing")
				if d.field("typing") != `[]` {
					t.Fatalf("typing off diff %s", d.raw)
				}
				// typing has no answer, and in a room not joined it is ignored.
				bob.send(`{"t":"typing","room":"elsewhere","on":true}`)
				alive(bob)
			},
		},
		{
			name: "typing ends after typing_ttl",
			cfg:  func(cfg *server.Config) { cfg.Presence.TypingTTL = 300 * time.Millisecond },
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				joinRoom(alice, "r")
				start := time.Now() // before the server can see the typing
				alice.send(`{"t":"typing","room":"r","on":true}`)
				d := alice.expectMsg("diff")
				if d.field("typing") != `["alice"]` {
					t.Fatalf("typing diff %s", d.raw)
				}
				d = expectDiff(alice, d.Cur, "typing")
				if d.field("typing") != `[]` || time.Since(start) < 250*time.Millisecond {
					t.Fatalf("typing diff %s after %v, want [] after the 300 ms ttl", d.raw, time.Since(start))
				}
			},
		},
		{
			name: "sync command gets ack then sync",
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				first := joinRoom(alice, "r")
				alice.send(`{"t":"sync","id":12,"room":"r"}`)
				expectAck(alice, 12)
				s := alice.expectMsg("sync")
				checkKeys(t, s, "t", "room", "cur", "count", "members", "typing", "partial")
				if s.Cur != first.Cur || s.field("members") != first.field("members") {
					t.Fatalf("sync %s, want the state of %s", s.raw, first.raw)
				}
			},
		},
		{
			name: "client ping gets pong",
			run: func(t *testing.T, n *node, _ func() error) {
				c := login(t, n, "alice")
				c.send(`{"t":"ping","ts":1234567890123}`)
				p := c.expectMsg("pong")
				checkKeys(t, p, "t", "ts")
				if p.field("ts") != "1234567890123" {
					t.Fatalf("pong %s", p.raw)
				}
				// A pong nobody asked for has no answer.
				c.send(`{"t":"pong","ts":1}`)
				alive(c)
			},
		},
		{
			name: "WebSocket ping frame gets pong frame",
			run: func(t *testing.T, n *node, _ func() error) {
				c := login(t, n, "alice")
				if err := ws.WriteFrame(c.conn, ws.MaskFrame(ws.NewPingFrame([]byte("are you there")))); err != nil {
					t.Fatal(err)
				}
				c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				f, err := readFrame(c.conn)
				if err != nil {
					t.Fatal(err)
				}
				if f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
					t.Fatalf("got opcode %v payload %q, want a pong with the ping's payload", f.Header.OpCode, f.Payload)
				}
			},
		},
		{
			name: "server pings, client pongs keep the connection",
			cfg: func(cfg *server.Config) {
				cfg.Presence.HeartbeatInterval = 300 * time.Millisecond
				cfg.Presence.HeartbeatTimeout = time.Second
			},
			run: func(t *testing.T, n *node, _ func() error) {
				// hb_timeout is how late a pong may be: a second is
				// generous under -race on a busy machine. When pings come
				// (at a random point in [hb/2, hb], then every hb) is
				// checked exactly, on a fake clock, in presence.
				const hb, hbTimeout = 300 * time.Millisecond, time.Second
				c := connect(t, n)
				sent := time.Now()
				c.send(`{"t":"hello","v":1,"user":"alice"}`)
				if w := c.expect("welcome"); w.HB != 300 {
					t.Fatalf("welcome hb %d, want 300", w.HB)
				}
				welcomed := time.Now()
				// Answer pings until hb + hb_timeout (and half an hb)
				// have passed since the hello, when a client that said
				// nothing else would have been closed: answering them
				// keeps the connection.
				pings := 0
				for time.Since(welcomed) < hb+hbTimeout+hb/2 {
					p := c.read(5 * time.Second)
					if p.T != "ping" {
						t.Fatalf("got %s, want a server ping", p.raw)
					}
					checkKeys(t, p, "t", "ts")
					if now := time.Now().UnixMilli(); p.TS < now-5000 || p.TS > now+5000 {
						t.Fatalf("ping ts %d, want about %d (unix ms)", p.TS, now)
					}
					// Pings are at least hb apart, the first at least hb/2
					// after the hello, whatever the machine's load.
					if since := time.Since(sent); since < hb/2+time.Duration(pings)*hb {
						t.Fatalf("ping %d came %v after the hello, want at least %v", pings+1, since, hb/2+time.Duration(pings)*hb)
					}
					pings++
					c.send(fmt.Sprintf(`{"t":"pong","ts":%d}`, p.TS))
				}
				alive(c)
				eventually(t, 5*time.Second, func() error {
					if got := sampleCount(t, n.reg, "presenced_heartbeat_rtt_seconds"); got < int64(pings) {
						return fmt.Errorf("heartbeat_rtt_seconds has %d samples, want %d", got, pings)
					}
					if got := sampleCount(t, n.reg, "presenced_outbox_depth_bytes"); got < int64(pings) {
						return fmt.Errorf("outbox_depth_bytes has %d samples, want %d", got, pings)
					}
					return nil
				})
			},
		},
		{
			name: "auth renews the token",
			cfg: func(cfg *server.Config) {
				cfg.Presence.Insecure = false
				cfg.Presence.Auth = fakeAuth{}
				// The time the client has to renew: generous under -race
				// on a busy machine.
				cfg.Presence.AuthGrace = 2 * time.Second
			},
			run: func(t *testing.T, n *node, _ func() error) {
				c := connect(t, n)
				start := time.Now()    // before the token is verified
				tokenHello(c, "short") // expires in 300 ms
				c.send(`{"t":"auth","id":5,"token":"alice"}`)
				// The old token expires soon: a refresh may come first.
				c.waitFor(5*time.Second, "ack 5", func(m message) bool {
					if m.T == "ack" {
						checkKeys(t, m, "t", "id")
						return m.ID == 5
					}
					if m.T != "refresh" && m.T != "ping" {
						t.Fatalf("got %s, want ack 5", m.raw)
					}
					return false
				})
				// Past the old expiry and its grace, the connection lives on.
				c.quiet(time.Until(start.Add(300*time.Millisecond + 2*time.Second + 300*time.Millisecond)))
				alive(c)
				if got := metric(t, n.reg, "presenced_token_refreshes_total"); got != 1 {
					t.Errorf("token_refreshes_total = %v, want 1", got)
				}
			},
		},
		{
			name: "refresh before the token expires",
			cfg: func(cfg *server.Config) {
				withJWT(cfg)
				cfg.Presence.RefreshBefore = time.Hour
			},
			run: func(t *testing.T, n *node, _ func() error) {
				exp := time.Now().Add(10 * time.Minute)
				c := connect(t, n)
				tokenHello(c, signToken(t, "alice", exp, nil))
				r := c.expectMsg("refresh")
				checkKeys(t, r, "t", "exp")
				if r.Exp != exp.Unix() {
					t.Fatalf("refresh %s, want exp %d", r.raw, exp.Unix())
				}
				// Sent once per token.
				c.quiet(200 * time.Millisecond)
				c.send(map[string]any{"t": "auth", "id": 1, "token": signToken(t, "alice", time.Now().Add(2*time.Hour), nil)})
				expectAck(c, 1)
				c.quiet(200 * time.Millisecond)
			},
		},
		{
			name: "bye then 1001 on drain",
			cfg:  func(cfg *server.Config) { cfg.Drain = 500 * time.Millisecond },
			run: func(t *testing.T, n *node, stop func() error) {
				c := login(t, n, "alice")
				joinRoom(c, "r")
				stopped := make(chan error, 1)
				go func() { stopped <- stop() }()
				b := c.expectMsg("bye")
				checkKeys(t, b, "t", "reason", "retry_ms")
				if b.Reason != "draining" || b.RetryMS < 0 || b.RetryMS >= 500 {
					t.Fatalf("bye %s, want reason draining and retry_ms in [0, 500)", b.raw)
				}
				if got := c.closeCode(); got != wire.CloseGoingAway {
					t.Fatalf("close code %d, want 1001", got)
				}
				if err := <-stopped; err != nil {
					t.Fatalf("Run: %v", err)
				}
			},
		},
	})
}

// TestContractErrors covers every error code: each is answered with err
// (with the command's id) and, unless the contract says otherwise, the
// connection stays open.
func TestContractErrors(t *testing.T) {
	runContract(t, []contractCase{
		{
			name: "bad_request",
			run: func(t *testing.T, n *node, _ func() error) {
				c := login(t, n, "alice")
				steps := []struct {
					send string
					id   int64
				}{
					{`{"t":"dance","id":9}`, 9},                   // unknown t
					{`{"t":"join","room":"r"}`, 0},                // no id
					{`{"t":"join","id":-1,"room":"r"}`, 0},        // id not positive
					{`{"t":"join","id":2,"room":"no spaces"}`, 2}, // bad room id
					{`{"t":"join","id":3}`, 3},                    // no room
					{`{"t":"set","id":4,"room":"r"}`, 4},          // no state
					{`{"t":"set","id":5,"room":"r","state":{"meta":[1]}}`, 5},
					{`{"t":"set","id":6,"room":"r","state":{"status":"` + strings.Repeat("s", 33) + `"}}`, 6},
					{`{"t":"auth","id":7}`, 7},                       // no token
					{`{"t":"hello","v":1,"id":8,"user":"alice"}`, 8}, // hello twice
					{`{"id":10}`, 10},                                // no t
					{`[1,2]`, 0},                                     // not an object
					{`{"t":"join","id":"11","room":"r"}`, 0},         // id of the wrong type
				}
				for _, s := range steps {
					c.send(s.send)
					expectErr(c, s.id, wire.ErrCodeBadRequest)
				}
				alive(c)
			},
		},
		{
			name: "unauthorized: auth on a server that verifies no token",
			run: func(t *testing.T, n *node, _ func() error) {
				c := login(t, n, "alice")
				c.send(`{"t":"auth","id":1,"token":"whatever"}`)
				expectErr(c, 1, wire.ErrCodeUnauthorized)
				alive(c)
			},
		},
		{
			name: "unauthorized: refused token then 4101",
			cfg:  withJWT,
			run: func(t *testing.T, n *node, _ func() error) {
				c := connect(t, n)
				tokenHello(c, signToken(t, "alice", time.Now().Add(time.Hour), nil))
				c.send(`{"t":"auth","id":2,"token":"not.a.jwt"}`)
				expectErr(c, 2, wire.ErrCodeUnauthorized)
				if got := c.closeCode(); got != wire.CloseUnauthorized {
					t.Fatalf("close code %d, want 4101", got)
				}
				if got := metric(t, n.reg, "presenced_token_refresh_failures_total"); got != 1 {
					t.Errorf("token_refresh_failures_total = %v, want 1", got)
				}
			},
		},
		{
			name: "forbidden: room outside the token's rooms",
			cfg:  withJWT,
			run: func(t *testing.T, n *node, _ func() error) {
				c := connect(t, n)
				tokenHello(c, signToken(t, "alice", time.Now().Add(time.Hour), []string{"chat:*"}))
				c.send(`{"t":"join","id":1,"room":"lobby"}`)
				expectErr(c, 1, wire.ErrCodeForbidden)
				c.send(`{"t":"join","id":2,"room":"chat:42"}`)
				expectAck(c, 2)
				c.expect("sync")
			},
		},
		{
			name: "forbidden: auth for another user then 4103",
			cfg:  withJWT,
			run: func(t *testing.T, n *node, _ func() error) {
				c := connect(t, n)
				tokenHello(c, signToken(t, "alice", time.Now().Add(time.Hour), nil))
				c.send(map[string]any{"t": "auth", "id": 3, "token": signToken(t, "mallory", time.Now().Add(time.Hour), nil)})
				expectErr(c, 3, wire.ErrCodeForbidden)
				if got := c.closeCode(); got != wire.CloseForbidden {
					t.Fatalf("close code %d, want 4103", got)
				}
			},
		},
		{
			name: "forbidden: auth with a narrower rooms claim leaves the rooms it no longer allows",
			cfg:  withJWT,
			run: func(t *testing.T, n *node, _ func() error) {
				alice := connect(t, n)
				tokenHello(alice, signToken(t, "alice", time.Now().Add(time.Hour), nil))
				joinRoom(alice, "chat:1")
				joinRoom(alice, "lobby")
				bob := connect(t, n)
				tokenHello(bob, signToken(t, "bob", time.Now().Add(time.Hour), nil))
				cur := joinRoom(bob, "lobby").Cur

				alice.send(map[string]any{"t": "auth", "id": 2, "token": signToken(t, "alice", time.Now().Add(time.Hour), []string{"chat:*"})})
				awaitAck(alice, 2)
				e := alice.waitFor(5*time.Second, "err forbidden", func(m message) bool { return m.T != "diff" && m.T != "ping" })
				checkKeys(t, e, "t", "code", "msg")
				if e.Code != wire.ErrCodeForbidden || !strings.Contains(e.Msg, "lobby") {
					t.Fatalf("got %s, want err forbidden naming lobby", e.raw)
				}
				if d := expectDiff(bob, cur, "leave"); d.field("leave") != `["alice"]` {
					t.Fatalf("diff %s, want alice's leave", d.raw)
				}
				alice.send(`{"t":"set","id":3,"room":"lobby","state":{"status":"away"}}`)
				expectErr(alice, 3, wire.ErrCodeNotJoined)
				alice.send(`{"t":"set","id":4,"room":"chat:1","state":{"status":"away"}}`)
				awaitAck(alice, 4)
			},
		},
		{
			name: "not_joined",
			run: func(t *testing.T, n *node, _ func() error) {
				c := login(t, n, "alice")
				c.send(`{"t":"set","id":1,"room":"r","state":{"status":"away"}}`)
				expectErr(c, 1, wire.ErrCodeNotJoined)
				c.send(`{"t":"sync","id":2,"room":"r"}`)
				expectErr(c, 2, wire.ErrCodeNotJoined)
				joinRoom(c, "r")
				c.send(`{"t":"leave","id":3,"room":"r"}`)
				expectAck(c, 3)
				c.send(`{"t":"sync","id":4,"room":"r"}`)
				expectErr(c, 4, wire.ErrCodeNotJoined)
			},
		},
		{
			name: "too_many_rooms",
			cfg:  func(cfg *server.Config) { cfg.Presence.MaxRooms = 2 },
			run: func(t *testing.T, n *node, _ func() error) {
				c := login(t, n, "alice")
				joinRoom(c, "a")
				joinRoom(c, "b")
				c.send(`{"t":"join","id":3,"room":"c"}`)
				expectErr(c, 3, wire.ErrCodeTooManyRooms)
				// Joining a room already joined is no new room.
				c.send(`{"t":"join","id":4,"room":"a"}`)
				expectAck(c, 4)
				c.expect("sync")
				c.send(`{"t":"leave","id":5,"room":"b"}`)
				expectAck(c, 5)
				c.send(`{"t":"join","id":6,"room":"c"}`)
				expectAck(c, 6)
			},
		},
		{
			// The rate is so low (a token every 100 s) that no token frees
			// up during the case: what each message gets depends only on
			// the tokens taken before it, not on the machine's speed.
			name: "rate_limited",
			cfg: func(cfg *server.Config) {
				cfg.Presence.Rate = 0.01
				cfg.Presence.Burst = 4
				cfg.Presence.FloodSeconds = 1
			},
			run: func(t *testing.T, n *node, _ func() error) {
				const rtt = "presenced_heartbeat_rtt_seconds"
				c := login(t, n, "alice")
				// Within the rate a pong is accepted (its round trip is
				// observed) and takes a token, and so does a malformed
				// command: with the pong, the bad join and two leaves, the
				// four tokens are gone.
				c.send(fmt.Sprintf(`{"t":"pong","ts":%d}`, time.Now().UnixMilli()))
				c.send(`{"t":"join","id":1}`) // no room
				expectErr(c, 1, wire.ErrCodeBadRequest)
				c.send(`{"t":"leave","id":2,"room":"r"}`)
				expectAck(c, 2)
				c.send(`{"t":"leave","id":3,"room":"r"}`)
				expectAck(c, 3)
				if got := sampleCount(t, n.reg, rtt); got != 1 {
					t.Fatalf("%s has %d samples after a pong within the rate, want 1", rtt, got)
				}
				c.send(`{"t":"leave","id":4,"room":"r"}`)
				expectErr(c, 4, wire.ErrCodeRateLimited)
				// Over the rate a malformed command is refused like any
				// other, before it is parsed further.
				c.send(`{"t":"join","id":5}`)
				expectErr(c, 5, wire.ErrCodeRateLimited)
				// A pong over the rate is ignored: no answer, no sample.
				c.send(fmt.Sprintf(`{"t":"pong","ts":%d}`, time.Now().UnixMilli()))
				c.send(`{"t":"leave","id":6,"room":"r"}`)
				expectErr(c, 6, wire.ErrCodeRateLimited)
				if got := sampleCount(t, n.reg, rtt); got != 1 {
					t.Errorf("%s has %d samples after a pong over the rate, want still 1", rtt, got)
				}
				if got := metric(t, n.reg, "presenced_rate_limited_total"); got != 3 {
					t.Errorf("rate_limited_total = %v, want 3", got)
				}

				// Pongs alone, beyond the rate, are a flood: never an err,
				// and 4029 once their refusals span FloodSeconds (1 s).
				// (Sent every 20 ms until the close; the read gives up
				// after 10 s.)
				p := login(t, n, "bob")
				stop := p.flood(`{"t":"pong","ts":1}`, 20*time.Millisecond)
				defer stop()
				code := p.closeAfterPings()
				stop()
				p.answerClose()
				if code != wire.CloseRateLimited {
					t.Fatalf("close code %d after a pong flood, want 4029", code)
				}
			},
		},
		{
			name: "too_large",
			run: func(t *testing.T, n *node, _ func() error) {
				c := login(t, n, "alice")
				big := `{"k":"` + strings.Repeat("x", 510) + `"}` // 518 bytes
				c.send(`{"t":"join","id":1,"room":"r","state":{"meta":` + big + `}}`)
				expectErr(c, 1, wire.ErrCodeTooLarge)
				fits := `{"k":"` + strings.Repeat("x", 504) + `"}` // 512 bytes
				c.send(`{"t":"join","id":2,"room":"r","state":{"meta":` + fits + `}}`)
				expectAck(c, 2)
				if s := c.expectMsg("sync"); !strings.Contains(s.field("members"), fits) {
					t.Fatalf("sync %s lacks the 512-byte meta", s.raw)
				}
				c.send(`{"t":"set","id":3,"room":"r","state":{"meta":` + big + `}}`)
				expectErr(c, 3, wire.ErrCodeTooLarge)
			},
		},
		{
			name: "internal: the authenticator fails",
			cfg: func(cfg *server.Config) {
				cfg.Presence.Insecure = false
				cfg.Presence.Auth = fakeAuth{}
			},
			run: func(t *testing.T, n *node, _ func() error) {
				c := connect(t, n)
				if w := tokenHello(c, "alice"); w.User != "alice" {
					t.Fatalf("welcome %s", w.raw)
				}
				c.send(`{"t":"auth","id":4,"token":"boom"}`)
				expectErr(c, 4, wire.ErrCodeInternal)
				alive(c)
				c.send(`{"t":"auth","id":5,"token":"alice"}`)
				expectAck(c, 5)
			},
		},
	})
}

// TestContractCloseCodes covers every close code the server sends.
func TestContractCloseCodes(t *testing.T) {
	type closeCase struct {
		name      string
		cfg       func(cfg *server.Config)
		hello     string                          // sent first unless empty
		act       func(t *testing.T, c *wsClient) // then this
		want      wire.CloseCode
		helloFail string // presenced_hello_failures_total reason counted, if any
	}
	sendText := func(s string) func(t *testing.T, c *wsClient) {
		return func(t *testing.T, c *wsClient) { c.send(s) }
	}
	const hello = `{"t":"hello","v":1,"user":"alice"}`
	cases := []closeCase{
		{
			name:  "1000 echoes a client close",
			hello: hello,
			act: func(t *testing.T, c *wsClient) {
				f := ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "done")))
				if err := ws.WriteFrame(c.conn, f); err != nil {
					t.Fatal(err)
				}
			},
			want: wire.CloseNormal,
		},
		{
			name:  "1002 unmasked frame",
			hello: hello,
			act: func(t *testing.T, c *wsClient) {
				if err := ws.WriteFrame(c.conn, ws.NewTextFrame([]byte(`{"t":"ping"}`))); err != nil {
					t.Fatal(err)
				}
			},
			want: wire.CloseProtocolError,
		},
		{
			name:  "1003 binary message",
			hello: hello,
			act: func(t *testing.T, c *wsClient) {
				writeFrames(t, c.conn, ws.OpBinary, `{"t":"ping"}`)
			},
			want: wire.CloseUnsupported,
		},
		{name: "1007 invalid JSON", hello: hello, act: sendText(`{"t":"ping",`), want: wire.CloseInvalidPayload},
		{name: "1007 invalid JSON before hello", act: sendText(`hello`), want: wire.CloseInvalidPayload, helloFail: "bad_request"},
		{name: "1007 invalid UTF-8", hello: hello, act: sendText("{\"t\":\"ping\",\"x\":\"\xc3\x28\"}"), want: wire.CloseInvalidPayload},
		{
			name:  "1009 message too big",
			hello: hello,
			act: func(t *testing.T, c *wsClient) {
				c.send(`{"t":"ping","pad":"` + strings.Repeat("p", 4096) + `"}`)
			},
			want: wire.CloseTooBig,
		},
		{
			name: "4001 heartbeat silence",
			cfg: func(cfg *server.Config) {
				cfg.Presence.HeartbeatInterval = 200 * time.Millisecond
				cfg.Presence.HeartbeatTimeout = 200 * time.Millisecond
			},
			hello: hello,
			act:   func(*testing.T, *wsClient) {}, // say nothing, answer no ping
			want:  wire.CloseHeartbeat,
		},
		{
			name: "4003 token expired",
			cfg: func(cfg *server.Config) {
				withJWT(cfg)
				cfg.Presence.AuthGrace = 300 * time.Millisecond
			},
			act: func(t *testing.T, c *wsClient) {
				exp := time.Now().Add(2 * time.Second)
				tokenHello(c, signToken(t, "alice", exp, nil))
				// refresh comes at once (60 s before exp); never answered.
				if r := c.expect("refresh"); r.Exp != exp.Unix() {
					t.Fatalf("refresh exp %d, want %d", r.Exp, exp.Unix())
				}
				if got := c.closeCode(); got != wire.CloseTokenExpired {
					t.Fatalf("close code %d, want 4003", got)
				}
				// exp has second precision.
				if early := time.Until(exp.Truncate(time.Second).Add(300 * time.Millisecond)); early > 50*time.Millisecond {
					t.Fatalf("closed %v before exp + auth_grace", early)
				}
			},
			want: wire.CloseTokenExpired,
		},
		{
			name:      "4004 hello timeout",
			cfg:       func(cfg *server.Config) { cfg.Presence.HelloTimeout = 300 * time.Millisecond },
			act:       func(*testing.T, *wsClient) {},
			want:      wire.CloseHelloTimeout,
			helloFail: "timeout",
		},
		{
			name: "4029 flood",
			cfg: func(cfg *server.Config) {
				cfg.Presence.Rate = 5
				cfg.Presence.Burst = 5
				cfg.Presence.FloodSeconds = 1
			},
			hello: hello,
			act: func(t *testing.T, c *wsClient) {
				stop := c.flood(`{"t":"ping","ts":1}`, 2*time.Millisecond)
				defer stop()
				code := c.awaitClose()
				stop()
				c.answerClose()
				if code != wire.CloseRateLimited {
					t.Fatalf("close code %d, want 4029", code)
				}
			},
			want: wire.CloseRateLimited,
		},
		{name: "4100 join before hello", act: sendText(`{"t":"join","id":1,"room":"r"}`), want: wire.CloseBadRequest, helloFail: "bad_request"},
		{name: "4100 hello without user or token", act: sendText(`{"t":"hello","v":1}`), want: wire.CloseBadRequest, helloFail: "bad_request"},
		{name: "4100 hello with a bad user id", act: sendText(`{"t":"hello","v":1,"user":"a b"}`), want: wire.CloseBadRequest, helloFail: "bad_request"},
		{name: "4101 bad token", cfg: withJWT, act: sendText(`{"t":"hello","v":1,"token":"x.y.z"}`), want: wire.CloseUnauthorized, helloFail: "unauthorized"},
		{
			name: "4101 expired token",
			cfg:  withJWT,
			act: func(t *testing.T, c *wsClient) {
				// Expired beyond the default leeway (auth.DefaultLeeway).
				c.send(map[string]any{"t": "hello", "v": 1, "token": signToken(t, "alice", time.Now().Add(-time.Minute), nil)})
			},
			want:      wire.CloseUnauthorized,
			helloFail: "unauthorized",
		},
		{
			name: "4101 token signed with another key",
			cfg:  withJWT,
			act: func(t *testing.T, c *wsClient) {
				tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("another secret, another issuer!!"))
				if err != nil {
					t.Fatal(err)
				}
				c.send(map[string]any{"t": "hello", "v": 1, "token": tok})
			},
			want:      wire.CloseUnauthorized,
			helloFail: "unauthorized",
		},
		{name: "4101 user hello on a secure server", cfg: withJWT, act: sendText(hello), want: wire.CloseUnauthorized, helloFail: "unauthorized"},
		{
			name: "4103 auth for another user",
			cfg:  withJWT,
			act: func(t *testing.T, c *wsClient) {
				tokenHello(c, signToken(t, "alice", time.Now().Add(time.Hour), nil))
				c.send(map[string]any{"t": "auth", "id": 1, "token": signToken(t, "bob", time.Now().Add(time.Hour), nil)})
				expectErr(c, 1, wire.ErrCodeForbidden)
			},
			want: wire.CloseForbidden,
		},
		{name: "4105 hello v:2", act: sendText(`{"t":"hello","v":2,"user":"alice"}`), want: wire.CloseVersion, helloFail: "version"},
	}
	var ccs []contractCase
	for _, tc := range cases {
		ccs = append(ccs, contractCase{
			name: tc.name,
			cfg:  tc.cfg,
			run: func(t *testing.T, n *node, _ func() error) {
				c := connect(t, n)
				if tc.hello != "" {
					c.send(tc.hello)
					c.expect("welcome")
				}
				tc.act(t, c)
				if tc.want != wire.CloseRateLimited && tc.want != wire.CloseTokenExpired {
					if got := c.closeCode(); got != tc.want {
						t.Fatalf("close code %d, want %d", got, tc.want)
					}
				}
				eventually(t, 5*time.Second, func() error {
					if got := metric(t, n.reg, "presenced_sessions"); got != 0 {
						return fmt.Errorf("sessions = %v, want 0", got)
					}
					code := strconv.Itoa(int(tc.want))
					if n.logs.find("msg", "connection closed", "code", code) == nil {
						return fmt.Errorf("no log of a close with code %s", code)
					}
					return nil
				})
				if tc.helloFail != "" {
					if got := metric(t, n.reg, "presenced_hello_failures_total", "reason", tc.helloFail); got != 1 {
						t.Errorf("hello_failures_total{reason=%q} = %v, want 1", tc.helloFail, got)
					}
				}
			},
		})
	}
	ccs = append(ccs, contractCase{
		name: "4002 slow consumer",
		cfg: func(cfg *server.Config) {
			cfg.Outbox = 8 << 10
			cfg.Presence.SlowTimeout = 200 * time.Millisecond
			cfg.Presence.Rate = 1e6
			cfg.Presence.Burst = 1e6
		},
		run: func(t *testing.T, n *node, _ func() error) {
			// Ten members with large metas make each sync about 6 KiB.
			meta := `{"k":"` + strings.Repeat("m", 480) + `"}`
			for i := range 10 {
				c := login(t, n, fmt.Sprintf("member-%d", i))
				c.send(`{"t":"join","id":1,"room":"big","state":{"meta":` + meta + `}}`)
				c.expect("ack")
			}
			slow := dialSmallBuffer(t, n)
			slow.send(`{"t":"hello","v":1,"user":"slow"}`)
			slow.expect("welcome")
			joinRoom(slow, "big")
			// Ask for syncs without reading them.
			stop := slow.flood(`{"t":"sync","id":1,"room":"big"}`, 100*time.Microsecond)
			defer stop()
			eventually(t, 20*time.Second, func() error {
				if got := metric(t, n.reg, "presenced_slow_consumer_closes_total"); got != 1 {
					return fmt.Errorf("slow_consumer_closes_total = %v, want 1", got)
				}
				return nil
			})
			stop()
			if got := slow.closeCode(); got != wire.CloseSlowConsumer {
				t.Fatalf("close code %d, want 4002", got)
			}
			if got := metric(t, n.reg, "presenced_diffs_dropped_total"); got < 0 {
				t.Errorf("diffs_dropped_total missing")
			}
		},
	})
	runContract(t, ccs)
}

// rejoinGrace is the leave grace of the rejoin cases: the time a dropped
// client has to log in and join again, generous under -race on a busy
// machine.
const rejoinGrace = 2 * time.Second

// TestSemantics checks end to end, on both engines, the presence semantics
// that span connections: users versus connections, the leave grace,
// resume and large rooms. The presence unit tests cover the rest.
func TestSemantics(t *testing.T) {
	runContract(t, []contractCase{
		{
			name: "a user with two connections is one member",
			// A grace far beyond the read timeout: a clean close that
			// waited for it would leave no diff to read.
			cfg: func(cfg *server.Config) { cfg.Presence.LeaveGrace = time.Hour },
			run: func(t *testing.T, n *node, _ func() error) {
				alice1 := login(t, n, "alice")
				s := joinRoom(alice1, "r")
				bob := login(t, n, "bob")
				bs := joinRoom(bob, "r")
				expectDiff(alice1, s.Cur, "join")

				alice2 := login(t, n, "alice")
				if s2 := joinRoom(alice2, "r"); s2.Count != 2 || !slices.Equal(users(s2.Members), []string{"alice", "bob"}) {
					t.Fatalf("second connection's sync %s", s2.raw)
				}
				bob.quiet(150 * time.Millisecond) // alice was a member already

				// The state is the one set last by any connection.
				alice2.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
				awaitAck(alice2, 2)
				d := expectDiff(bob, bs.Cur, "update")
				if d.field("update") != `[{"u":"alice","s":"away","m":{}}]` {
					t.Fatalf("update %s", d.raw)
				}
				if d1 := alice1.expectMsg("diff"); d1.Cur != d.Cur {
					t.Fatalf("alice's first connection got %s, want %s", d1.raw, d.raw)
				}

				// One connection leaving leaves the user in.
				alice1.send(`{"t":"leave","id":3,"room":"r"}`)
				awaitAck(alice1, 3)
				bob.quiet(150 * time.Millisecond)

				// The last one closing cleanly removes the user at once,
				// not after the grace (an hour).
				alice2.close()
				d = expectDiff(bob, d.Cur, "leave")
				if d.field("leave") != `["alice"]` || d.Count != 1 {
					t.Fatalf("leave %s", d.raw)
				}
			},
		},
		{
			name: "rejoin within the leave grace: no leave, no join",
			cfg:  func(cfg *server.Config) { cfg.Presence.LeaveGrace = rejoinGrace },
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				alice.send(`{"t":"join","id":1,"room":"r","state":{"meta":{"n":1}}}`)
				alice.expect("ack")
				alice.expect("sync")
				bob := login(t, n, "bob")
				bs := joinRoom(bob, "r")

				dropped := time.Now()
				alice.drop()
				eventually(t, 5*time.Second, func() error {
					if got := metric(t, n.reg, "presenced_sessions"); got != 1 {
						return fmt.Errorf("sessions = %v, want 1 once the reset is seen", got)
					}
					return nil
				})
				again := login(t, n, "alice")
				again.send(`{"t":"join","id":1,"room":"r","state":{"meta":{"n":1}}}`)
				expectAck(again, 1)
				if s := again.expectMsg("sync"); s.Count != 2 || s.Cur != bs.Cur {
					t.Fatalf("sync %s, want both members at %s", s.raw, bs.Cur)
				}
				bob.quiet(time.Until(dropped.Add(rejoinGrace + 200*time.Millisecond))) // beyond the grace
				if got := metric(t, n.reg, "presenced_leaves_total"); got != 0 {
					t.Errorf("leaves_total = %v, want 0", got)
				}
			},
		},
		{
			name: "rejoin within the leave grace with a new state: an update",
			cfg:  func(cfg *server.Config) { cfg.Presence.LeaveGrace = rejoinGrace },
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				joinRoom(alice, "r")
				bob := login(t, n, "bob")
				bs := joinRoom(bob, "r")

				dropped := time.Now()
				alice.drop()
				eventually(t, 5*time.Second, func() error {
					if got := metric(t, n.reg, "presenced_sessions"); got != 1 {
						return fmt.Errorf("sessions = %v, want 1 once the reset is seen", got)
					}
					return nil
				})
				again := login(t, n, "alice")
				again.send(`{"t":"join","id":1,"room":"r","state":{"status":"away"}}`)
				expectAck(again, 1)
				d := expectDiff(bob, bs.Cur, "update")
				if d.field("update") != `[{"u":"alice","s":"away","m":{}}]` {
					t.Fatalf("diff %s", d.raw)
				}
				bob.quiet(time.Until(dropped.Add(rejoinGrace + 200*time.Millisecond))) // beyond the grace
			},
		},
		{
			name: "a lost connection leaves after the grace",
			cfg:  func(cfg *server.Config) { cfg.Presence.LeaveGrace = 500 * time.Millisecond },
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				joinRoom(alice, "r")
				bob := login(t, n, "bob")
				bs := joinRoom(bob, "r")

				start := time.Now() // before the server can see the reset
				alice.drop()
				d := expectDiff(bob, bs.Cur, "leave")
				if d.field("leave") != `["alice"]` || d.Count != 1 {
					t.Fatalf("diff %s", d.raw)
				}
				if since := time.Since(start); since < 450*time.Millisecond {
					t.Fatalf("leave %v after the reset, want after the 500 ms grace", since)
				}
			},
		},
		{
			name: "closes that forbid a reconnect leave at once",
			cfg:  func(cfg *server.Config) { cfg.Presence.LeaveGrace = 10 * time.Second },
			run: func(t *testing.T, n *node, _ func() error) {
				bob := login(t, n, "bob")
				cur := joinRoom(bob, "r").Cur
				for _, tc := range []struct {
					name string
					send func(c *wsClient)
					want wire.CloseCode
				}{
					{"4101 refused auth", func(c *wsClient) { c.send(`{"t":"auth","id":1,"token":"x"}`) }, 0},
					{"1003 binary", func(c *wsClient) { writeFrames(t, c.conn, ws.OpBinary, "x") }, wire.CloseUnsupported},
					{"1007 invalid JSON", func(c *wsClient) { c.send(`{`) }, wire.CloseInvalidPayload},
				} {
					alice := login(t, n, "alice")
					joinRoom(alice, "r")
					cur = expectDiff(bob, cur, "join").Cur
					tc.send(alice)
					if tc.want != 0 {
						if got := alice.closeCode(); got != tc.want {
							t.Fatalf("%s: close code %d, want %d", tc.name, got, tc.want)
						}
					} else {
						alice.close()
					}
					d := bob.waitFor(5*time.Second, tc.name+": alice's leave, before the grace", func(m message) bool { return m.T == "diff" })
					if d.From != cur || d.field("leave") != `["alice"]` {
						t.Fatalf("%s: diff %s, want alice's leave from %s", tc.name, d.raw, cur)
					}
					cur = d.Cur
				}
			},
		},
		{
			name: "transport protocol errors leave at once",
			cfg:  func(cfg *server.Config) { cfg.Presence.LeaveGrace = 10 * time.Second },
			run: func(t *testing.T, n *node, _ func() error) {
				bob := login(t, n, "bob")
				cur := joinRoom(bob, "r").Cur
				for _, tc := range []struct {
					name string
					send func(c *wsClient)
					want wire.CloseCode
				}{
					{"1009 too big", func(c *wsClient) { c.send(strings.Repeat(" ", 5000)) }, wire.CloseTooBig},
					{"1007 invalid UTF-8", func(c *wsClient) { c.send("\"\xff\"") }, wire.CloseInvalidPayload},
					{"1002 unmasked frame", func(c *wsClient) { ws.WriteFrame(c.conn, ws.NewTextFrame([]byte("{}"))) }, wire.CloseProtocolError},
				} {
					alice := login(t, n, "alice")
					joinRoom(alice, "r")
					cur = expectDiff(bob, cur, "join").Cur
					tc.send(alice)
					if got := alice.closeCode(); got != tc.want {
						t.Fatalf("%s: close code %d, want %d", tc.name, got, tc.want)
					}
					d := bob.waitFor(5*time.Second, tc.name+": alice's leave, before the grace", func(m message) bool { return m.T == "diff" })
					if d.From != cur || d.field("leave") != `["alice"]` {
						t.Fatalf("%s: diff %s, want alice's leave from %s", tc.name, d.raw, cur)
					}
					cur = d.Cur
				}
			},
		},
		{
			name: "resume after a reconnect continues with a diff",
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				s := joinRoom(alice, "r")
				bob := login(t, n, "bob")
				joinRoom(bob, "r")
				cur := expectDiff(alice, s.Cur, "join").Cur

				alice.drop()
				bob.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
				awaitAck(bob, 2)
				bob.waitFor(5*time.Second, "bob's update", func(m message) bool { return m.T == "diff" })

				again := connect(t, n)
				again.send(map[string]any{"t": "hello", "v": 1, "user": "alice", "resume": map[string]string{"r": cur}})
				again.expect("welcome")
				d := again.expectMsg("diff")
				checkKeys(t, d, "t", "room", "from", "cur", "count", "update", "typing")
				if d.From != cur || d.Count != 2 || d.field("update") != `[{"u":"bob","s":"away","m":{}}]` || d.field("typing") != "[]" {
					t.Fatalf("resume diff %s, want bob's update from %s", d.raw, cur)
				}
				// The chain goes on.
				bob.send(`{"t":"set","id":3,"room":"r","state":{"status":"online"}}`)
				awaitAck(bob, 3)
				expectDiff(again, d.Cur, "update")
				// Resuming at the current cursor: an empty diff.
				bobCur := bob.waitFor(5*time.Second, "bob's second update", func(m message) bool { return m.T == "diff" && m.field("update") != "" }).Cur
				third := connect(t, n)
				third.send(map[string]any{"t": "hello", "v": 1, "user": "alice", "resume": map[string]string{"r": bobCur}})
				third.expect("welcome")
				d = third.expectMsg("diff")
				checkKeys(t, d, "t", "room", "from", "cur", "count", "typing")
				if d.From != bobCur || d.Cur != bobCur {
					t.Fatalf("resume diff %s, want an empty diff at %s", d.raw, bobCur)
				}
				if got := metric(t, n.reg, "presenced_resume_attempts_total"); got != 2 {
					t.Errorf("resume_attempts_total = %v, want 2", got)
				}
				if got := metric(t, n.reg, "presenced_resume_successes_total"); got != 2 {
					t.Errorf("resume_successes_total = %v, want 2", got)
				}
			},
		},
		{
			name: "resume with a bogus cursor gets a sync",
			run: func(t *testing.T, n *node, _ func() error) {
				alice := login(t, n, "alice")
				s := joinRoom(alice, "r")
				c, ok := wire.ParseCursor(s.Cur)
				if !ok {
					t.Fatalf("cursor %q", s.Cur)
				}
				cursors := []struct{ name, cur string }{
					{"garbage", "garbage"},
					{"none", ""},
					{"another epoch", wire.Cursor{Epoch: c.Epoch ^ 1, Seq: c.Seq}.String()},
					{"from the future", wire.Cursor{Epoch: c.Epoch, Seq: c.Seq + 5}.String()},
				}
				for _, tc := range cursors {
					bob := connect(t, n)
					bob.send(map[string]any{"t": "hello", "v": 1, "user": "bob", "resume": map[string]string{"r": tc.cur}})
					bob.expect("welcome")
					s := bob.expectMsg("sync")
					checkKeys(t, s, "t", "room", "cur", "count", "members", "typing", "partial")
					if s.Room != "r" || s.Count != 2 || !slices.Equal(users(s.Members), []string{"alice", "bob"}) {
						t.Fatalf("%s: sync %s, want alice and bob", tc.name, s.raw)
					}
					bob.close()
				}
				if got := metric(t, n.reg, "presenced_resume_successes_total"); got != 0 {
					t.Errorf("resume_successes_total = %v, want 0", got)
				}
			},
		},
		{
			name: "large room: partial sync, diffs with count and typing only",
			cfg:  func(cfg *server.Config) { cfg.Presence.ListLimit = 3 },
			run: func(t *testing.T, n *node, _ func() error) {
				var cs []*wsClient
				for i := 1; i <= 5; i++ {
					c := login(t, n, fmt.Sprintf("user-%d", i))
					s := joinRoom(c, "big")
					cs = append(cs, c)
					if i == 5 {
						checkKeys(t, s, "t", "room", "cur", "count", "members", "typing", "partial")
						if s.Count != 5 || !s.Partial || len(s.Members) != 3 {
							t.Fatalf("sync %s, want count 5, partial, 3 members", s.raw)
						}
					}
				}
				u1 := cs[0]
				u1.send(`{"t":"sync","id":99,"room":"big"}`)
				awaitAck(u1, 99)
				s := u1.expectMsg("sync")
				if s.Count != 5 || !s.Partial || len(s.Members) != 3 {
					t.Fatalf("sync %s, want count 5, partial, 3 members", s.raw)
				}
				joinRoom(login(t, n, "user-6"), "big")
				d := expectDiff(u1, s.Cur)
				if d.Count != 6 {
					t.Fatalf("diff %s, want count 6", d.raw)
				}
				cs[1].send(`{"t":"typing","room":"big","on":true}`)
				d = expectDiff(u1, d.Cur, "typing")
				if d.Count != 6 || d.field("typing") != `["user-2"]` {
					t.Fatalf("diff %s, want typing [user-2]", d.raw)
				}
				cs[2].send(`{"t":"set","id":5,"room":"big","state":{"status":"away"}}`)
				d = expectDiff(u1, d.Cur)
				cs[4].send(`{"t":"leave","id":5,"room":"big"}`)
				if d = expectDiff(u1, d.Cur); d.Count != 5 {
					t.Fatalf("diff %s, want count 5", d.raw)
				}
			},
		},
		{
			name: "sync cut by the sync budget is partial",
			cfg:  func(cfg *server.Config) { cfg.Presence.SyncBudget = 400 },
			run: func(t *testing.T, n *node, _ func() error) {
				meta := `{"k":"` + strings.Repeat("m", 90) + `"}`
				var last message
				for i := 1; i <= 5; i++ {
					c := login(t, n, fmt.Sprintf("user-%d", i))
					c.send(`{"t":"join","id":1,"room":"r","state":{"meta":` + meta + `}}`)
					c.expect("ack")
					last = c.expectMsg("sync")
				}
				if last.Count != 5 || !last.Partial || len(last.Members) == 0 || len(last.Members) >= 5 || len(last.raw) > 400 {
					t.Fatalf("sync of %d bytes %s, want count 5, partial, fewer members, at most 400 bytes", len(last.raw), last.raw)
				}
			},
		},
	})
}
