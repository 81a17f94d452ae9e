package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/presenced/presenced/internal/wire"
)

// tokens returns a TokenFunc yielding prefix1, prefix2, ... and a counter
// of its calls.
func tokens(prefix string) (func(context.Context) (string, error), *atomic.Int64) {
	var n atomic.Int64
	return func(context.Context) (string, error) {
		return fmt.Sprintf("%s%d", prefix, n.Add(1)), nil
	}, &n
}

func TestDial(t *testing.T) {
	t.Parallel()
	fresh, _ := tokens("fresh")
	cases := []struct {
		name      string
		cfg       func(*Config)
		wantToken string
		wantUser  string
		wantOrig  string
	}{
		{
			name:      "static token",
			cfg:       func(c *Config) { c.Token = "tok-a" },
			wantToken: "tok-a",
			wantUser:  "alice",
		},
		{
			name:      "token func wins",
			cfg:       func(c *Config) { c.Token = "static"; c.TokenFunc = fresh },
			wantToken: "fresh1",
			wantUser:  "alice",
		},
		{
			name:     "insecure user",
			cfg:      func(c *Config) { c.Token = ""; c.User = "bob" },
			wantUser: "bob",
		},
		{
			name:      "extra header",
			cfg:       func(c *Config) { c.Header = http.Header{"Origin": {"https://app.example"}} },
			wantToken: "tok",
			wantUser:  "alice",
			wantOrig:  "https://app.example",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := newFakeServer(t)
			cfg := testConfig(fs)
			tc.cfg(&cfg)
			c, fc := dialServer(t, fs, cfg)
			h := fc.hello
			if h.T != wire.THello || h.V != wire.Version || h.Token != tc.wantToken || h.Resume != nil || h.State != nil {
				t.Errorf("hello = %+v, want v1 with token %q and no resume", h, tc.wantToken)
			}
			if tc.wantToken == "" && h.User != tc.wantUser {
				t.Errorf("hello user = %q, want %q", h.User, tc.wantUser)
			}
			if got := fc.hdr.Get("Origin"); got != tc.wantOrig {
				t.Errorf("Origin = %q, want %q", got, tc.wantOrig)
			}
			ev := waitEvent(t, c, EventConnected)
			if ev.Node != "n1" || ev.Conn != "c1" || ev.User != tc.wantUser || ev.Resumed {
				t.Errorf("connected event = %+v", ev)
			}
			node, conn, user := c.Conn()
			if node != "n1" || conn != "c1" || user != tc.wantUser {
				t.Errorf("Conn() = %q %q %q", node, conn, user)
			}
			if s := c.ConnState(); s != StateConnected {
				t.Errorf("ConnState = %v", s)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	refuse := func(tok string) fakeOpt {
		return withHello(func(fc *fakeConn, h wire.Command) bool {
			if h.Token == tok || tok == "" {
				fc.closeWith(CloseUnauthorized, "bad token")
				return false
			}
			return true
		})
	}
	same := func(context.Context) (string, error) { return "same", nil }
	fresh := func(c *Config) { c.TokenFunc, _ = tokens("t") }
	cases := []struct {
		name      string
		opt       fakeOpt
		cfg       func(*Config)
		wantCode  CloseCode // 0: no *CloseError
		wantErr   bool
		wantConns int
	}{
		{
			name:      "4101 without token func",
			opt:       refuse(""),
			wantCode:  CloseUnauthorized,
			wantErr:   true,
			wantConns: 1,
		},
		{
			name:      "4101 with the same token again",
			opt:       refuse("same"),
			cfg:       func(c *Config) { c.TokenFunc = same },
			wantCode:  CloseUnauthorized,
			wantErr:   true,
			wantConns: 1,
		},
		{
			name:      "4101 then a fresh token",
			opt:       refuse("t1"),
			cfg:       fresh,
			wantConns: 2,
		},
		{
			name:      "4101 twice",
			opt:       refuse(""),
			cfg:       fresh,
			wantCode:  CloseUnauthorized,
			wantErr:   true,
			wantConns: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := newFakeServer(t, tc.opt)
			cfg := testConfig(fs)
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			c, err := Dial(ctxT(t), cfg)
			if c != nil {
				t.Cleanup(func() { c.Close() })
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("Dial error = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantCode != 0 {
				ce, ok := errors.AsType[*CloseError](err)
				if !ok || ce.Code != tc.wantCode {
					t.Fatalf("Dial error = %v, want *CloseError %d", err, tc.wantCode)
				}
			}
			for range tc.wantConns {
				fs.accept(t)
			}
			if len(fs.conns) != 0 {
				t.Errorf("%d more connections than %d", len(fs.conns), tc.wantConns)
			}
		})
	}

	t.Run("config and network", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		for _, cfg := range []Config{
			{Token: "x"},
			{URL: "ws://" + addr + "/ws"},
			{URL: "ws://" + addr + "/ws", Token: "x", MinBackoff: time.Second, MaxBackoff: time.Millisecond},
			{URL: "ws://" + addr + "/ws", Token: "x"}, // nothing listens
		} {
			c, err := Dial(ctxT(t), cfg)
			if err == nil {
				c.Close()
				t.Errorf("Dial(%+v) succeeded", cfg)
			}
		}
	})
}

func TestCommands(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		answer   func(fc *fakeConn, id int64) // nil: never answer
		do       func(ctx context.Context, c *Client) error
		wantType string
		wantErr  error  // matched with errors.Is
		wantCode string // a *CommandError code
		wantRoom bool   // Room("r") exists afterwards
	}{
		{
			name:     "join ack",
			answer:   func(fc *fakeConn, id int64) { fc.send(string(wire.AppendAck(nil, id))) },
			do:       func(ctx context.Context, c *Client) error { return c.Join(ctx, "r", &State{Status: "busy"}) },
			wantType: wire.TJoin,
			wantRoom: true,
		},
		{
			name: "join err",
			answer: func(fc *fakeConn, id int64) {
				fc.send(string(wire.AppendErr(nil, id, wire.ErrCodeTooManyRooms, "64 rooms")))
			},
			do:       func(ctx context.Context, c *Client) error { return c.Join(ctx, "r", nil) },
			wantType: wire.TJoin,
			wantCode: wire.ErrCodeTooManyRooms,
		},
		{
			name:     "join ctx",
			do:       func(ctx context.Context, c *Client) error { return c.Join(ctx, "r", nil) },
			wantType: wire.TJoin,
			wantErr:  context.Canceled,
			wantRoom: true, // may still take effect
		},
		{
			name: "set err",
			answer: func(fc *fakeConn, id int64) {
				fc.send(string(wire.AppendErr(nil, id, wire.ErrCodeNotJoined, "join first")))
			},
			do:       func(ctx context.Context, c *Client) error { return c.Set(ctx, "r", State{Status: "away"}) },
			wantType: wire.TSet,
			wantCode: wire.ErrCodeNotJoined,
		},
		{
			name: "leave not joined is done",
			answer: func(fc *fakeConn, id int64) {
				fc.send(string(wire.AppendErr(nil, id, wire.ErrCodeNotJoined, "not joined")))
			},
			do:       func(ctx context.Context, c *Client) error { return c.Leave(ctx, "r") },
			wantType: wire.TLeave,
		},
		{
			name:     "sync ack",
			answer:   func(fc *fakeConn, id int64) { fc.send(string(wire.AppendAck(nil, id))) },
			do:       func(ctx context.Context, c *Client) error { return c.Sync(ctx, "r") },
			wantType: wire.TSync,
		},
		{
			name:     "bad room",
			do:       func(ctx context.Context, c *Client) error { return c.Join(ctx, "no spaces", nil) },
			wantCode: wire.ErrCodeBadRequest,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := newFakeServer(t)
			c, fc := dialServer(t, fs, testConfig(fs))
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- tc.do(ctx, c) }()
			if tc.wantType != "" {
				cmd := fc.expect(t, tc.wantType)
				if cmd.ID <= 0 || cmd.Room != "r" {
					t.Errorf("command = %+v, want a positive id and room r", cmd)
				}
				if tc.answer != nil {
					tc.answer(fc, cmd.ID)
				} else {
					// Never answered: the context ends once the command
					// is sent (a timeout could end it before).
					cancel()
				}
			}
			err := <-errc
			switch {
			case tc.wantCode != "":
				ce, ok := errors.AsType[*CommandError](err)
				if !ok || ce.Code != tc.wantCode {
					t.Fatalf("error = %v, want *CommandError %s", err, tc.wantCode)
				}
			case !errors.Is(err, tc.wantErr):
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if _, ok := c.Room("r"); ok != tc.wantRoom {
				t.Errorf("Room(r) exists = %v, want %v", ok, tc.wantRoom)
			}
		})
	}
}

func TestCommandIDsIncrease(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t, withAuto())
	c, fc := dialServer(t, fs, testConfig(fs))
	ctx := ctxT(t)
	steps := []func() error{
		func() error { return c.Join(ctx, "a", nil) },
		func() error { return c.Set(ctx, "a", State{Status: "away", Meta: json.RawMessage(`{"n":1}`)}) },
		func() error { return c.Sync(ctx, "a") },
		func() error { return c.Typing("a", true) },
		func() error { return c.Leave(ctx, "a") },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	fc.expect(t, wire.TLeave)
	var ids []int64
	var types []string
	for _, m := range fc.received() {
		types = append(types, m.T)
		if m.ID != 0 {
			ids = append(ids, m.ID)
		}
		if m.T == wire.TSet && (m.State == nil || m.State.Status != "away" || string(m.State.Meta) != `{"n":1}`) {
			t.Errorf("set = %+v", m.State)
		}
		if m.T == wire.TTyping && (!m.On || m.Room != "a") {
			t.Errorf("typing = %+v", m)
		}
	}
	if want := []string{"join", "set", "sync", "typing", "leave"}; !slices.Equal(types, want) {
		t.Errorf("messages = %v, want %v", types, want)
	}
	for i, id := range ids {
		if id <= 0 || i > 0 && id <= ids[i-1] {
			t.Errorf("ids = %v, want positive and increasing", ids)
		}
	}
	if _, ok := c.Room("a"); ok {
		t.Error("room a still there after Leave")
	}
}

// members summarizes a view's members as "user:status" sorted.
func members(v View) []string {
	var out []string
	for u, m := range v.Members {
		out = append(out, u+":"+m.Status)
	}
	slices.Sort(out)
	return out
}

func TestView(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))

	join := func(room string) {
		errc := make(chan error, 1)
		go func() { errc <- c.Join(ctxT(t), room, nil) }()
		fc.send(string(wire.AppendAck(nil, fc.expect(t, wire.TJoin).ID)))
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if v, ok := c.Room(room); !ok || v.Synced {
			t.Fatalf("room %s before sync = %+v, %v", room, v, ok)
		}
	}
	type want struct {
		cursor  string
		count   int
		members []string
		typing  []string
		partial bool
	}
	check := func(room string, kind EventKind, w want) {
		t.Helper()
		ev := waitEvent(t, c, kind)
		if ev.Room != room || (ev.Sync == nil) == (ev.Diff == nil) {
			t.Fatalf("event = %+v", ev)
		}
		v, ok := c.Room(room)
		if !ok || !v.Synced || v.Cursor != w.cursor || v.Count != w.count || v.Partial != w.partial ||
			!slices.Equal(members(v), w.members) || !slices.Equal(v.Typing, w.typing) {
			t.Fatalf("view = %+v, want %+v", v, w)
		}
	}

	join("chat")
	fc.send(`{"t":"sync","room":"chat","cur":"1.1","count":2,"members":[{"u":"alice","s":"online","m":{"name":"Alice"}},{"u":"bob","s":"away","m":{}}],"typing":["bob"],"partial":false}`)
	check("chat", EventSynced, want{cursor: "1.1", count: 2, members: []string{"alice:online", "bob:away"}, typing: []string{"bob"}})
	fc.send(`{"t":"diff","room":"chat","from":"1.1","cur":"1.2","count":2,"join":[{"u":"carol","s":"online","m":{}}],"update":[{"u":"alice","s":"busy","m":{"name":"Al"}}],"leave":["bob"],"typing":["carol"]}`)
	check("chat", EventChanged, want{cursor: "1.2", count: 2, members: []string{"alice:busy", "carol:online"}, typing: []string{"carol"}})
	fc.send(`{"t":"diff","room":"chat","from":"1.2","cur":"1.3","count":3,"join":[{"u":"dave","s":"online","m":{}}]}`)
	check("chat", EventChanged, want{cursor: "1.3", count: 3, members: []string{"alice:busy", "carol:online", "dave:online"}, typing: []string{"carol"}})
	fc.send(`{"t":"diff","room":"chat","from":"1.3","cur":"1.4","count":3,"typing":[]}`)
	check("chat", EventChanged, want{cursor: "1.4", count: 3, members: []string{"alice:busy", "carol:online", "dave:online"}, typing: []string{}})
	v, _ := c.Room("chat")
	if m := v.Members["alice"]; string(m.Meta) != `{"name":"Al"}` || m.User != "alice" {
		t.Errorf("alice = %+v", m)
	}

	join("big")
	fc.send(`{"t":"sync","room":"big","cur":"7.9","count":5000,"members":[{"u":"alice","s":"online","m":{}}],"typing":[],"partial":true}`)
	check("big", EventSynced, want{cursor: "7.9", count: 5000, members: []string{"alice:online"}, typing: []string{}, partial: true})
	fc.send(`{"t":"diff","room":"big","from":"7.9","cur":"7.a","count":5001,"typing":["zed"]}`)
	check("big", EventChanged, want{cursor: "7.a", count: 5001, members: []string{"alice:online"}, typing: []string{"zed"}, partial: true})

	// A diff for a room the client has not joined is ignored.
	fc.send(`{"t":"diff","room":"other","from":"1.1","cur":"1.2","count":1}`)
	if st := c.Stats(); st.Syncs != 2 || st.Diffs != 4 || st.Gaps != 0 {
		t.Errorf("stats = %+v", st)
	}
	// A snapshot is a copy.
	v.Members["mallory"] = Member{User: "mallory"}
	if v2, _ := c.Room("chat"); len(v2.Members) != 3 {
		t.Errorf("modifying a View changed the client's room: %v", members(v2))
	}
}

func TestCursorGap(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))
	errc := make(chan error, 1)
	go func() { errc <- c.Join(ctxT(t), "r", nil) }()
	fc.send(string(wire.AppendAck(nil, fc.expect(t, wire.TJoin).ID)))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	fc.send(`{"t":"sync","room":"r","cur":"1.1","count":1,"members":[{"u":"alice","s":"online","m":{}}],"typing":[],"partial":false}`)
	waitEvent(t, c, EventSynced)

	// from 1.5 does not continue 1.1: ignored, and a sync is asked for.
	fc.send(`{"t":"diff","room":"r","from":"1.5","cur":"1.6","count":2,"join":[{"u":"zed","s":"online","m":{}}]}`)
	sync := fc.expect(t, wire.TSync)
	if sync.Room != "r" || sync.ID <= 0 {
		t.Fatalf("sync command = %+v", sync)
	}
	// A second gap while that sync is outstanding asks nothing more.
	fc.send(`{"t":"diff","room":"r","from":"1.6","cur":"1.7","count":2}`)
	fc.send(`{"t":"ping","ts":7}`)
	fc.expect(t, wire.TPong)
	for _, m := range fc.received() {
		if m.T == wire.TSync && m.ID != sync.ID {
			t.Errorf("second sync command %+v while the first is outstanding", m)
		}
	}
	if v, _ := c.Room("r"); v.Cursor != "1.1" || len(v.Members) != 1 {
		t.Errorf("view changed by a gap diff: %+v", v)
	}
	if st := c.Stats(); st.Gaps != 2 || st.Diffs != 0 {
		t.Errorf("stats = %+v, want 2 gaps, no diff", st)
	}

	fc.send(string(wire.AppendAck(nil, sync.ID)))
	fc.send(`{"t":"sync","room":"r","cur":"1.7","count":2,"members":[{"u":"alice","s":"online","m":{}},{"u":"zed","s":"online","m":{}}],"typing":[],"partial":false}`)
	fc.send(`{"t":"diff","room":"r","from":"1.7","cur":"1.8","count":1,"leave":["alice"]}`)
	waitEvent(t, c, EventChanged)
	if v, _ := c.Room("r"); v.Cursor != "1.8" || !slices.Equal(members(v), []string{"zed:online"}) {
		t.Errorf("view after resync = %+v", v)
	}
}

func TestPingPong(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))
	for _, ts := range []int64{12345, 1700000000123} {
		fc.send(string(wire.AppendPing(nil, ts)))
		if got := fc.expect(t, wire.TPong); got.TS != ts {
			t.Errorf("pong ts = %d, want %d", got.TS, ts)
		}
	}
	if n := c.Stats().Pings; n != 2 {
		t.Errorf("Pings = %d", n)
	}
}

func TestErrorWithoutID(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))
	fc.send(string(wire.AppendErr(nil, 0, wire.ErrCodeBadRequest, "unknown message type")))
	ev := waitEvent(t, c, EventError)
	if ce, ok := errors.AsType[*CommandError](ev.Err); !ok || ce.Code != wire.ErrCodeBadRequest {
		t.Errorf("error event = %+v", ev)
	}
}

func TestSilentServer(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t, withHB(100))
	cfg := testConfig(fs)
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	start := time.Now() // before the client hears anything
	c, _ := dialServer(t, fs, cfg)
	ev := waitEvent(t, c, EventDisconnected)
	if !errors.Is(ev.Err, ErrServerSilent) || ev.Terminal {
		t.Fatalf("disconnect = %+v, want ErrServerSilent", ev)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("gave up after %v, before hb + timeout", d)
	}
	fs.accept(t)
	waitEvent(t, c, EventConnected)
	if st := c.Stats(); st.Reconnects != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestReconnectResume(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t, withAuto())
	c, fc := dialServer(t, fs, testConfig(fs))
	online := &State{Status: "online", Meta: json.RawMessage(`{"name":"A"}`)}
	joinSynced(t, c, "a", online)
	joinSynced(t, c, "b", online)
	joinSynced(t, c, "c", &State{Status: "away"})
	joinSynced(t, c, "d", nil)
	joinSynced(t, c, "e", &State{Meta: json.RawMessage(`{"x":1}`)})
	fc.send(`{"t":"diff","room":"a","from":"1.1","cur":"1.2","count":1}`)
	eventually(t, waitTimeout, "diff applied", func() bool { v, _ := c.Room("a"); return v.Cursor == "1.2" })

	fc.drop()
	fc2 := fs.accept(t)
	h := fc2.hello
	wantResume := map[string]string{"a": "1.2", "b": "1.1", "c": "1.1", "d": "1.1", "e": "1.1"}
	if len(h.Resume) != len(wantResume) {
		t.Fatalf("resume = %v, want %v", h.Resume, wantResume)
	}
	for room, cur := range wantResume {
		if h.Resume[room] != cur {
			t.Errorf("resume = %v, want %v", h.Resume, wantResume)
		}
	}
	if h.State == nil || h.State.Status != "online" || string(h.State.Meta) != `{"name":"A"}` || h.Token != "tok" {
		t.Errorf("hello = %+v, state %+v", h, h.State)
	}
	// The states of c, d and e differ from the hello's: a set restores
	// each, whole, since the server keeps what a set leaves out (the
	// hello's meta, or its status).
	for _, want := range []struct{ room, status, meta string }{
		{"c", "away", `{}`},
		{"d", "online", `{}`},
		{"e", "online", `{"x":1}`},
	} {
		set := fc2.expect(t, wire.TSet)
		if set.Room != want.room || set.State == nil || set.State.Status != want.status || string(set.State.Meta) != want.meta {
			t.Errorf("set after resume = %+v (state %+v), want %s with status %s and meta %s", set, set.State, want.room, want.status, want.meta)
		}
	}
	waitEvent(t, c, EventConnected) // the first connection's
	ev := waitEvent(t, c, EventConnected)
	if !ev.Resumed || ev.Conn != "c2" {
		t.Errorf("connected = %+v", ev)
	}
	// Resume succeeded for a: the diff continues its cursor.
	fc2.send(`{"t":"diff","room":"a","from":"1.2","cur":"1.3","count":2,"join":[{"u":"bob","s":"online","m":{}}]}`)
	eventually(t, waitTimeout, "resumed diff", func() bool { v, _ := c.Room("a"); return v.Cursor == "1.3" && len(v.Members) == 2 })
	if st := c.Stats(); st.Reconnects != 1 || st.Gaps != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestPendingCommandResent(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))
	errc := make(chan error, 1)
	go func() { errc <- c.Join(ctxT(t), "r", &State{Status: "busy"}) }()
	join := fc.expect(t, wire.TJoin)
	fc.drop()

	fc2 := fs.accept(t)
	if cur, ok := fc2.hello.Resume["r"]; !ok || cur != "" {
		t.Errorf("resume = %v, want r with no cursor", fc2.hello.Resume)
	}
	if st := fc2.hello.State; st == nil || st.Status != "busy" {
		t.Errorf("hello state = %+v", st)
	}
	again := fc2.expect(t, wire.TJoin)
	if again.ID != join.ID || again.Room != "r" {
		t.Errorf("re-sent join = %+v, want id %d", again, join.ID)
	}
	fc2.send(string(wire.AppendAck(nil, again.ID)))
	if err := <-errc; err != nil {
		t.Fatalf("Join = %v", err)
	}
}

func TestNoReconnect(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		code CloseCode
	}{
		{name: "normal", code: CloseNormal},
		{name: "protocol error", code: CloseProtocolError},
		{name: "invalid payload", code: CloseInvalidPayload},
		{name: "bad request", code: CloseBadRequest},
		{name: "unauthorized without token func", code: CloseUnauthorized},
		{name: "forbidden", code: CloseForbidden},
		{name: "token expired without token func", code: CloseTokenExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := newFakeServer(t)
			c, fc := dialServer(t, fs, testConfig(fs))
			fc.closeWith(tc.code, "bye now")
			ev := waitEvent(t, c, EventDisconnected)
			if !ev.Terminal || ev.Close != tc.code {
				t.Fatalf("disconnect = %+v, want terminal %d", ev, tc.code)
			}
			select {
			case <-c.Done():
			case <-time.After(waitTimeout):
				t.Fatal("client still running")
			}
			ce, ok := errors.AsType[*CloseError](c.Err())
			if !ok || ce.Code != tc.code || ce.Reason != "bye now" {
				t.Errorf("Err() = %v", c.Err())
			}
			if _, open := <-c.Events(); open {
				t.Error("events still open")
			}
			err := c.Join(ctxT(t), "r", nil)
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Join after stop = %v, want ErrClosed", err)
			}
			if ce, ok := errors.AsType[*CloseError](err); !ok || ce.Code != tc.code {
				t.Errorf("Join after stop = %v, want the close error too", err)
			}
			if got := fc.closeCode(t); got != ws.StatusCode(tc.code) {
				t.Errorf("client answered close with %d", got)
			}
			if len(fs.conns) != 0 || c.Stats().Dials != 1 {
				t.Errorf("reconnected after %d", tc.code)
			}
		})
	}
}

func TestReconnectCodes(t *testing.T) {
	t.Parallel()
	for _, code := range []CloseCode{CloseHeartbeat, CloseSlowConsumer, CloseHelloTimeout, CloseRateLimited, 1011} {
		t.Run(code.String(), func(t *testing.T) {
			t.Parallel()
			fs := newFakeServer(t)
			c, fc := dialServer(t, fs, testConfig(fs))
			fc.closeWith(code, "")
			ev := waitEvent(t, c, EventDisconnected)
			if ev.Terminal || ev.Close != code || ev.RetryIn > 10*time.Millisecond {
				t.Errorf("disconnect = %+v", ev)
			}
			fs.accept(t)
			waitEvent(t, c, EventConnected)
		})
	}
}

func TestBye(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))
	fc.send(string(wire.AppendBye(nil, "draining", 200)))
	if ev := waitEvent(t, c, EventBye); ev.RetryIn != 200*time.Millisecond {
		t.Errorf("bye = %+v", ev)
	}
	start := time.Now() // before the client sees the close
	fc.closeWith(CloseGoingAway, "draining")
	ev := waitEvent(t, c, EventDisconnected)
	// retry_ms plus a jitter of at most MinBackoff (10ms).
	if ev.Terminal || ev.RetryIn < 200*time.Millisecond || ev.RetryIn > 210*time.Millisecond {
		t.Errorf("disconnect = %+v", ev)
	}
	fs.accept(t)
	if d := time.Since(start); d < 190*time.Millisecond {
		t.Errorf("reconnected after %v, before retry_ms", d)
	}
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	cfg := testConfig(fs)
	cfg.TokenFunc, _ = tokens("t")
	c, fc := dialServer(t, fs, cfg)
	if fc.hello.Token != "t1" {
		t.Fatalf("hello token = %q", fc.hello.Token)
	}
	fc.send(string(wire.AppendRefresh(nil, time.Now().Add(time.Minute).Unix())))
	auth := fc.expect(t, wire.TAuth)
	if auth.Token != "t2" || auth.ID <= 0 {
		t.Fatalf("auth = %+v", auth)
	}
	fc.send(string(wire.AppendAck(nil, auth.ID)))
	waitEvent(t, c, EventRefreshed)
	if n := c.Stats().Refreshes; n != 1 {
		t.Errorf("Refreshes = %d", n)
	}

	// A refused auth is reported.
	fc.send(string(wire.AppendRefresh(nil, time.Now().Unix())))
	auth = fc.expect(t, wire.TAuth)
	fc.send(string(wire.AppendErr(nil, auth.ID, wire.ErrCodeUnauthorized, "expired")))
	ev := waitEvent(t, c, EventError)
	if ce, ok := errors.AsType[*CommandError](ev.Err); !ok || ce.Code != wire.ErrCodeUnauthorized {
		t.Errorf("error event = %+v", ev)
	}
}

func TestRefreshWithoutTokenFunc(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))
	fc.send(string(wire.AppendRefresh(nil, time.Now().Unix())))
	if ev := waitEvent(t, c, EventError); !errors.Is(ev.Err, ErrNoTokenFunc) {
		t.Errorf("error event = %+v", ev)
	}
}

func TestAuthCloseCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		code         CloseCode
		tokenFunc    func() func(context.Context) (string, error)
		refuseSecond bool // the next hello is refused with code again
		wantToken    string
		wantTerminal bool
	}{
		{
			name:      "4003 reconnects with a new token",
			code:      CloseTokenExpired,
			tokenFunc: func() func(context.Context) (string, error) { f, _ := tokens("t"); return f },
			wantToken: "t2",
		},
		{
			name:      "4101 retries once with a different token",
			code:      CloseUnauthorized,
			tokenFunc: func() func(context.Context) (string, error) { f, _ := tokens("t"); return f },
			wantToken: "t2",
		},
		{
			name: "4101 with the same token is terminal",
			code: CloseUnauthorized,
			tokenFunc: func() func(context.Context) (string, error) {
				return func(context.Context) (string, error) { return "same", nil }
			},
			wantTerminal: true,
		},
		{
			name:         "4101 again after the retry is terminal",
			code:         CloseUnauthorized,
			tokenFunc:    func() func(context.Context) (string, error) { f, _ := tokens("t"); return f },
			refuseSecond: true,
			wantToken:    "t2",
			wantTerminal: true,
		},
		{
			name:         "4003 again after the retry is terminal",
			code:         CloseTokenExpired,
			tokenFunc:    func() func(context.Context) (string, error) { f, _ := tokens("t"); return f },
			refuseSecond: true,
			wantToken:    "t2",
			wantTerminal: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var hellos atomic.Int64
			fs := newFakeServer(t, withHello(func(fc *fakeConn, h wire.Command) bool {
				if hellos.Add(1) == 2 && tc.refuseSecond {
					fc.closeWith(tc.code, "no")
					return false
				}
				return true
			}))
			cfg := testConfig(fs)
			cfg.TokenFunc = tc.tokenFunc()
			c, fc := dialServer(t, fs, cfg)
			fc.closeWith(tc.code, "no")
			if tc.wantToken != "" {
				if fc2 := fs.accept(t); fc2.hello.Token != tc.wantToken {
					t.Errorf("second hello token = %q, want %q", fc2.hello.Token, tc.wantToken)
				}
			}
			if !tc.wantTerminal {
				waitEvent(t, c, EventConnected) // the first one
				waitEvent(t, c, EventConnected)
				return
			}
			select {
			case <-c.Done():
			case <-time.After(waitTimeout):
				t.Fatal("client still running")
			}
			if ce, ok := errors.AsType[*CloseError](c.Err()); !ok || ce.Code != tc.code {
				t.Errorf("Err() = %v", c.Err())
			}
			if len(fs.conns) != 0 {
				t.Error("one connection too many")
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	top := func(n int64) int64 { return n - 1 }
	bottom := func(int64) int64 { return 0 }
	const ms = time.Millisecond
	cases := []struct {
		name     string
		attempt  int
		min, max time.Duration
		rnd      func(int64) int64
		want     time.Duration
	}{
		{name: "first, top", attempt: 0, min: 500 * ms, max: 30 * time.Second, rnd: top, want: 500 * ms},
		{name: "first, bottom", attempt: 0, min: 500 * ms, max: 30 * time.Second, rnd: bottom, want: 0},
		{name: "second", attempt: 1, min: 500 * ms, max: 30 * time.Second, rnd: top, want: time.Second},
		{name: "sixth", attempt: 5, min: 500 * ms, max: 30 * time.Second, rnd: top, want: 16 * time.Second},
		{name: "capped", attempt: 6, min: 500 * ms, max: 30 * time.Second, rnd: top, want: 30 * time.Second},
		{name: "huge attempt", attempt: 1000, min: 500 * ms, max: 30 * time.Second, rnd: top, want: 30 * time.Second},
		{name: "attempt 62", attempt: 62, min: 1, max: 1 << 62, rnd: top, want: 1 << 62},
		{name: "negative attempt", attempt: -3, min: 500 * ms, max: 30 * time.Second, rnd: top, want: 500 * ms},
		{name: "min equals max", attempt: 3, min: time.Second, max: time.Second, rnd: top, want: time.Second},
		{name: "zero min", attempt: 3, min: 0, max: time.Second, rnd: top, want: 0},
		{name: "middle", attempt: 2, min: 500 * ms, max: 30 * time.Second, rnd: func(n int64) int64 { return n / 2 }, want: time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := backoff(tc.attempt, tc.min, tc.max, tc.rnd); got != tc.want {
				t.Errorf("backoff(%d, %v, %v) = %v, want %v", tc.attempt, tc.min, tc.max, got, tc.want)
			}
		})
	}
}

// TestBackoffSpread: 100 clients cut off at once do not come back at once.
func TestBackoffSpread(t *testing.T) {
	t.Parallel()
	cfg, err := Config{URL: "ws://127.0.0.1:1/ws", Token: "x"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[time.Duration]bool)
	for range 100 {
		c := newClient(cfg)
		attempt := 0
		d, _, terminal := c.decide(loss{err: errors.New("reset")}, &attempt, new(bool))
		c.cancel()
		if terminal != nil || d < 0 || d > DefaultMinBackoff || attempt != 1 {
			t.Fatalf("first retry = %v (terminal %v, attempt %d), want within [0, %v]", d, terminal, attempt, DefaultMinBackoff)
		}
		seen[d] = true
	}
	if len(seen) <= 50 {
		t.Errorf("100 first retries took only %d distinct values", len(seen))
	}
}

func TestEventsDropOldest(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t, withAuto())
	cfg := testConfig(fs)
	cfg.EventBuffer = 2
	c, fc := dialServer(t, fs, cfg)
	joinSynced(t, c, "r", nil)
	for i := 1; i <= 10; i++ {
		fc.send(fmt.Sprintf(`{"t":"diff","room":"r","from":"1.%d","cur":"1.%d","count":%d}`, i, i+1, i))
	}
	eventually(t, waitTimeout, "10 diffs", func() bool { return c.Stats().Diffs == 10 })
	var counts []int
	for range 2 {
		ev := <-c.Events()
		counts = append(counts, ev.Diff.Count)
	}
	if !slices.Equal(counts, []int{9, 10}) {
		t.Errorf("buffered events = %v, want the newest two", counts)
	}
	if n := c.Stats().DroppedEvents; n == 0 {
		t.Error("no event counted as dropped")
	}
}

func TestEventsDisabled(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t, withAuto())
	cfg := testConfig(fs)
	cfg.EventBuffer = -1
	c, _ := dialServer(t, fs, cfg)
	if c.Events() != nil {
		t.Error("Events() is not nil")
	}
	joinSynced(t, c, "r", nil)
}

func TestClose(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t, withAuto())
	c, fc := dialServer(t, fs, testConfig(fs))
	joinSynced(t, c, "r", nil)

	// A command waiting for an answer when Close is called fails.
	errc := make(chan error, 1)
	fs2 := newFakeServer(t)
	c2, _ := dialServer(t, fs2, testConfig(fs2))
	go func() { errc <- c2.Join(context.Background(), "r", nil) }()
	eventually(t, waitTimeout, "join pending", func() bool { return c2.Stats().Commands == 1 })

	var wg sync.WaitGroup
	for _, cl := range []*Client{c, c2} {
		wg.Go(func() {
			if err := cl.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("pending Join = %v, want ErrClosed", err)
	}
	if got := fc.closeCode(t); got != ws.StatusNormalClosure {
		t.Errorf("server saw close code %d, want 1000", got)
	}
	var last Event
	for ev := range c.Events() {
		last = ev
	}
	if last.Kind != EventDisconnected || !last.Terminal || !errors.Is(last.Err, ErrClosed) {
		t.Errorf("last event = %+v", last)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if !errors.Is(c.Err(), ErrClosed) || c.ConnState() != StateClosed {
		t.Errorf("Err = %v, state %v", c.Err(), c.ConnState())
	}
	if err := c.Set(ctxT(t), "r", State{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close = %v", err)
	}
	if err := c.Typing("r", true); !errors.Is(err, ErrClosed) {
		t.Errorf("Typing after Close = %v", err)
	}
}

func TestCloseWhileReconnecting(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))
	fs.srv.Listener.Close() // every reconnect attempt fails
	fc.drop()
	ev := waitEvent(t, c, EventDisconnected)
	if ev.Terminal || ev.Err == nil {
		t.Fatalf("disconnect = %+v", ev)
	}
	if ev := waitEvent(t, c, EventDisconnected); ev.Err == nil || ev.Close != 0 {
		t.Fatalf("failed attempt = %+v, want a dial error", ev)
	}
	if s := c.ConnState(); s != StateReconnecting {
		t.Errorf("state = %v", s)
	}
	// Typing is lost while disconnected.
	if err := c.Typing("r", true); !errors.Is(err, ErrDisconnected) {
		t.Errorf("Typing while disconnected = %v", err)
	}
	// With no connection, Close has no close frame to wait for: it ends
	// the reconnect loop at once, well within closeWait (a second, far
	// above any scheduling delay), which it would take otherwise.
	start := time.Now()
	c.Close()
	if d := time.Since(start); d >= closeWait {
		t.Errorf("Close took %v, want less than closeWait (%v)", d, closeWait)
	}
	if st := c.Stats(); st.Dials < 2 || st.Disconnects < 2 {
		t.Errorf("stats = %+v", st)
	}
}
