package presence

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "insecure zero value", cfg: Config{Insecure: true}},
		{name: "authenticator", cfg: Config{Auth: tokenAuth}},
		{name: "no way to say hello", cfg: Config{}, wantErr: true},
		{name: "invalid node", cfg: Config{Insecure: true, Node: "a b"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New: err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if !wire.ValidID(h.Node()) {
				t.Errorf("Node() = %q, not a valid id", h.Node())
			}
			if h.cfg.Tick != 100*time.Millisecond || h.cfg.History != 256 || h.cfg.Rate != 20 || h.cfg.Burst != 40 {
				t.Errorf("defaults not filled: %+v", h.cfg)
			}
		})
	}
}

func TestHello(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		msg       string
		wantTypes []string
		wantClose wire.CloseCode // 0: stays open
		wantFail  string         // HelloFailures label, "" for none
		check     func(t *testing.T, welcome wire.Event)
	}{
		{
			name:      "insecure user",
			cfg:       Config{Insecure: true, HeartbeatInterval: 300 * time.Millisecond, MaxMessage: 1000},
			msg:       `{"t":"hello","v":1,"user":"alice"}`,
			wantTypes: []string{"welcome"},
			check: func(t *testing.T, w wire.Event) {
				want := wire.Event{T: "welcome", V: 1, Node: "n1", Conn: "n1-1", User: "alice", HB: 300, Max: 1000}
				if fmt.Sprint(w) != fmt.Sprint(want) {
					t.Errorf("welcome = %+v, want %+v", w, want)
				}
			},
		},
		{
			name:      "token",
			cfg:       Config{Auth: tokenAuth},
			msg:       `{"t":"hello","v":1,"token":"bob"}`,
			wantTypes: []string{"welcome"},
			check: func(t *testing.T, w wire.Event) {
				if w.User != "bob" || w.HB != 25000 || w.Max != 0 || w.Conn != "n1-1" { // no MaxMessage: max not stated
					t.Errorf("welcome = %+v, want user bob, hb 25000, max 0, conn n1-1", w)
				}
			},
		},
		{
			name:      "token wins over user on an insecure server",
			cfg:       Config{Insecure: true, Auth: tokenAuth},
			msg:       `{"t":"hello","v":1,"token":"bob","user":"mallory"}`,
			wantTypes: []string{"welcome"},
			check: func(t *testing.T, w wire.Event) {
				if w.User != "bob" {
					t.Errorf("welcome user = %q, want bob", w.User)
				}
			},
		},
		{
			name:      "unknown fields are ignored",
			cfg:       Config{Insecure: true},
			msg:       `{"t":"hello","v":1,"user":"alice","x":{"y":[1]}}`,
			wantTypes: []string{"welcome"},
		},
		{
			name:      "user on a secure server",
			cfg:       Config{Auth: tokenAuth},
			msg:       `{"t":"hello","v":1,"user":"alice"}`,
			wantClose: wire.CloseUnauthorized,
			wantFail:  "unauthorized",
		},
		{
			name:      "token on a server without authenticator",
			cfg:       Config{Insecure: true},
			msg:       `{"t":"hello","v":1,"token":"alice"}`,
			wantClose: wire.CloseUnauthorized,
			wantFail:  "unauthorized",
		},
		{
			name:      "refused token",
			cfg:       Config{Auth: tokenAuth},
			msg:       `{"t":"hello","v":1,"token":"bad"}`,
			wantClose: wire.CloseUnauthorized,
			wantFail:  "unauthorized",
		},
		{
			name:      "token subject is not a valid user id",
			cfg:       Config{Auth: tokenAuth},
			msg:       `{"t":"hello","v":1,"token":"no spaces"}`,
			wantClose: wire.CloseUnauthorized,
			wantFail:  "unauthorized",
		},
		{
			// An Authenticator failure that does not refuse the token is
			// not the client's fault: err internal and a close that
			// invites a reconnect (1011), not 4101.
			name:      "authenticator internal error",
			cfg:       Config{Auth: tokenAuth},
			msg:       `{"t":"hello","v":1,"token":"broken"}`,
			wantTypes: []string{"err"},
			wantClose: wire.CloseInternalError,
			wantFail:  "internal",
			check: func(t *testing.T, e wire.Event) {
				if e.Code != wire.ErrCodeInternal {
					t.Errorf("err code = %q, want internal", e.Code)
				}
			},
		},
		{
			name:      "version 2",
			cfg:       Config{Insecure: true},
			msg:       `{"t":"hello","v":2,"user":"alice"}`,
			wantClose: wire.CloseVersion,
			wantFail:  "version",
		},
		{
			name:      "no version",
			cfg:       Config{Insecure: true},
			msg:       `{"t":"hello","user":"alice"}`,
			wantClose: wire.CloseVersion,
			wantFail:  "version",
		},
		{
			name:      "join before hello",
			cfg:       Config{Insecure: true},
			msg:       `{"t":"join","id":1,"room":"r"}`,
			wantClose: wire.CloseBadRequest,
			wantFail:  "bad_request",
		},
		{
			name:      "pong before hello",
			cfg:       Config{Insecure: true},
			msg:       `{"t":"pong","ts":1}`,
			wantClose: wire.CloseBadRequest,
			wantFail:  "bad_request",
		},
		{
			name:      "hello without credentials",
			cfg:       Config{Insecure: true},
			msg:       `{"t":"hello","v":1}`,
			wantClose: wire.CloseBadRequest,
			wantFail:  "bad_request",
		},
		{
			name:      "JSON that is not an object",
			cfg:       Config{Insecure: true},
			msg:       `[1,2]`,
			wantClose: wire.CloseBadRequest,
			wantFail:  "bad_request",
		},
		{
			name:      "invalid JSON",
			cfg:       Config{Insecure: true},
			msg:       `{"t":"hello","v":1,`,
			wantClose: wire.CloseInvalidPayload,
			wantFail:  "bad_request",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fails := &labels{}
			cfg := tt.cfg
			cfg.Node = "n1"
			cfg.Metrics.HelloFailures = fails
			h, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := open(t, h, "c")
			c.send(tt.msg)
			evs := c.expect(tt.wantTypes...)
			if tt.check != nil {
				tt.check(t, evs[0])
			}
			var wantCloses []wire.CloseCode
			if tt.wantClose != 0 {
				wantCloses = []wire.CloseCode{tt.wantClose}
			}
			if got := c.sink.closeCodes(); fmt.Sprint(got) != fmt.Sprint(wantCloses) {
				t.Errorf("closes = %v, want %v", got, wantCloses)
			}
			var wantFails map[string]int
			if tt.wantFail != "" {
				wantFails = map[string]int{tt.wantFail: 1}
			}
			if got := fails.get(); !maps.Equal(got, wantFails) {
				t.Errorf("HelloFailures = %v, want %v", got, wantFails)
			}
			if tt.wantClose != 0 {
				// A closed session ignores what still arrives.
				c.send(`{"t":"hello","v":1,"user":"alice"}`)
				c.send(`{"t":"ping","ts":5}`)
				c.expectNone()
			} else {
				c.send(`{"t":"ping","ts":5}`)
				if e := c.expect("pong")[0]; e.TS != 5 {
					t.Errorf("pong ts = %d, want 5", e.TS)
				}
			}
			c.s.HandleClose(endLost)
			if s := h.Stats(); s != (Stats{}) {
				t.Errorf("Stats after close = %+v, want zero", s)
			}
		})
	}
}

func TestHelloTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fails := &labels{}
		e := startHub(t, Config{Insecure: true, HelloTimeout: 2 * time.Second, Metrics: Metrics{HelloFailures: fails}})
		opened := time.Now()
		late := open(t, e.h, "late")
		onTime := open(t, e.h, "ontime")
		if d := late.sink.getDeadline(); !d.Equal(opened.Add(2 * time.Second)) {
			t.Fatalf("deadline = +%v, want +2s", d.Sub(opened))
		}

		// A deadline run early (a spurious wake-up) closes nothing.
		e.sleep(time.Second)
		late.s.HandleDeadline()
		if got := late.sink.closeCodes(); len(got) != 0 {
			t.Fatalf("closed %v one second before the hello timeout", got)
		}
		if d := late.sink.getDeadline(); !d.Equal(opened.Add(2 * time.Second)) {
			t.Errorf("deadline after an early run = +%v, want +2s", d.Sub(opened))
		}

		e.sleep(time.Second - time.Millisecond)
		onTime.send(`{"t":"hello","v":1,"user":"bob"}`)
		onTime.expect("welcome")
		if d := onTime.sink.getDeadline(); !d.After(opened.Add(2 * time.Second)) {
			t.Errorf("deadline after hello = +%v, want the first ping, after the hello timeout", d.Sub(opened))
		}

		late.fire()
		if got := late.lastClose(); got != wire.CloseHelloTimeout {
			t.Errorf("close = %v, want 4004", got)
		}
		if at := time.Since(opened); at != 2*time.Second {
			t.Errorf("closed at +%v, want +2s", at)
		}
		if got := fails.get(); !maps.Equal(got, map[string]int{"timeout": 1}) {
			t.Errorf("HelloFailures = %v, want timeout: 1", got)
		}
		late.expectNone()
		onTime.fire()
		if got := onTime.sink.closeCodes(); len(got) != 0 {
			t.Errorf("a welcomed session was closed: %v", got)
		}
		late.s.HandleClose(endLost)
		onTime.s.HandleClose(endNormal)
		if s := e.h.Stats(); s.Sessions != 0 {
			t.Errorf("Sessions = %d, want 0", s.Sessions)
		}
	})
}

func TestHelloTwice(t *testing.T) {
	h, err := New(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, h, "alice")
	c.send(`{"t":"hello","v":1,"user":"bob"}`)
	if e := c.expect("err")[0]; e.Code != wire.ErrCodeBadRequest {
		t.Errorf("second hello: err %q, want bad_request", e.Code)
	}
	if c.s.User() != "alice" {
		t.Errorf("User() = %q, want alice", c.s.User())
	}
	c.send(`{"t":"ping","ts":7}`)
	c.expect("pong")
	if got := c.sink.closeCodes(); len(got) != 0 {
		t.Errorf("closes = %v, want none", got)
	}
	c.s.HandleClose(endNormal)
}

// TestCommandErrors: commands the server refuses get err with their id; the
// connection stays usable.
func TestCommandErrors(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		token    string // hello with this token (cfg.Auth must be set); "" says hello as alice
		setup    []string
		msg      string
		wantCode string // "" for no answer at all
		wantID   int64
	}{
		{
			name: "set on a room not joined",
			setup: []string{
				`{"t":"join","id":1,"room":"r"}`,
			},
			msg:      `{"t":"set","id":5,"room":"other","state":{"status":"away"}}`,
			wantCode: wire.ErrCodeNotJoined,
			wantID:   5,
		},
		{
			name:     "sync on a room not joined",
			msg:      `{"t":"sync","id":6,"room":"r"}`,
			wantCode: wire.ErrCodeNotJoined,
			wantID:   6,
		},
		{
			name:  "typing on a room not joined is ignored",
			msg:   `{"t":"typing","room":"r","on":true}`,
			setup: nil,
		},
		{
			name: "too many rooms",
			cfg:  Config{MaxRooms: 2},
			setup: []string{
				`{"t":"join","id":1,"room":"a"}`,
				`{"t":"join","id":2,"room":"b"}`,
			},
			msg:      `{"t":"join","id":3,"room":"c"}`,
			wantCode: wire.ErrCodeTooManyRooms,
			wantID:   3,
		},
		{
			name:     "room the token does not allow",
			cfg:      Config{Auth: tokenAuth},
			token:    "alice+ok:",
			setup:    []string{`{"t":"join","id":1,"room":"ok:1"}`},
			msg:      `{"t":"join","id":2,"room":"no:1"}`,
			wantCode: wire.ErrCodeForbidden,
			wantID:   2,
		},
		{
			name:     "meta too large",
			setup:    []string{`{"t":"join","id":1,"room":"r"}`},
			msg:      `{"t":"set","id":4,"room":"r","state":{"meta":{"x":"` + strings.Repeat("a", 600) + `"}}}`,
			wantCode: wire.ErrCodeTooLarge,
			wantID:   4,
		},
		{
			name:     "meta not an object",
			msg:      `{"t":"join","id":4,"room":"r","state":{"meta":[1]}}`,
			wantCode: wire.ErrCodeBadRequest,
			wantID:   4,
		},
		{
			name:     "unknown type",
			msg:      `{"t":"frobnicate","id":9}`,
			wantCode: wire.ErrCodeBadRequest,
			wantID:   9,
		},
		{
			name:     "join without id",
			msg:      `{"t":"join","room":"r"}`,
			wantCode: wire.ErrCodeBadRequest,
		},
		{
			name:     "invalid room id",
			msg:      `{"t":"join","id":2,"room":"a room"}`,
			wantCode: wire.ErrCodeBadRequest,
			wantID:   2,
		},
		{
			name:     "field of the wrong type",
			msg:      `{"t":"join","id":"2","room":"r"}`,
			wantCode: wire.ErrCodeBadRequest,
		},
		{
			name:     "auth on a server without authenticator",
			msg:      `{"t":"auth","id":3,"token":"x"}`,
			wantCode: wire.ErrCodeUnauthorized,
			wantID:   3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Insecure = cfg.Auth == nil
			h, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := open(t, h, "alice")
			if tt.token != "" {
				c.send(`{"t":"hello","v":1,"token":%q}`, tt.token)
			} else {
				c.send(`{"t":"hello","v":1,"user":"alice"}`)
			}
			c.expect("welcome")
			for _, m := range tt.setup {
				c.send(m)
				if evs := c.events(); len(evs) == 0 || evs[0].T != wire.TAck {
					t.Fatalf("setup %s: %+v, want ack", m, evs)
				}
			}
			c.send(tt.msg)
			if tt.wantCode == "" {
				c.expectNone()
			} else {
				e := c.expect("err")[0]
				if e.Code != tt.wantCode || e.ID != tt.wantID || e.Msg == "" {
					t.Errorf("err = {id %d, code %q, msg %q}, want id %d, code %q and a message", e.ID, e.Code, e.Msg, tt.wantID, tt.wantCode)
				}
			}
			// The connection stays usable.
			c.send(`{"t":"leave","id":77,"room":"elsewhere"}`)
			c.expect("ack")
			c.send(`{"t":"ping","ts":3}`)
			c.expect("pong")
			if got := c.sink.closeCodes(); len(got) != 0 {
				t.Errorf("closes = %v, want none", got)
			}
			c.s.HandleClose(endNormal)
		})
	}
}

func TestHeartbeat(t *testing.T) {
	const hb, timeout = 10 * time.Second, 5 * time.Second
	cfg := func(rtt *observer, depth *observer) Config {
		return Config{Insecure: true, HeartbeatInterval: hb, HeartbeatTimeout: timeout,
			Metrics: Metrics{HeartbeatRTT: rtt, OutboxDepth: depth}}
	}

	t.Run("first ping within hb/2 and hb, then every hb", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rtt, depth := &observer{}, &observer{}
			e := startHub(t, cfg(rtt, depth))
			var firsts []time.Duration
			var cs []*client
			start := time.Now()
			for i := range 40 {
				c := dial(t, e.h, fmt.Sprintf("u%d", i))
				cs = append(cs, c)
				firsts = append(firsts, c.sink.getDeadline().Sub(start))
			}
			distinct := map[time.Duration]bool{}
			for i, f := range firsts {
				if f < hb/2 || f > hb {
					t.Errorf("session %d: first ping at +%v, want within [%v, %v]", i, f, hb/2, hb)
				}
				distinct[f] = true
			}
			if len(distinct) < 2 {
				t.Errorf("first pings all at +%v: want them spread", firsts[0])
			}

			// One client answers every ping after 40 ms: it is never closed,
			// pings come every hb, and the RTTs are observed.
			c := cs[0]
			for _, o := range cs[1:] {
				o.s.HandleClose(endNormal)
			}
			var pings []time.Time
			for range 5 {
				// A deadline may pass with nothing due (the heartbeat check
				// of a connection that spoke since): fire until the ping.
				var evs []wire.Event
				for range 3 {
					c.fire()
					if evs = c.events(); len(evs) > 0 {
						break
					}
				}
				if got := typesOf(evs); !slices.Equal(got, []string{"ping"}) {
					t.Fatalf("events %v, want a ping", got)
				}
				now := time.Now()
				if evs[0].TS != now.UnixMilli() {
					t.Errorf("ping ts = %d, want now %d", evs[0].TS, now.UnixMilli())
				}
				pings = append(pings, now)
				time.Sleep(40 * time.Millisecond)
				c.send(`{"t":"pong","ts":%d}`, evs[0].TS)
				c.expectNone()
			}
			if d := pings[0].Sub(start); d != firsts[0] {
				t.Errorf("first ping at +%v, want the first deadline +%v", d, firsts[0])
			}
			for i := 1; i < len(pings); i++ {
				if d := pings[i].Sub(pings[i-1]); d != hb {
					t.Errorf("ping %d came %v after the previous one, want %v", i, d, hb)
				}
			}
			if got := c.sink.closeCodes(); len(got) != 0 {
				t.Errorf("closes = %v, want none", got)
			}
			vals := rtt.values()
			if len(vals) != 5 {
				t.Fatalf("HeartbeatRTT observed %d values, want 5", len(vals))
			}
			for _, v := range vals {
				if math.Abs(v-0.040) > 1e-9 {
					t.Errorf("HeartbeatRTT = %v, want 0.040", v)
				}
			}
			if n := len(depth.values()); n != 5 {
				t.Errorf("OutboxDepth sampled %d times, want once per ping (5)", n)
			}
			// A pong without a ts, or from the future, is not a sample.
			c.send(`{"t":"pong"}`)
			c.send(`{"t":"pong","ts":%d}`, time.Now().UnixMilli()+5000)
			if n := len(rtt.values()); n != 5 {
				t.Errorf("HeartbeatRTT has %d values after bogus pongs, want 5", n)
			}
			c.s.HandleClose(endNormal)
		})
	})

	t.Run("silence closes 4001 after hb plus timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := startHub(t, cfg(nil, nil))
			c := dial(t, e.h, "alice")
			c.join("r", 1, "")
			lastSeen := time.Now()
			e.tick()
			c.expect("sync")
			pings := 0
			for range 10 {
				c.fire()
				if c.lastClose() != 0 {
					break
				}
				pings += len(c.expect("ping"))
			}
			if got := c.lastClose(); got != wire.CloseHeartbeat {
				t.Fatalf("close = %v, want 4001", got)
			}
			if d := time.Since(lastSeen); d != hb+timeout {
				t.Errorf("closed %v after the last client message, want %v", d, hb+timeout)
			}
			if pings < 1 || pings > 2 {
				t.Errorf("%d pings before the close, want 1 or 2", pings)
			}
			// 4001 invites a reconnect: the member stays for the grace.
			c.s.HandleClose(endLost)
			if s := e.h.Stats(); s.Members != 1 {
				t.Errorf("Members after 4001 = %d, want 1 (leave grace)", s.Members)
			}
		})
	})

	t.Run("any client message keeps the connection alive", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := startHub(t, cfg(nil, nil))
			c := dial(t, e.h, "alice")
			for range 10 {
				e.sleep(hb + timeout - time.Second)
				c.send(`{"t":"ping","ts":1}`)
				c.s.HandleDeadline() // as if a deadline had passed
			}
			if got := c.sink.closeCodes(); len(got) != 0 {
				t.Errorf("closes = %v, want none", got)
			}
			c.s.HandleClose(endNormal)
		})
	})

	t.Run("client ping gets pong with the same ts", func(t *testing.T) {
		h, err := New(Config{Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, h, "alice")
		for _, ts := range []int64{0, 1, 1234567890123} {
			c.send(`{"t":"ping","ts":%d}`, ts)
			if e := c.expect("pong")[0]; e.TS != ts {
				t.Errorf("pong ts = %d, want %d", e.TS, ts)
			}
		}
		c.s.HandleClose(endNormal)
	})
}

func TestTokenRefresh(t *testing.T) {
	const (
		life          = 90 * time.Second
		refreshBefore = 60 * time.Second
		authGrace     = 30 * time.Second
	)
	type metrics struct{ refreshes, failures *counter }
	// Tokens: "<user>" expires life after it is verified; "bad" is
	// refused; "broken" fails internally.
	setup := func(t *testing.T) (*env, *client, time.Time, metrics) {
		m := metrics{&counter{}, &counter{}}
		auth := authFunc(func(token string) (Identity, error) {
			switch token {
			case "bad":
				return Identity{}, fmt.Errorf("fake: %w", ErrUnauthorized)
			case "broken":
				return Identity{}, errors.New("fake: key server unreachable")
			}
			return Identity{User: token, Expires: time.Now().Add(life)}, nil
		})
		e := startHub(t, Config{Auth: auth, RefreshBefore: refreshBefore, AuthGrace: authGrace,
			HeartbeatInterval: time.Hour, Metrics: Metrics{Refreshes: m.refreshes, RefreshFailures: m.failures}})
		c := open(t, e.h, "alice")
		exp := time.Now().Add(life)
		c.send(`{"t":"hello","v":1,"token":"alice"}`)
		c.expect("welcome")
		c.join("r", 1, "")
		e.tick()
		c.expect("sync")
		return e, c, exp, m
	}
	// refresh waits for the refresh message and checks its time and exp.
	refresh := func(t *testing.T, c *client, exp time.Time, before time.Duration) {
		t.Helper()
		c.fire()
		evs := c.expect("refresh")
		if evs[0].Exp != exp.Unix() {
			t.Errorf("refresh exp = %d, want %d", evs[0].Exp, exp.Unix())
		}
		if d := time.Until(exp); d != before {
			t.Errorf("refresh sent %v before exp, want %v", d, before)
		}
	}

	t.Run("renewed in time", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, c, exp, m := setup(t)
			refresh(t, c, exp, refreshBefore)
			e2 := time.Now().Add(life)
			c.send(`{"t":"auth","id":9,"token":"alice"}`)
			if e := c.expect("ack")[0]; e.ID != 9 {
				t.Errorf("ack id = %d, want 9", e.ID)
			}
			// The old token's expiry passes without a close; the new one
			// is refreshed in turn, RefreshBefore its exp but not sooner
			// than half its life.
			refresh(t, c, e2, min(refreshBefore, life/2))
			if d := c.sink.getDeadline(); !d.Equal(e2.Add(authGrace)) {
				t.Errorf("next deadline at exp%+v, want the new token's exp+%v", d.Sub(e2), authGrace)
			}
			if got := c.sink.closeCodes(); len(got) != 0 {
				t.Errorf("closes = %v, want none", got)
			}
			if m.refreshes.value() != 1 || m.failures.value() != 0 {
				t.Errorf("Refreshes, RefreshFailures = %v, %v; want 1, 0", m.refreshes.value(), m.failures.value())
			}
			c.s.HandleClose(endNormal)
		})
	})

	t.Run("not renewed closes 4003 after auth grace", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e, c, exp, _ := setup(t)
			refresh(t, c, exp, refreshBefore)
			c.fire()
			if got := c.lastClose(); got != wire.CloseTokenExpired {
				t.Fatalf("close = %v, want 4003", got)
			}
			if at := time.Since(exp); at != authGrace {
				t.Errorf("closed %v after exp, want %v", at, authGrace)
			}
			c.s.HandleClose(endLost)
			if s := e.h.Stats(); s.Members != 1 {
				t.Errorf("Members after 4003 = %d, want 1 (leave grace)", s.Members)
			}
		})
	})

	t.Run("token expiring within RefreshBefore is refreshed at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			auth := authFunc(func(token string) (Identity, error) {
				return Identity{User: token, Expires: time.Now().Add(refreshBefore / 2)}, nil
			})
			e := startHub(t, Config{Auth: auth, RefreshBefore: refreshBefore, AuthGrace: authGrace, HeartbeatInterval: time.Hour})
			c := open(t, e.h, "alice")
			exp := time.Now().Add(refreshBefore / 2)
			c.send(`{"t":"hello","v":1,"token":"alice"}`)
			c.expect("welcome")
			start := time.Now()
			c.fire()
			if ev := c.expect("refresh")[0]; ev.Exp != exp.Unix() || time.Since(start) != 0 {
				t.Errorf("refresh %+v after %v, want exp %d at once", ev, time.Since(start), exp.Unix())
			}
			c.fire()
			if got := c.lastClose(); got != wire.CloseTokenExpired || time.Since(exp) != authGrace {
				t.Errorf("close %v %v after exp, want 4003 after %v", got, time.Since(exp), authGrace)
			}
			c.s.HandleClose(endLost)
		})
	})

	tests := []struct {
		name        string
		token       string
		wantCode    string
		wantClose   wire.CloseCode // 0: stays open
		wantMembers int64          // right after HandleClose(endLost)
	}{
		{name: "token for another user", token: "bob", wantCode: wire.ErrCodeForbidden, wantClose: wire.CloseForbidden},
		{name: "refused token", token: "bad", wantCode: wire.ErrCodeUnauthorized, wantClose: wire.CloseUnauthorized},
		{name: "authenticator failure", token: "broken", wantCode: wire.ErrCodeInternal, wantMembers: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e, c, _, m := setup(t)
				c.send(`{"t":"auth","id":4,"token":%q}`, tt.token)
				ev := c.expect("err")[0]
				if ev.ID != 4 || ev.Code != tt.wantCode {
					t.Errorf("err = {id %d, code %q}, want {4, %q}", ev.ID, ev.Code, tt.wantCode)
				}
				if got := c.lastClose(); got != tt.wantClose {
					t.Errorf("close = %v, want %v", got, tt.wantClose)
				}
				if m.failures.value() != 1 || m.refreshes.value() != 0 {
					t.Errorf("RefreshFailures, Refreshes = %v, %v; want 1, 0", m.failures.value(), m.refreshes.value())
				}
				if tt.wantClose == 0 {
					c.send(`{"t":"ping","ts":1}`)
					c.expect("pong")
				}
				// A close for good removes the member at once.
				c.s.HandleClose(endLost)
				if s := e.h.Stats(); s.Members != tt.wantMembers {
					t.Errorf("Members right after the close = %d, want %d", s.Members, tt.wantMembers)
				}
			})
		})
	}
}

func TestRateLimit(t *testing.T) {
	t.Run("burst of 40 then rate_limited", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			limited := &counter{}
			e := startHub(t, Config{Insecure: true, Metrics: Metrics{RateLimited: limited}})
			c := dial(t, e.h, "alice")
			for i := 1; i <= 40; i++ {
				c.send(`{"t":"join","id":%d,"room":"r%d"}`, i, i)
			}
			for i, ev := range c.events() {
				if ev.T != wire.TAck && ev.T != wire.TSync {
					t.Fatalf("event %d of the burst: %+v, want ack or sync", i, ev)
				}
			}
			c.send(`{"t":"join","id":41,"room":"r41"}`)
			if ev := c.expect("err")[0]; ev.ID != 41 || ev.Code != wire.ErrCodeRateLimited {
				t.Errorf("41st join: %+v, want err 41 rate_limited", ev)
			}
			if limited.value() != 1 {
				t.Errorf("RateLimited = %v, want 1", limited.value())
			}
			// Pongs over the limit are ignored, never answered.
			for range 200 {
				c.send(`{"t":"pong","ts":1}`)
			}
			c.expectNone()
			// One token comes back every 1/rate; a pong takes it like
			// any message, so the join after it is refused.
			e.sleep(50 * time.Millisecond)
			c.events() // the syncs of the 40 rooms
			c.send(`{"t":"pong","ts":1}`)
			c.send(`{"t":"join","id":42,"room":"r42"}`)
			if ev := c.expect("err")[0]; ev.ID != 42 || ev.Code != wire.ErrCodeRateLimited {
				t.Errorf("join after a pong took the token: %+v, want err 42 rate_limited", ev)
			}
			e.sleep(50 * time.Millisecond)
			c.send(`{"t":"join","id":43,"room":"r43"}`)
			c.expect("ack")
			c.send(`{"t":"join","id":44,"room":"r44"}`)
			c.expect("err")
			if got := c.sink.closeCodes(); len(got) != 0 {
				t.Errorf("closes = %v, want none", got)
			}
			c.s.HandleClose(endNormal)
		})
	})

	t.Run("typing over the rate is held then applied", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := startHub(t, Config{Insecure: true})
			obs := dial(t, e.h, "bob")
			obs.join("r", 1, "")
			c := dial(t, e.h, "alice")
			c.join("r", 1, "")
			e.tick()
			obs.events()
			c.events()
			for i := range 40 { // the bucket refilled during the tick: 40 tokens
				c.send(`{"t":"ping","ts":%d}`, i)
			}
			c.events()
			start := time.Now()
			// The bucket is empty: typing is held, silently; the latest
			// one wins.
			c.send(`{"t":"typing","room":"r","on":false}`)
			c.send(`{"t":"typing","room":"r","on":true}`)
			c.expectNone()
			c.fire()
			obs.expectNone() // the tick at the same instant ran first
			if d := time.Since(start); d != 50*time.Millisecond {
				t.Errorf("held typing applied after %v, want 50ms (one token)", d)
			}
			e.tick()
			ev := obs.expect("diff")[0]
			if ev.Typing == nil || fmt.Sprint(*ev.Typing) != "[alice]" {
				t.Errorf("diff typing = %v, want [alice]", ev.Typing)
			}
			c.s.HandleClose(endNormal)
			obs.s.HandleClose(endNormal)
		})
	})

	t.Run("flood for 3 seconds closes 4029", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := startHub(t, Config{Insecure: true})
			c := dial(t, e.h, "alice")
			start := time.Now()
			var closedAt time.Duration
			for i := 0; i < 1000 && closedAt == 0; i++ { // 100 per second
				c.send(`{"t":"ping","ts":%d}`, i)
				if c.lastClose() != 0 {
					closedAt = time.Since(start)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := c.lastClose(); got != wire.CloseRateLimited {
				t.Fatalf("close = %v, want 4029", got)
			}
			if closedAt < 3*time.Second || closedAt > 5*time.Second {
				t.Errorf("closed after %v of flood, want between 3s and 5s", closedAt)
			}
			c.s.HandleClose(endLost)
			_ = e
		})
	})

	t.Run("1.5 times the rate is limited but not a flood", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			limited := &counter{}
			e := startHub(t, Config{Insecure: true, Metrics: Metrics{RateLimited: limited}})
			c := dial(t, e.h, "alice")
			for i := range 30 * 8 { // 30 per second for 8 s
				c.send(`{"t":"ping","ts":%d}`, i)
				time.Sleep(time.Second / 30)
			}
			if got := c.sink.closeCodes(); len(got) != 0 {
				t.Errorf("closes = %v, want none", got)
			}
			if limited.value() == 0 {
				t.Errorf("RateLimited = 0, want some refusals")
			}
			c.s.HandleClose(endNormal)
			_ = e
		})
	})

	t.Run("malformed commands count against the rate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := startHub(t, Config{Insecure: true})
			c := dial(t, e.h, "alice")
			for i := range 40 {
				c.send(`{"t":"frobnicate","id":%d}`, i+1)
			}
			for _, ev := range c.expect(slices.Repeat([]string{"err"}, 40)...) {
				if ev.Code != wire.ErrCodeBadRequest {
					t.Fatalf("err %q, want bad_request", ev.Code)
				}
			}
			c.send(`{"t":"join","id":50,"room":"r"}`)
			if ev := c.expect("err")[0]; ev.Code != wire.ErrCodeRateLimited || ev.ID != 50 {
				t.Errorf("join after 40 malformed commands: %+v, want err 50 rate_limited", ev)
			}
			// A flood of garbage earns 4029 like any other.
			for i := 0; i < 600 && c.lastClose() == 0; i++ {
				c.send(`{"t":"set","id":1}`)
				time.Sleep(10 * time.Millisecond)
			}
			if got := c.lastClose(); got != wire.CloseRateLimited {
				t.Errorf("close = %v, want 4029", got)
			}
			c.s.HandleClose(endLost)
			_ = e
		})
	})

	t.Run("pongs at the rate are accepted but a pong flood closes 4029", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := startHub(t, Config{Insecure: true})
			c := dial(t, e.h, "alice")
			// At the rate: never an answer, never a close.
			for range 3 * 20 {
				c.send(`{"t":"pong","ts":1}`)
				time.Sleep(50 * time.Millisecond)
			}
			c.expectNone()
			if got := c.sink.closeCodes(); len(got) != 0 {
				t.Fatalf("closes at the rate = %v, want none", got)
			}
			// Five times the rate for five seconds: a flood.
			for range 5 * 100 {
				c.send(`{"t":"pong","ts":1}`)
				time.Sleep(10 * time.Millisecond)
			}
			if got := c.lastClose(); got != wire.CloseRateLimited {
				t.Errorf("close after a pong flood = %v, want 4029", got)
			}
			c.s.HandleClose(endLost)
			_ = e
		})
	})
}

func TestLimiterAllow(t *testing.T) {
	const interval, burst = int64(50e6), 40 // 20/s, burst 40
	tests := []struct {
		name     string
		calls    []int64 // times (ns) of allow calls
		want     []bool
		wantNext int64 // nextToken after the calls
	}{
		{
			name:     "first call",
			calls:    []int64{1e9},
			want:     []bool{true},
			wantNext: 1e9 + interval - 39*interval,
		},
		{
			name:     "burst at one instant",
			calls:    repeat(1e9, 41),
			want:     append(repeatBool(true, 40), false),
			wantNext: 1e9 + 40*interval - 39*interval,
		},
		{
			name:     "one token back after one interval",
			calls:    append(repeat(1e9, 40), 1e9+interval-1, 1e9+interval, 1e9+interval),
			want:     append(repeatBool(true, 40), false, true, false),
			wantNext: 1e9 + 41*interval - 39*interval,
		},
		{
			name:     "idle time refills the bucket, not beyond burst",
			calls:    append(repeat(1e9, 40), repeat(100e9, 41)...),
			want:     append(repeatBool(true, 80), false),
			wantNext: 100e9 + interval,
		},
		{
			name:     "steady at the rate is never refused",
			calls:    steps(1e9, interval, 200),
			want:     repeatBool(true, 200),
			wantNext: 1e9 + 199*interval + interval - 39*interval,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l limiter
			for i, now := range tt.calls {
				if got := l.allow(now, interval, burst); got != tt.want[i] {
					t.Fatalf("call %d at %d: allow = %v, want %v", i, now, got, tt.want[i])
				}
			}
			next := l.nextToken(interval, burst)
			if next != tt.wantNext {
				t.Errorf("nextToken = %d, want %d", next, tt.wantNext)
			}
			if !l.allow(max(next, tt.calls[len(tt.calls)-1]), interval, burst) {
				t.Errorf("allow at nextToken refused")
			}
		})
	}
}

func TestLimiterReject(t *testing.T) {
	const sec = int64(1e9)
	// perSecond builds reject times: n[i] refusals spread over second i.
	perSecond := func(n ...int) []int64 {
		var ts []int64
		for s, k := range n {
			for j := range k {
				ts = append(ts, 10*sec+int64(s)*sec+int64(j)*(sec/int64(k+1)))
			}
		}
		return ts
	}
	tests := []struct {
		name      string
		rejects   []int64
		wantFlood int // index of the first reject reporting a flood, -1 for none
	}{
		{name: "a few refusals", rejects: perSecond(5, 5, 5, 5, 5), wantFlood: -1},
		{name: "exactly rate refusals per second", rejects: perSecond(20, 20, 20, 20, 20), wantFlood: -1},
		{name: "over rate for three seconds", rejects: perSecond(21, 21, 21, 1), wantFlood: 63},
		{name: "over rate for two seconds only", rejects: perSecond(30, 30, 5, 30, 30, 5), wantFlood: -1},
		{
			name:      "a quiet second resets the count",
			rejects:   append(perSecond(30, 30), append(shift(perSecond(30, 30), 3*sec), 15*sec+sec/2)...),
			wantFlood: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l limiter
			got := -1
			for i, now := range tt.rejects {
				if l.reject(now, 20, 3) && got < 0 {
					got = i
				}
			}
			if got != tt.wantFlood {
				t.Errorf("first flood at reject %d, want %d", got, tt.wantFlood)
			}
		})
	}
}

func repeat(v int64, n int) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func repeatBool(v bool, n int) []bool {
	s := make([]bool, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func steps(start, step int64, n int) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = start + int64(i)*step
	}
	return s
}

func shift(ts []int64, d int64) []int64 {
	for i := range ts {
		ts[i] += d
	}
	return ts
}

func TestDrain(t *testing.T) {
	t.Run("bye then 1001 with retry_ms spread across the window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const window = 10 * time.Second
			e := startHub(t, Config{Insecure: true})
			var cs []*client
			for i := range 200 {
				c := dial(t, e.h, fmt.Sprintf("u%d", i))
				if i < 3 {
					c.join("r", 1, "")
				}
				cs = append(cs, c)
			}
			e.tick()
			for _, c := range cs {
				c.events()
			}
			if e.h.Draining() {
				t.Fatal("Draining before Drain")
			}
			e.h.Drain(window)
			if !e.h.Draining() {
				t.Fatal("not Draining after Drain")
			}
			retries := map[int64]bool{}
			retryOf := map[string]time.Duration{}
			low, high := 0, 0
			for _, c := range cs {
				ev := c.expect("bye")[0]
				retryOf[c.name] = time.Duration(ev.RetryMS) * time.Millisecond
				if ev.Reason != "draining" || ev.RetryMS < 0 || ev.RetryMS >= window.Milliseconds() {
					t.Errorf("%s: bye %+v, want reason draining, retry_ms in [0, %d)", c.name, ev, window.Milliseconds())
				}
				retries[ev.RetryMS] = true
				if ev.RetryMS < window.Milliseconds()/2 {
					low++
				} else {
					high++
				}
				if got := c.sink.closeCodes(); !slices.Equal(got, []wire.CloseCode{wire.CloseGoingAway}) {
					t.Errorf("%s: closes %v, want [1001]", c.name, got)
				}
			}
			if len(retries) < 2 || low < 50 || high < 50 {
				t.Errorf("retry_ms: %d distinct values, %d in the first half, %d in the second: want them spread", len(retries), low, high)
			}

			// A hello after Drain gets welcome, then bye, spread across the
			// same window.
			var lates []*client
			lateHigh := 0
			for i := range 40 {
				late := open(t, e.h, "late")
				late.send(`{"t":"hello","v":1,"user":"late%d","resume":{"r":""}}`, i)
				evs := late.expect("welcome", "bye")
				if evs[1].RetryMS < 0 || evs[1].RetryMS >= window.Milliseconds() {
					t.Errorf("late bye retry_ms = %d, want in [0, %d)", evs[1].RetryMS, window.Milliseconds())
				}
				if evs[1].RetryMS >= window.Milliseconds()/2 {
					lateHigh++
				}
				if got := late.sink.closeCodes(); !slices.Equal(got, []wire.CloseCode{wire.CloseGoingAway}) {
					t.Errorf("late closes %v, want [1001]", got)
				}
				lates = append(lates, late)
			}
			if lateHigh == 0 || lateHigh == 40 {
				t.Errorf("%d of 40 late hellos told to retry in the second half of the window: want them spread", lateHigh)
			}

			// 1001 keeps each member for its bye's retry_ms plus the leave
			// grace: its client comes back (elsewhere) only after retry_ms.
			for _, c := range append(cs, lates...) {
				c.s.HandleClose(endLost)
			}
			closed := time.Now()
			if s := e.h.Stats(); s.Sessions != 0 || s.Members != 3 || s.Rooms != 1 {
				t.Errorf("Stats after the drain = %+v, want 0 sessions, 3 members in 1 room (grace)", s)
			}
			grace, tick := e.h.cfg.LeaveGrace, e.h.cfg.Tick
			for time.Since(closed) < window+grace+2*tick {
				e.tick()
				members, _ := roomState(e.h, "r")
				for _, c := range cs[:3] {
					hold, el := retryOf[c.name]+grace, time.Since(closed)
					_, held := members[c.name]
					if el < hold && !held || el >= hold+tick && held { // it ends at the first flush at or after hold
						t.Errorf("%s (retry_ms %d): held %v %v after its close, want held for %v", c.name, retryOf[c.name].Milliseconds(), held, el, hold)
					}
				}
			}
			if s := e.h.Stats(); s != (Stats{}) {
				t.Errorf("Stats after every hold = %+v, want zero", s)
			}
		})
	})
}

// TestAuthNarrowsRooms: a renewed token whose rooms claim no longer allows
// a joined room leaves it (at once, no grace) with err forbidden.
func TestAuthNarrowsRooms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refreshes := &counter{}
		e := startHub(t, Config{Auth: tokenAuth, Metrics: Metrics{Refreshes: refreshes}})
		obs := open(t, e.h, "obs")
		obs.send(`{"t":"hello","v":1,"token":"obs"}`)
		obs.expect("welcome")
		obs.join("no:1", 1, "")
		alice := open(t, e.h, "alice")
		alice.send(`{"t":"hello","v":1,"token":"alice"}`)
		alice.expect("welcome")
		alice.join("ok:1", 1, "")
		alice.join("no:1", 2, "")
		e.tick()
		obs.events()
		alice.events()

		alice.send(`{"t":"auth","id":3,"token":"alice+ok:"}`)
		evs := alice.expect("ack", "err")
		if evs[0].ID != 3 || evs[1].Code != wire.ErrCodeForbidden || !strings.Contains(evs[1].Msg, "no:1") {
			t.Errorf("auth: %+v, want ack 3 then err forbidden naming no:1", evs)
		}
		if refreshes.value() != 1 {
			t.Errorf("Refreshes = %v, want 1", refreshes.value())
		}
		e.tick()
		obs.expectDiff("leave alice")
		alice.send(`{"t":"set","id":4,"room":"no:1","state":{"status":"away"}}`)
		if ev := alice.expect("err")[0]; ev.Code != wire.ErrCodeNotJoined {
			t.Errorf("set in the room left: %q, want not_joined", ev.Code)
		}
		alice.send(`{"t":"set","id":5,"room":"ok:1","state":{"status":"away"}}`)
		alice.expect("ack")
		alice.send(`{"t":"join","id":6,"room":"no:2"}`)
		if ev := alice.expect("err")[0]; ev.Code != wire.ErrCodeForbidden {
			t.Errorf("join outside the new claim: %q, want forbidden", ev.Code)
		}
		if got := alice.sink.closeCodes(); len(got) != 0 {
			t.Errorf("closes %v, want none", got)
		}
	})
}
