package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/poller"
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

// readClose reads until the server's close frame and returns its code.
func readClose(t *testing.T, conn net.Conn) ws.StatusCode {
	t.Helper()
	for {
		_, _, err := wsutil.ReadServerData(conn)
		var closed wsutil.ClosedError
		if errors.As(err, &closed) {
			return closed.Code
		}
		if err != nil {
			t.Fatalf("read until close: %v", err)
		}
	}
}

func TestEcho(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			n := startServer(t, server.Config{Engine: engine})
			conn := dial(t, n)
			cases := []struct {
				name  string
				parts []string
			}{
				{"single", []string{`{"t":"ping","ts":1}`}},
				{"unicode", []string{"héllo wörld ✓"}},
				{"fragmented", []string{"frag", "men", "ted"}},
				{"code point split across fragments", []string{"\xe2\x9c", "\x93"}},
				{"largest message", []string{strings.Repeat("x", 4000), strings.Repeat("y", 96)}},
			}
			var bytes int
			for _, tc := range cases {
				writeFrames(t, conn, ws.OpText, tc.parts...)
				msg, err := wsutil.ReadServerText(conn)
				if err != nil {
					t.Fatalf("%s: read: %v", tc.name, err)
				}
				if want := strings.Join(tc.parts, ""); string(msg) != want {
					t.Fatalf("%s: echo %q, want %q", tc.name, msg, want)
				}
				bytes += len(poller.AppendTextFrame(nil, msg))
			}
			checks := []struct {
				name string
				want float64
			}{
				{"presenced_connections_opened_total", 1},
				{"presenced_connections_active", 1},
				{"presenced_messages_received_total", float64(len(cases))},
				{"presenced_frames_sent_total", float64(len(cases))},
				{"presenced_bytes_sent_total", float64(bytes)},
				{"presenced_send_full_total", 0},
			}
			for _, c := range checks {
				if got := metric(t, n.reg, c.name); got != c.want {
					t.Errorf("%s = %v, want %v", c.name, got, c.want)
				}
			}
		})
	}
}

func TestCloseReasons(t *testing.T) {
	cases := []struct {
		name      string
		send      func(t *testing.T, conn net.Conn)
		wantCode  ws.StatusCode
		wantLabel string
	}{
		{
			name:      "binary message closes with 1003",
			send:      func(t *testing.T, c net.Conn) { writeFrames(t, c, ws.OpBinary, "\x00\x01") },
			wantCode:  ws.StatusUnsupportedData,
			wantLabel: "server",
		},
		{
			name: "fragmented message over max closes with 1009",
			send: func(t *testing.T, c net.Conn) {
				writeFrames(t, c, ws.OpText, strings.Repeat("a", 4000), strings.Repeat("b", 97))
			},
			wantCode:  ws.StatusMessageTooBig,
			wantLabel: "protocol",
		},
		{
			name: "client close 1000 is echoed",
			send: func(t *testing.T, c net.Conn) {
				f := ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
				if err := ws.WriteFrame(c, f); err != nil {
					t.Fatal(err)
				}
			},
			wantCode:  ws.StatusNormalClosure,
			wantLabel: "peer",
		},
	}
	for _, engine := range engines {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				n := startServer(t, server.Config{Engine: engine})
				conn := dial(t, n)
				tc.send(t, conn)
				if got := readClose(t, conn); got != tc.wantCode {
					t.Fatalf("close code %d, want %d", got, tc.wantCode)
				}
				eventually(t, 5*time.Second, func() error {
					if got := metric(t, n.reg, "presenced_connections_closed_total", "reason", tc.wantLabel); got != 1 {
						return fmt.Errorf("closed_total{reason=%q} = %v, want 1", tc.wantLabel, got)
					}
					if got := metric(t, n.reg, "presenced_connections_active"); got != 0 {
						return fmt.Errorf("connections_active = %v, want 0", got)
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
			n := startServer(t, server.Config{AllowedOrigins: []string{"https://app.example"}})
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
		n := startServer(t, server.Config{AllowedOrigins: []string{"https://app.example"}})
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

func TestAdmin(t *testing.T) {
	n := startServer(t, server.Config{})
	admin := "http://" + n.AdminAddr().String()
	conn := dial(t, n)

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

	t.Run("drain", func(t *testing.T) {
		n.StopAccepting()
		if status, _ := httpGet(t, admin+"/readyz"); status != 503 {
			t.Errorf("/readyz after StopAccepting: %d, want 503", status)
		}
		if status, _ := httpGet(t, admin+"/healthz"); status != 200 {
			t.Errorf("/healthz after StopAccepting: %d, want 200", status)
		}
		// Open connections keep working while new ones are refused.
		writeFrames(t, conn, ws.OpText, "still here")
		if msg, err := wsutil.ReadServerText(conn); err != nil || string(msg) != "still here" {
			t.Fatalf("echo after StopAccepting: %q, %v", msg, err)
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
			reg := prometheus.NewRegistry()
			s, err := server.New(server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Engine: engine, Registry: reg})
			if err != nil {
				if strings.Contains(err.Error(), "not built yet") {
					t.Skip(err)
				}
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			n := &node{Server: s, reg: reg}
			conn := dial(t, n)

			if err := s.Run(ctx); err == nil {
				t.Error("second Run returned nil")
			}
			cancel()
			if got := readClose(t, conn); got != ws.StatusGoingAway {
				t.Errorf("close code %d, want 1001", got)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			if got := metric(t, reg, "presenced_connections_closed_total", "reason", "shutdown"); got != 1 {
				t.Errorf(`closed_total{reason="shutdown"} = %v, want 1`, got)
			}
			if _, err := net.DialTimeout("tcp", s.AdminAddr().String(), time.Second); err == nil {
				t.Error("admin listener still open after Run returned")
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
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
		{"bad admin address", server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:http-nope"}, "admin listener"},
		{"bad public address", server.Config{Addr: "127.0.0.1:99999", AdminAddr: "127.0.0.1:0"}, "listen"},
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
		startServer(t, server.Config{Registry: reg})
		_, err := server.New(server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Registry: reg})
		if err == nil || !strings.Contains(err.Error(), "register metrics") {
			t.Fatalf("second server on one registry: %v, want a registration error", err)
		}
	})
}
