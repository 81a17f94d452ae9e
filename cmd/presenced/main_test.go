package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// netpoll keeps its poller goroutines for the life of the process.
		goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
	)
}

// env is a fake environment for parseFlags.
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		env   env
		check func(o options) error
	}{
		{
			name: "defaults",
			check: func(o options) error {
				c := o.server
				if c.Addr != "127.0.0.1:8080" || c.AdminAddr != "127.0.0.1:9090" || c.Engine != "epoll" ||
					c.MaxMessage != 4096 || c.MaxConns != 0 || c.MaxConnsPerIP != 0 || c.Outbox != 65536 ||
					c.HandshakeTimeout != 5*time.Second || c.AllowedOrigins != nil || o.logLevel != slog.LevelInfo {
					return fmt.Errorf("defaults: %+v, level %v", c, o.logLevel)
				}
				return nil
			},
		},
		{
			name: "flags",
			args: []string{"-addr", ":7000", "-admin-addr=127.0.0.2:7001", "-engine", "netpoll",
				"-allowed-origins", "https://a.example, https://b.example:8443/,", "-max-message", "100",
				"-max-conns", "10", "-max-conns-per-ip", "2", "-outbox", "1024", "-handshake-timeout", "750ms",
				"-log-level", "debug"},
			check: func(o options) error {
				c := o.server
				if c.Addr != ":7000" || c.AdminAddr != "127.0.0.2:7001" || c.Engine != "netpoll" ||
					!slices.Equal(c.AllowedOrigins, []string{"https://a.example", "https://b.example:8443"}) ||
					c.MaxMessage != 100 || c.MaxConns != 10 || c.MaxConnsPerIP != 2 || c.Outbox != 1024 ||
					c.HandshakeTimeout != 750*time.Millisecond || o.logLevel != slog.LevelDebug {
					return fmt.Errorf("got %+v, level %v", c, o.logLevel)
				}
				return nil
			},
		},
		{
			name: "environment",
			env: env{"PRESENCED_MAX_CONNS_PER_IP": "3", "PRESENCED_ALLOWED_ORIGINS": "https://x.example",
				"PRESENCED_HANDSHAKE_TIMEOUT": "2s", "PRESENCED_LOG_LEVEL": "WARN", "PRESENCED_ENGINE": "netpoll"},
			check: func(o options) error {
				c := o.server
				if c.MaxConnsPerIP != 3 || !slices.Equal(c.AllowedOrigins, []string{"https://x.example"}) ||
					c.HandshakeTimeout != 2*time.Second || o.logLevel != slog.LevelWarn || c.Engine != "netpoll" {
					return fmt.Errorf("got %+v, level %v", c, o.logLevel)
				}
				return nil
			},
		},
		{
			name: "command line wins over environment",
			args: []string{"-max-message", "200", "-addr", "127.0.0.1:0"},
			env:  env{"PRESENCED_MAX_MESSAGE": "100", "PRESENCED_ADDR": "not an address", "PRESENCED_OUTBOX": "2048"},
			check: func(o options) error {
				if c := o.server; c.MaxMessage != 200 || c.Addr != "127.0.0.1:0" || c.Outbox != 2048 {
					return fmt.Errorf("got max-message %d addr %q outbox %d", c.MaxMessage, c.Addr, c.Outbox)
				}
				return nil
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, tc.env.lookup, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(o); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  env
		want string
	}{
		{"unknown engine", []string{"-engine", "kqueue"}, nil, `-engine "kqueue"`},
		{"not a number", []string{"-max-message", "lots"}, nil, "-max-message"},
		{"zero max message", []string{"-max-message", "0"}, nil, "must be positive"},
		{"negative max conns", []string{"-max-conns", "-1"}, nil, "-max-conns -1"},
		{"negative per-IP cap", []string{"-max-conns-per-ip", "-5"}, nil, "-max-conns-per-ip"},
		{"zero outbox", []string{"-outbox", "0"}, nil, "-outbox"},
		{"bad duration", []string{"-handshake-timeout", "5"}, nil, "-handshake-timeout"},
		{"negative duration", []string{"-handshake-timeout", "-1s"}, nil, "-handshake-timeout"},
		{"address without port", []string{"-addr", "localhost"}, nil, `-addr "localhost"`},
		{"origin with a path", []string{"-allowed-origins", "https://a.example/app"}, nil, "-allowed-origins"},
		{"origin without scheme", []string{"-allowed-origins", "a.example"}, nil, "-allowed-origins"},
		{"bad log level", []string{"-log-level", "loud"}, nil, "-log-level"},
		{"unknown flag", []string{"-colour"}, nil, "-colour"},
		{"stray argument", []string{"serve"}, nil, `unexpected argument "serve"`},
		{"bad environment value", nil, env{"PRESENCED_MAX_CONNS": "many"}, "PRESENCED_MAX_CONNS"},
		{"bad environment engine", nil, env{"PRESENCED_ENGINE": "iouring"}, `-engine "iouring"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, tc.env.lookup, io.Discard)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			var stderr bytes.Buffer
			if code := exitCode(err, &stderr); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), "presenced -h") {
				t.Errorf("stderr lacks the usage hint: %q", stderr.String())
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"clean stop", nil, 0},
		{"runtime error", errors.New("listen: address in use"), 1},
		{"usage error", usageErrorf("bad"), 2},
		{"wrapped usage error", fmt.Errorf("config: %w", usageErrorf("bad")), 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err, io.Discard); got != tc.want {
				t.Errorf("exit code %d, want %d", got, tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &stdout, &stderr); err != nil {
		t.Fatalf("run -h: %v", err)
	}
	for _, want := range []string{"-addr", "[$PRESENCED_ADDR]", "-max-conns-per-ip", "[$PRESENCED_MAX_CONNS_PER_IP]", "default 4096"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, &stdout)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q", &stderr)
	}
}

// TestRun runs the whole program: flags and environment, both listeners,
// a WebSocket client, and the shutdown a signal triggers.
func TestRun(t *testing.T) {
	t.Setenv("PRESENCED_MAX_MESSAGE", "16")               // no flag: the environment applies
	t.Setenv("PRESENCED_ADDR", "256.0.0.1:1")             // overridden by -addr
	t.Setenv("PRESENCED_ADMIN_ADDR", "127.0.0.1:0")       // no flag
	t.Setenv("PRESENCED_ALLOWED_ORIGINS", "https://a.ex") // checked below

	ctx, cancel := context.WithCancel(context.Background()) // what SIGTERM does
	defer cancel()
	var stdout bytes.Buffer
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-log-level", "debug"}, &stdout, stderr) }()

	var addr, admin string
	served := regexp.MustCompile(`msg=serving addr=(\S+) admin_addr=(\S+)`)
	eventually(t, 10*time.Second, func() error {
		m := served.FindStringSubmatch(stderr.String())
		if m == nil {
			select {
			case err := <-done:
				t.Fatalf("run returned early: %v\n%s", err, stderr)
			default:
			}
			return fmt.Errorf("no serving log yet:\n%s", stderr)
		}
		addr, admin = m[1], m[2]
		return nil
	})

	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		if status, body := httpGet(t, "http://"+admin+path); status != 200 || strings.TrimSpace(body) != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, status, body, want)
		}
	}

	conn, _, _, err := ws.Dial(ctx, "ws://"+addr+"/ws")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wsutil.WriteClientText(conn, []byte("sixteen bytes!!!")); err != nil {
		t.Fatal(err)
	}
	if msg, err := wsutil.ReadServerText(conn); err != nil || string(msg) != "sixteen bytes!!!" {
		t.Fatalf("echo: %q, %v", msg, err)
	}
	if err := wsutil.WriteClientText(conn, []byte("seventeen bytes!!")); err != nil {
		t.Fatal(err)
	}
	if _, err := wsutil.ReadServerText(conn); !isClose(err, ws.StatusMessageTooBig) {
		t.Fatalf("17 bytes with PRESENCED_MAX_MESSAGE=16: %v, want close 1009", err)
	}

	// An Origin outside PRESENCED_ALLOWED_ORIGINS is refused.
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://evil.ex"}})}
	if c, _, _, err := d.Dial(ctx, "ws://"+addr+"/ws"); err == nil {
		c.Close()
		t.Error("upgrade from a refused origin succeeded")
	}

	// The server counts a close or a refusal once the socket is closed,
	// which may be after the client has seen the close frame or the 403.
	eventually(t, 5*time.Second, func() error {
		_, metrics := httpGet(t, "http://"+admin+"/metrics")
		for _, want := range []string{
			`presenced_connections_closed_total{reason="protocol"} 1`,
			`presenced_handshake_failures_total{reason="origin"} 1`,
		} {
			if !strings.Contains(metrics, want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		return nil
	})
	_, metrics := httpGet(t, "http://"+admin+"/metrics")
	for _, want := range []string{
		"presenced_connections_opened_total 1",
		"presenced_messages_received_total 1", // the 17-byte one is refused unread
		"presenced_frames_sent_total 1",
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return 10 s after cancel")
	}
	for _, want := range []string{"msg=\"shutting down\"", "msg=stopped", "msg=\"connection closed\""} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %s:\n%s", want, stderr)
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout: %q", &stdout)
	}
}

func TestRunError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // bounds a run that wrongly serves
	defer cancel()
	err = run(ctx, []string{"-addr", "127.0.0.1:0", "-admin-addr", busy.Addr().String()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Fatalf("run with a busy admin address: %v, want an admin listener error", err)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("exit code %d for %v, want 1", code, err)
	}
}

func isClose(err error, code ws.StatusCode) bool {
	var c wsutil.ClosedError
	return errors.As(err, &c) && c.Code == code
}

// eventually calls fn until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// httpGet fetches url without keeping a connection open.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
