package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

var engines = []string{poller.EngineEpoll, poller.EngineNetpoll}

// dial opens a WebSocket client connection to n's /ws.
func dial(t *testing.T, n *node) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, _, err := ws.Dial(ctx, "ws://"+n.Addr().String()+"/ws")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// writeFrames sends each payload as one masked client frame of a single
// message of type op.
func writeFrames(t *testing.T, conn net.Conn, op ws.OpCode, parts ...string) {
	t.Helper()
	for i, p := range parts {
		fop := op
		if i > 0 {
			fop = ws.OpContinuation
		}
		f := ws.MaskFrame(ws.NewFrame(fop, i == len(parts)-1, []byte(p)))
		if err := ws.WriteFrame(conn, f); err != nil {
			t.Fatalf("write frame: %v", err)
		}
	}
}

// quickConfig is an insecure server on engine with a short tick, so that
// diffs and syncs arrive within milliseconds.
func quickConfig(engine string) server.Config {
	return server.Config{
		Engine:   engine,
		Presence: presence.Config{Insecure: true, Tick: 20 * time.Millisecond},
	}
}

// checkKeys fails unless m's top-level fields are exactly want.
func checkKeys(t *testing.T, m message, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := m.keys(); !slices.Equal(got, want) {
		t.Fatalf("%s has fields %v, want %v", m.raw, got, want)
	}
}

// users lists the u of members.
func users(ms []wire.Member) []string {
	us := make([]string, 0, len(ms))
	for _, m := range ms {
		us = append(us, m.U)
	}
	slices.Sort(us)
	return us
}

func TestJoinSync(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			n := startServer(t, quickConfig(engine))

			alice := connect(t, n)
			alice.send(`{"t":"hello","v":1,"user":"alice"}`)
			w := alice.expectMsg("welcome")
			checkKeys(t, w, "t", "v", "node", "conn", "user", "hb", "max")
			if w.V != 1 || w.User != "alice" || w.HB != 25000 || w.Max != 4096 || w.Node == "" ||
				!strings.HasPrefix(w.Conn, w.Node+"-") {
				t.Fatalf("welcome %s", w.raw)
			}

			alice.send(`{"t":"join","id":1,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice"}}}`)
			ack := alice.expectMsg("ack")
			checkKeys(t, ack, "t", "id")
			if ack.ID != 1 {
				t.Fatalf("ack %s, want id 1", ack.raw)
			}
			sync := alice.expectMsg("sync")
			checkKeys(t, sync, "t", "room", "cur", "count", "members", "typing", "partial")
			if sync.Room != "chat:42" || sync.Count != 1 || sync.Partial || sync.Cur == "" ||
				sync.field("typing") != "[]" ||
				sync.field("members") != `[{"u":"alice","s":"online","m":{"name":"Alice"}}]` {
				t.Fatalf("alice's sync %s", sync.raw)
			}

			bob := login(t, n, "bob")
			bob.send(`{"t":"join","id":7,"room":"chat:42"}`)
			if ack := bob.expect("ack"); ack.ID != 7 {
				t.Fatalf("bob's ack id %d, want 7", ack.ID)
			}
			bs := bob.expectMsg("sync")
			if bs.Count != 2 || !slices.Equal(users(bs.Members), []string{"alice", "bob"}) || bs.Partial {
				t.Fatalf("bob's sync %s, want alice and bob", bs.raw)
			}

			diff := alice.expectMsg("diff")
			checkKeys(t, diff, "t", "room", "from", "cur", "count", "join")
			if diff.From != sync.Cur || diff.Cur != bs.Cur || diff.Count != 2 ||
				diff.field("join") != `[{"u":"bob","s":"online","m":{}}]` {
				t.Fatalf("alice's diff %s, want bob's join from %s to %s", diff.raw, sync.Cur, bs.Cur)
			}

			checks := []struct {
				name string
				want float64
			}{
				{"presenced_connections_opened_total", 2},
				{"presenced_connections_active", 2},
				{"presenced_sessions", 2},
				{"presenced_rooms", 1},
				{"presenced_members", 2},
				{"presenced_joins_total", 2},
				{"presenced_messages_received_total", 4},
				{"presenced_send_full_total", 0},
			}
			for _, c := range checks {
				if got := metric(t, n.reg, c.name); got != c.want {
					t.Errorf("%s = %v, want %v", c.name, got, c.want)
				}
			}
			eventually(t, 5*time.Second, func() error {
				if got := sampleCount(t, n.reg, "presenced_fanout_latency_seconds"); got < 2 {
					return fmt.Errorf("fanout_latency_seconds has %d samples, want at least 2", got)
				}
				return nil
			})
		})
	}
}

// TestCloseReasons checks the close code each kind of bad input gets, and
// how the server counts and logs it.
func TestCloseReasons(t *testing.T) {
	writeClose := func(t *testing.T, c net.Conn) {
		f := ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
		if err := ws.WriteFrame(c, f); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name      string
		hello     bool // say hello first
		send      func(t *testing.T, conn net.Conn)
		wantCode  ws.StatusCode
		wantLabel string
	}{
		{
			name:      "binary message closes with 1003",
			hello:     true,
			send:      func(t *testing.T, c net.Conn) { writeFrames(t, c, ws.OpBinary, "\x00\x01") },
			wantCode:  ws.StatusUnsupportedData,
			wantLabel: "protocol",
		},
		{
			name:      "binary message before hello closes with 1003",
			send:      func(t *testing.T, c net.Conn) { writeFrames(t, c, ws.OpBinary, "\x00\x01") },
			wantCode:  ws.StatusUnsupportedData,
			wantLabel: "protocol",
		},
		{
			name:  "fragmented message over max closes with 1009",
			hello: true,
			send: func(t *testing.T, c net.Conn) {
				writeFrames(t, c, ws.OpText, strings.Repeat("a", 4000), strings.Repeat("b", 97))
			},
			wantCode:  ws.StatusMessageTooBig,
			wantLabel: "protocol",
		},
		{
			name:  "invalid UTF-8 closes with 1007",
			hello: true,
			send: func(t *testing.T, c net.Conn) {
				writeFrames(t, c, ws.OpText, "{\"t\":\"ping\",\"ts\":1,\"x\":\"\xff\"}")
			},
			wantCode:  ws.StatusInvalidFramePayloadData,
			wantLabel: "protocol",
		},
		{
			name:  "code point split across fragments is not invalid UTF-8",
			hello: true,
			send: func(t *testing.T, c net.Conn) {
				writeFrames(t, c, ws.OpText, "{\"t\":\"ping\",\"x\":\"\xe2\x9c", "\x93\"}")
				writeClose(t, c)
			},
			wantCode:  ws.StatusNormalClosure,
			wantLabel: "peer",
		},
		{
			name:      "invalid JSON closes with 1007",
			hello:     true,
			send:      func(t *testing.T, c net.Conn) { writeFrames(t, c, ws.OpText, `{"t":"join",`) },
			wantCode:  ws.StatusInvalidFramePayloadData,
			wantLabel: "protocol",
		},
		{
			name:      "unmasked frame closes with 1002",
			hello:     true,
			send:      func(t *testing.T, c net.Conn) { ws.WriteFrame(c, ws.NewTextFrame([]byte(`{"t":"ping"}`))) },
			wantCode:  ws.StatusProtocolError,
			wantLabel: "protocol",
		},
		{
			name:      "join before hello closes with 4100",
			send:      func(t *testing.T, c net.Conn) { writeFrames(t, c, ws.OpText, `{"t":"join","id":1,"room":"r"}`) },
			wantCode:  4100,
			wantLabel: "protocol",
		},
		{
			name:      "client close 1000 is echoed",
			hello:     true,
			send:      writeClose,
			wantCode:  ws.StatusNormalClosure,
			wantLabel: "peer",
		},
	}
	for _, engine := range engines {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				n := startServer(t, quickConfig(engine))
				c := connect(t, n)
				if tc.hello {
					c.send(`{"t":"hello","v":1,"user":"alice"}`)
					c.expect("welcome")
				}
				tc.send(t, c.conn)
				if got := ws.StatusCode(c.closeCode()); got != tc.wantCode {
					t.Fatalf("close code %d, want %d", got, tc.wantCode)
				}
				eventually(t, 5*time.Second, func() error {
					if got := metric(t, n.reg, "presenced_connections_closed_total", "reason", tc.wantLabel); got != 1 {
						return fmt.Errorf("closed_total{reason=%q} = %v, want 1", tc.wantLabel, got)
					}
					if got := metric(t, n.reg, "presenced_connections_active"); got != 0 {
						return fmt.Errorf("connections_active = %v, want 0", got)
					}
					if got := metric(t, n.reg, "presenced_sessions"); got != 0 {
						return fmt.Errorf("sessions = %v, want 0", got)
					}
					code := fmt.Sprint(int(tc.wantCode))
					if n.logs.find("msg", "connection closed", "reason", tc.wantLabel, "code", code) == nil {
						return fmt.Errorf("no log of the close with reason=%s code=%s", tc.wantLabel, code)
					}
					return nil
				})
			})
		}
	}
}

func TestHandshakeFailures(t *testing.T) {
	cases := []struct {
		name       string
		path       string
		header     http.Header
		plain      bool // a plain HTTP GET, not an upgrade
		wantStatus int
		wantLabel  string
	}{
		{name: "origin outside the allowlist", path: "/ws", header: http.Header{"Origin": {"https://evil.example"}}, wantStatus: 403, wantLabel: "origin"},
		{name: "wrong path", path: "/nope", wantStatus: 404, wantLabel: "not_found"},
		{name: "plain GET", path: "/ws", plain: true, wantStatus: 400, wantLabel: "bad_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := startServer(t, server.Config{AllowedOrigins: []string{"https://app.example"}, Presence: presence.Config{Insecure: true}})
			url := "ws://" + n.Addr().String() + tc.path
			var status int
			if tc.plain {
				status, _ = httpGet(t, "http://"+n.Addr().String()+tc.path)
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(tc.header)}
				conn, _, _, err := d.Dial(ctx, url)
				if err == nil {
					conn.Close()
					t.Fatal("upgrade succeeded")
				}
				var se ws.StatusError
				if !errors.As(err, &se) {
					t.Fatalf("dial error %v, want an HTTP status", err)
				}
				status = int(se)
			}
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d", status, tc.wantStatus)
			}
			eventually(t, 5*time.Second, func() error {
				if got := metric(t, n.reg, "presenced_handshake_failures_total", "reason", tc.wantLabel); got != 1 {
					return fmt.Errorf("handshake_failures_total{reason=%q} = %v, want 1", tc.wantLabel, got)
				}
				return nil
			})
		})
	}

	t.Run("allowed origin upgrades", func(t *testing.T) {
		n := startServer(t, server.Config{AllowedOrigins: []string{"https://app.example"}, Presence: presence.Config{Insecure: true}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://APP.example"}})}
		conn, _, _, err := d.Dial(ctx, "ws://"+n.Addr().String()+"/ws")
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conn.Close()
	})
}

// presencedMetricNames lists the metric names the package's source
// declares ("presenced_..." string literals), so that a metric added later
// is checked without editing this test.
func presencedMetricNames(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`"(presenced_[a-z_]+)"`)
	var names []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func TestAdmin(t *testing.T) {
	n := startServer(t, quickConfig(""))
	admin := "http://" + n.AdminAddr().String()
	c := connect(t, n)

	t.Run("every metric is exposed", func(t *testing.T) {
		_, body := httpGet(t, admin+"/metrics")
		names := presencedMetricNames(t)
		if len(names) < 25 {
			t.Fatalf("found only %d metric names in the source: %v", len(names), names)
		}
		for _, name := range names {
			if !strings.Contains(body, "# TYPE "+name+" ") {
				t.Errorf("/metrics lacks %s", name)
			}
		}
	})

	cases := []struct {
		path       string
		wantStatus int
		wantBody   []string
	}{
		{"/healthz", 200, []string{"ok"}},
		{"/readyz", 200, []string{"ready"}},
		{"/metrics", 200, []string{
			"presenced_connections_active 1",
			"presenced_connections_opened_total 1",
			`presenced_connections_closed_total{reason="peer"} 0`,
			`presenced_connections_closed_total{reason="shutdown"} 0`,
			`presenced_handshake_failures_total{reason="origin"} 0`,
			"presenced_messages_received_total 0",
			"presenced_frames_sent_total 0",
			"presenced_bytes_sent_total 0",
			"presenced_send_full_total 0",
			"presenced_handler_panics_total 0",
			`presenced_hello_failures_total{reason="timeout"} 0`,
			`presenced_hello_failures_total{reason="bad_request"} 0`,
			`presenced_hello_failures_total{reason="unauthorized"} 0`,
			`presenced_hello_failures_total{reason="version"} 0`,
			"presenced_joins_total 0",
			"presenced_leaves_total 0",
			"presenced_diffs_total 0",
			"presenced_fanout_latency_seconds_count 0",
			`presenced_fanout_latency_seconds_bucket{le="0.1"} 0`,
			"presenced_heartbeat_rtt_seconds_count 0",
			"presenced_rooms 0",
			"presenced_members 0",
			"presenced_sessions 1",
		}},
		{"/debug/pprof/", 200, []string{"goroutine"}},
		{"/debug/pprof/cmdline", 200, nil},
		{"/nope", 404, nil},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			status, body := httpGet(t, admin+tc.path)
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d", status, tc.wantStatus)
			}
			for _, want := range tc.wantBody {
				if !strings.Contains(body, want) {
					t.Errorf("body lacks %q:\n%s", want, body)
				}
			}
		})
	}

	t.Run("counts presence", func(t *testing.T) {
		c.send(`{"t":"hello","v":1,"user":"alice"}`)
		c.expect("welcome")
		c.send(`{"t":"join","id":1,"room":"r"}`)
		c.expect("ack")
		c.expect("sync")
		want := []string{
			"presenced_joins_total 1",
			"presenced_diffs_total 1",
			"presenced_fanout_latency_seconds_count 1",
			"presenced_rooms 1",
			"presenced_members 1",
			"presenced_messages_received_total 2",
			"presenced_frames_sent_total 3", // welcome, ack, sync
		}
		eventually(t, 5*time.Second, func() error {
			_, body := httpGet(t, admin+"/metrics")
			for _, w := range want {
				if !strings.Contains(body, w+"\n") {
					return fmt.Errorf("/metrics lacks %q", w)
				}
			}
			return nil
		})
	})

	t.Run("drain", func(t *testing.T) {
		n.StopAccepting()
		if status, _ := httpGet(t, admin+"/readyz"); status != 503 {
			t.Errorf("/readyz after StopAccepting: %d, want 503", status)
		}
		if status, _ := httpGet(t, admin+"/healthz"); status != 200 {
			t.Errorf("/healthz after StopAccepting: %d, want 200", status)
		}
		// Open connections keep working while new ones are refused.
		c.send(`{"t":"ping","ts":77}`)
		if e := c.expect("pong"); e.TS != 77 {
			t.Fatalf("pong ts %d after StopAccepting, want 77", e.TS)
		}
		eventually(t, 5*time.Second, func() error {
			c, err := net.DialTimeout("tcp", n.Addr().String(), time.Second)
			if err == nil {
				c.Close()
				return errors.New("listener still accepts")
			}
			return nil
		})
	})
}

func TestShutdown(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			cfg := quickConfig(engine)
			cfg.Drain = 2 * time.Second
			n, stop := startServerStop(t, cfg)
			admin := "http://" + n.AdminAddr().String()
			alice := login(t, n, "alice")
			alice.send(`{"t":"join","id":1,"room":"r"}`)
			alice.expect("ack")
			alice.expect("sync")
			anon := connect(t, n) // no hello yet: told all the same

			if err := n.Run(context.Background()); err == nil {
				t.Error("second Run returned nil")
			}
			stopped := make(chan error, 1)
			go func() { stopped <- stop() }()

			for _, c := range []*wsClient{alice, anon} {
				bye := c.expectMsg("bye")
				checkKeys(t, bye, "t", "reason", "retry_ms")
				if bye.Reason != "draining" || bye.RetryMS < 0 || bye.RetryMS >= 2000 {
					t.Errorf("bye %s, want reason draining and retry_ms in [0, 2000)", bye.raw)
				}
			}
			// Run waits for the clients' closing handshakes: meanwhile the
			// node says it is not ready and accepts no connection.
			if status, _ := httpGet(t, admin+"/readyz"); status != 503 {
				t.Errorf("/readyz while draining: %d, want 503", status)
			}
			eventually(t, 2*time.Second, func() error {
				c, err := net.DialTimeout("tcp", n.Addr().String(), time.Second)
				if err == nil {
					c.Close()
					return errors.New("listener still accepts while draining")
				}
				return nil
			})
			for _, c := range []*wsClient{alice, anon} {
				if got := c.closeCode(); got != wire.CloseGoingAway {
					t.Errorf("close code %d, want 1001", got)
				}
			}
			select {
			case err := <-stopped:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return")
			}
			// The drain closes from the application (bye, then 1001).
			if got := metric(t, n.reg, "presenced_connections_closed_total", "reason", "drain"); got != 2 {
				t.Errorf(`closed_total{reason="drain"} = %v, want 2`, got)
			}
			if n.logs.find("msg", "connection closed", "reason", "drain", "code", "1001") == nil {
				t.Error("no log of a close with code 1001")
			}
			if _, err := net.DialTimeout("tcp", n.AdminAddr().String(), time.Second); err == nil {
				t.Error("admin listener still open after Run returned")
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	insecure := presence.Config{Insecure: true}
	cases := []struct {
		name string
		cfg  server.Config
		want string
	}{
		{"unknown engine", server.Config{Engine: "kqueue"}, "unknown engine"},
		{"negative max message", server.Config{MaxMessage: -1}, "MaxMessage"},
		{"negative outbox", server.Config{Outbox: -1}, "Outbox"},
		{"negative max conns", server.Config{MaxConns: -1}, "MaxConns"},
		{"negative per-IP cap", server.Config{MaxConnsPerIP: -1}, "MaxConnsPerIP"},
		{"negative handshake timeout", server.Config{HandshakeTimeout: -time.Second}, "HandshakeTimeout"},
		{"no JWT key and not insecure", server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"}, "-insecure"},
		{"bad JWT PEM", server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", JWT: auth.Config{PublicKeyPEM: []byte("not a PEM block")}}, "PEM"},
		{"empty JWT secret", server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", JWT: auth.Config{HS256Secret: []byte{}}}, "empty"},
		{"bad presence config", server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Presence: presence.Config{Insecure: true, Node: "no spaces"}}, "Node"},
		{"bad admin address", server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:http-nope", Presence: insecure}, "admin listener"},
		{"bad public address", server.Config{Addr: "127.0.0.1:99999", AdminAddr: "127.0.0.1:0", Presence: insecure}, "listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := server.New(tc.cfg)
			if err == nil {
				t.Fatalf("New succeeded: %v", s.Addr())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}

	t.Run("registry shared by two servers", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		startServer(t, server.Config{Registry: reg, Presence: insecure})
		_, err := server.New(server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Registry: reg, Presence: insecure})
		if err == nil || !strings.Contains(err.Error(), "register metrics") {
			t.Fatalf("second server on one registry: %v, want a registration error", err)
		}
	})
}
