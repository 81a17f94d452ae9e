package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/presenced/presenced/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs a baseline server on 127.0.0.1:0 until the test ends.
func start(t *testing.T, cfg Config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return "ws://" + s.Addr().String() + "/ws"
}

func eventually(t *testing.T, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dialSDK(t *testing.T, url, user string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), client.Config{URL: url, User: user, EventBuffer: -1})
	if err != nil {
		t.Fatalf("dial %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func viewMember(c *client.Client, room, user string) (client.Member, bool) {
	v, ok := c.Room(room)
	if !ok {
		return client.Member{}, false
	}
	m, ok := v.Members[user]
	return m, ok
}

// TestSDKInterop: two clients of the Go SDK see each other join, set,
// type and leave, with no gap in the chain of diffs.
func TestSDKInterop(t *testing.T) {
	url := start(t, Config{})
	ctx := context.Background()
	a, b := dialSDK(t, url, "alice"), dialSDK(t, url, "bob")
	if err := a.Join(ctx, "chat:1", &client.State{Status: "online", Meta: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Join(ctx, "chat:1", nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob in alice's view", func() bool { _, ok := viewMember(a, "chat:1", "bob"); return ok })
	eventually(t, "alice in bob's view", func() bool {
		m, ok := viewMember(b, "chat:1", "alice")
		return ok && string(m.Meta) == `{"n":1}`
	})

	if err := a.Set(ctx, "chat:1", client.State{Status: "away"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice away", func() bool { m, _ := viewMember(b, "chat:1", "alice"); return m.Status == "away" })

	if err := b.Typing("chat:1", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob typing", func() bool { v, _ := a.Room("chat:1"); return slices.Equal(v.Typing, []string{"bob"}) })
	if err := b.Typing("chat:1", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob stopped typing", func() bool { v, _ := a.Room("chat:1"); return len(v.Typing) == 0 })

	if err := a.Leave(ctx, "chat:1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice gone", func() bool { _, ok := viewMember(b, "chat:1", "alice"); return !ok })

	var cerr *client.CommandError
	if err := a.Set(ctx, "chat:1", client.State{Status: "x"}); !errors.As(err, &cerr) || cerr.Code != "not_joined" {
		t.Errorf("set after leave: %v, want not_joined", err)
	}
	for name, c := range map[string]*client.Client{"alice": a, "bob": b} {
		if st := c.Stats(); st.Gaps != 0 || st.Syncs == 0 || st.Diffs == 0 {
			t.Errorf("%s: %+v, want diffs and syncs, no gaps", name, st)
		}
	}
	// A clean close leaves at once.
	if err := b.Join(ctx, "chat:2", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Join(ctx, "chat:2", nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob in chat:2", func() bool { _, ok := viewMember(a, "chat:2", "bob"); return ok })
	b.Close()
	eventually(t, "bob left chat:2", func() bool { _, ok := viewMember(a, "chat:2", "bob"); return !ok })
}

// raw is a protocol client on gorilla/websocket, for what the SDK hides.
type raw struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialRaw(t *testing.T, url string) *raw {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &raw{t, ws}
}

func (r *raw) send(msg string) {
	r.t.Helper()
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		r.t.Fatal(err)
	}
}

// next returns the next message of type typ, skipping others, or the
// read error.
func (r *raw) next(typ string) (map[string]any, error) {
	r.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, p, err := r.ws.ReadMessage()
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			r.t.Fatalf("%s: %v", p, err)
		}
		if m["t"] == typ {
			return m, nil
		}
	}
}

func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// TestCloseCodes: hello errors, heartbeat timeout, and the pings before it.
func TestCloseCodes(t *testing.T) {
	url := start(t, Config{HB: 100 * time.Millisecond, HBTimeout: 100 * time.Millisecond, HelloTimeout: 200 * time.Millisecond})
	for _, tc := range []struct {
		name, first string
		want        int
	}{
		{"not hello", `{"t":"join","id":1,"room":"r"}`, 4100},
		{"version", `{"t":"hello","v":2,"user":"u"}`, 4105},
		{"not json", `nope`, websocket.CloseInvalidFramePayloadData},
		{"hello timeout", ``, 4004},
		{"heartbeat timeout", `{"t":"hello","v":1,"user":"u"}`, 4001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, url)
			if tc.first != "" {
				r.send(tc.first)
			}
			if tc.want == 4001 {
				if _, err := r.next("ping"); err != nil {
					t.Fatalf("no ping before the timeout: %v", err)
				}
			}
			_, err := r.next("never")
			if got := closeCode(err); got != tc.want {
				t.Errorf("close %d (%v), want %d", got, err, tc.want)
			}
		})
	}
}

// TestLostConnection: a cut connection leaves after leave_grace; the
// same user back within the grace causes no leave.
func TestLostConnection(t *testing.T) {
	url := start(t, Config{LeaveGrace: 300 * time.Millisecond})
	ctx := context.Background()
	watcher := dialSDK(t, url, "w")
	if err := watcher.Join(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	join := func(user string) *raw {
		r := dialRaw(t, url)
		r.send(`{"t":"hello","v":1,"user":"` + user + `"}`)
		r.send(`{"t":"join","id":1,"room":"r"}`)
		if _, err := r.next("sync"); err != nil {
			t.Fatal(err)
		}
		return r
	}
	cut := join("cut")
	eventually(t, "cut joined", func() bool { _, ok := viewMember(watcher, "r", "cut"); return ok })
	start := time.Now()
	cut.ws.NetConn().Close() // no close frame
	eventually(t, "cut left", func() bool { _, ok := viewMember(watcher, "r", "cut"); return !ok })
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("left after %v, before the grace", d)
	}

	back := join("back")
	eventually(t, "back joined", func() bool { _, ok := viewMember(watcher, "r", "back"); return ok })
	back.ws.NetConn().Close()
	again := join("back")
	again.send(`{"t":"ping","ts":7}`)
	if m, err := again.next("pong"); err != nil || m["ts"] != 7.0 {
		t.Fatalf("pong %v %v", m, err)
	}
	time.Sleep(500 * time.Millisecond) // past the grace: no leave may come
	if _, ok := viewMember(watcher, "r", "back"); !ok {
		t.Error("back left although it joined again within the grace")
	}
	if st := watcher.Stats(); st.Gaps != 0 {
		t.Errorf("gaps %d", st.Gaps)
	}
}

func TestTokenSubject(t *testing.T) {
	for _, tc := range []struct{ tok, want string }{
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig", "alice"},
		{"not-a-jwt", ""},
		{"a.!!!.c", ""},
	} {
		if got := tokenSubject(tc.tok); got != tc.want {
			t.Errorf("tokenSubject(%q) = %q, want %q", tc.tok, got, tc.want)
		}
	}
}

func TestRunFlags(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), []string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-send-buffer") {
		t.Errorf("-h: %v\n%s", err, out.String())
	}
	if err := run(context.Background(), []string{"extra"}, io.Discard); err == nil {
		t.Error("extra argument accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out.Reset()
	if err := run(ctx, []string{"-addr", "127.0.0.1:0"}, &out); err != nil || !strings.Contains(out.String(), "listening on ws://127.0.0.1:") {
		t.Errorf("run: %v %q", err, out.String())
	}
}
