package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// The live test needs the Centrifugo binary: `make centrifugo`, then
//
//	PRESENCED_CENTRIFUGO=$PWD/.cache/tools/centrifugo-v6.9.1/centrifugo \
//	  go test -run TestCentrifugoLive -v ./cmd/presence-load
//
// It logs every message received (%q), the source of the recorded frames in
// centrifugo_test.go, and the time from a cut to the leave push.
const centrifugoEnv = "PRESENCED_CENTRIFUGO"

// centrifugoDevSecret is the HS256 secret of bench/centrifugo/config.json.
const centrifugoDevSecret = "presenced-bench-dev-secret-do-not-use-in-production"

// startCentrifugo runs the binary with the bench config on a free loopback
// port until the test ends and returns its WebSocket URL.
func startCentrifugo(t *testing.T, bin string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg, err := filepath.Abs("../../bench/centrifugo/config.json")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd := exec.Command(bin, "-c", cfg, "--http_server.port", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("centrifugo output:\n%s", logs.String())
		}
	})
	base := "127.0.0.1:" + strconv.Itoa(port)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get("http://" + base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("centrifugo did not answer /health within 10s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "ws://" + base + "/connection/websocket"
}

type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// hs256Token mints the connection JWT that bench/centrifugo/config.json
// accepts: the user is the "sub" claim.
func hs256Token(secret, user string, exp time.Time) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims := enc.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"exp":%d}`, user, exp.Unix()))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(head + "." + claims))
	return head + "." + claims + "." + enc.EncodeToString(mac.Sum(nil))
}

// liveConn is a minimal Centrifugo client for the live test: one reader
// goroutine parses every message with centrifugoProto, answers pings unless
// mute, and hands the events (copied) to ev.
type liveConn struct {
	t    *testing.T
	name string
	conn net.Conn
	ev   chan liveEvent
	done chan struct{}

	mu   sync.Mutex // guards writes to conn and mute
	mute bool       // stop answering pings: a client that hangs
}

type liveEvent struct {
	kind         eventKind
	id           uint32
	room, user   string
	status, code string
	sentNs       int64
	on           bool
	at           time.Time
}

func dialLive(t *testing.T, url, name string, p *centrifugoProto) *liveConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	c := &liveConn{t: t, name: name, conn: conn, ev: make(chan liveEvent, 1024), done: make(chan struct{})}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	go c.read(bufio.NewReader(r), p)
	t.Cleanup(func() { conn.Close(); <-c.done })
	return c
}

func (c *liveConn) read(r io.Reader, p *centrifugoProto) {
	defer close(c.done)
	rw := struct {
		io.Reader
		io.Writer
	}{r, c.conn}
	for {
		msg, op, err := wsutil.ReadServerData(rw)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		c.t.Logf("%s <- %q", c.name, msg)
		reply, err := p.Parse(msg, func(ev *event) {
			c.ev <- liveEvent{kind: ev.kind, id: ev.id, room: string(ev.room), user: string(ev.user),
				status: string(ev.status), code: ev.code, sentNs: ev.sentNs, on: ev.on, at: time.Now()}
		})
		if err != nil {
			c.t.Errorf("%s: parse %q: %v", c.name, msg, err)
			return
		}
		c.mu.Lock()
		if reply != nil && !c.mute {
			err = wsutil.WriteClientText(c.conn, reply)
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (c *liveConn) send(msg []byte) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := wsutil.WriteClientText(c.conn, msg); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// await returns the first event that match accepts, dropping the others.
func (c *liveConn) await(what string, timeout time.Duration, match func(liveEvent) bool) liveEvent {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-c.ev:
			if match(ev) {
				return ev
			}
		case <-deadline:
			c.t.Fatalf("%s: no %s within %v", c.name, what, timeout)
		}
	}
}

// cutHard closes the connection with a RST (SO_LINGER 0), as a crashed host's
// kernel would answer, or a load balancer that drops it.
func (c *liveConn) cutHard() {
	c.conn.(*net.TCPConn).SetLinger(0)
	c.conn.Close()
}

func TestCentrifugoLive(t *testing.T) {
	bin := os.Getenv(centrifugoEnv)
	if bin == "" {
		t.Skip(centrifugoEnv + " is not set: run `make centrifugo` and set it to .cache/tools/centrifugo-v6.9.1/centrifugo to run the live test")
	}
	url := startCentrifugo(t, bin)
	p := new(centrifugoProto)
	exp := time.Now().Add(time.Hour)
	const room = "r1"

	join := func(name, user string) *liveConn {
		c := dialLive(t, url, name, p)
		c.send(p.Hello(nil, user, hs256Token(centrifugoDevSecret, user, exp)))
		c.await("welcome", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evWelcome })
		c.send(p.Join(nil, 1, room, "online"))
		c.await("subscribe ack", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evAck && ev.id == 1 })
		c.await("sync", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evSync })
		c.await("own join", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evJoin && ev.user == user })
		return c
	}
	a := join("a", "u1")
	b := join("b", "u2")
	a.await("join of u2", 5*time.Second, func(ev liveEvent) bool {
		return ev.kind == evJoin && ev.user == "u2" && ev.room == room
	})

	sent := time.Now().UnixNano()
	a.send(p.Set(nil, 2, room, "u1", "away", sent))
	a.await("set ack", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evAck && ev.id == 2 })
	got := b.await("change", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evChange })
	if got.room != room || got.user != "u1" || got.status != "away" || got.sentNs != sent {
		t.Errorf("change = %+v, want room %s user u1 status away ts %d", got, room, sent)
	}
	b.send(p.Typing(nil, room, "u2", true, sent))
	if got := a.await("typing", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evTyping }); got.user != "u2" || !got.on {
		t.Errorf("typing = %+v, want u2 on", got)
	}
	b.send(p.Set(nil, 3, "nope:x", "u2", "x", 0))
	if got := b.await("error", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evErr }); got.id != 3 {
		t.Errorf("error = %+v, want id 3", got)
	}

	// A cut with a RST: the server reads the reset at once.
	cut := time.Now()
	b.cutHard()
	got = a.await("leave of u2", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evLeave && ev.user == "u2" })
	t.Logf("leave after a RST cut: %v", got.at.Sub(cut))

	// A client that hangs (keeps its socket, answers nothing): only the
	// application ping finds it, ping_interval 25s + pong_timeout 8s at most.
	c := join("c", "u3")
	c.mu.Lock()
	c.mute = true
	c.mu.Unlock()
	hung := time.Now()
	got = a.await("leave of u3", 40*time.Second, func(ev liveEvent) bool { return ev.kind == evLeave && ev.user == "u3" })
	t.Logf("leave after a client stops answering pings: %v", got.at.Sub(hung))

	a.send(p.Leave(nil, 4, room))
	a.await("unsubscribe ack", 5*time.Second, func(ev liveEvent) bool { return ev.kind == evAck && ev.id == 4 })
}

// TestCentrifugoLiveScenarios runs the fanout and leave scenarios against
// Centrifugo through the command's own code path (run).
func TestCentrifugoLiveScenarios(t *testing.T) {
	bin := os.Getenv(centrifugoEnv)
	if bin == "" {
		t.Skip(centrifugoEnv + " is not set: run `make centrifugo` and set it to .cache/tools/centrifugo-v6.9.1/centrifugo to run the live test")
	}
	url := startCentrifugo(t, bin)
	common := []string{"-target", "centrifugo", "-url", url, "-jwt-secret", centrifugoDevSecret,
		"-quiet", "-ready-timeout", "30s"}
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"fanout", []string{"-scenario", "fanout", "-conns", "50", "-changers", "3", "-rate", "30", "-duration", "1s", "-settle", "500ms"}},
		{"leave", []string{"-scenario", "leave", "-conns", "40", "-rooms", "4", "-rate", "8", "-duration", "1s", "-settle", "500ms"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := run(ctx, append(slices.Clone(common), tt.args...), &stdout, &stderr); err != nil {
				t.Fatalf("run: %v\n%s", err, stderr.String())
			}
			var s summary
			if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
				t.Fatalf("summary %q: %v", stdout.String(), err)
			}
			t.Logf("%s", stdout.Bytes())
			if s.Errors != 0 || s.Stale != 0 || s.Joined != int64(s.Conns+s.Changers) {
				t.Errorf("errors %d, stale %d, joined %d: want 0, 0, %d\n%s", s.Errors, s.Stale, s.Joined, s.Conns+s.Changers, stderr.String())
			}
			switch tt.name {
			case "fanout": // 30 changes, each seen by the 50 listeners
				if s.Deliveries < 30*50 || s.Latencies < 30*50 || s.P50MS <= 0 {
					t.Errorf("deliveries %d, latencies %d, p50 %v: want >= 1500, >= 1500, > 0", s.Deliveries, s.Latencies, s.P50MS)
				}
			case "leave": // a cut every 125 ms from 125 ms on: 7 cuts
				if s.Cuts != 7 || s.LeaveP50MS <= 0 {
					t.Errorf("cuts %d, leave_p50_ms %v: want 7, > 0", s.Cuts, s.LeaveP50MS)
				}
			}
		})
	}
}
