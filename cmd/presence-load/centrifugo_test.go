package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

// Frames RECORDED from Centrifugo v6.9.1 (`make centrifugo`: go install of
// github.com/centrifugal/centrifugo/v6@v6.9.1, which reports version
// "0.0.0 OSS") with bench/centrifugo/config.json, by TestCentrifugoLive -v on
// 2026-12-04; each is one WebSocket text message as received. Client ids
// are the server's. The ts values are what the test sent.
const (
	recConnect        = `{"id":2147483648,"connect":{"client":"959ada73-b1d1-407b-a800-5fd7af84aa8d","version":"0.0.0 OSS","expires":true,"ttl":3600,"ping":25,"pong":true}}`
	recSubscribeJoin  = "{\"id\":1,\"subscribe\":{}}\n{\"push\":{\"channel\":\"r1\",\"join\":{\"info\":{\"user\":\"u1\",\"client\":\"959ada73-b1d1-407b-a800-5fd7af84aa8d\"}}}}"
	recJoin           = `{"push":{"channel":"r1","join":{"info":{"user":"u2","client":"3c4dab0b-a4d7-4514-9394-df8e63eeba58"}}}}`
	recPubThenAck     = "{\"push\":{\"channel\":\"r1\",\"pub\":{\"data\":{\"u\":\"u1\",\"s\":\"away\",\"ts\":1796410577837463456},\"info\":{\"user\":\"u1\",\"client\":\"959ada73-b1d1-407b-a800-5fd7af84aa8d\"}}}}\n{\"id\":2,\"publish\":{}}"
	recPub            = `{"push":{"channel":"r1","pub":{"data":{"u":"u1","s":"away","ts":1796410577837463456},"info":{"user":"u1","client":"959ada73-b1d1-407b-a800-5fd7af84aa8d"}}}}`
	recTypingThenAck  = "{\"push\":{\"channel\":\"r1\",\"pub\":{\"data\":{\"u\":\"u2\",\"typing\":true,\"ts\":1796410577837463456},\"info\":{\"user\":\"u2\",\"client\":\"3c4dab0b-a4d7-4514-9394-df8e63eeba58\"}}}}\n{\"id\":2147483649,\"publish\":{}}"
	recError          = `{"id":3,"error":{"code":102,"message":"unknown channel"}}`
	recLeave          = `{"push":{"channel":"r1","leave":{"info":{"user":"u2","client":"3c4dab0b-a4d7-4514-9394-df8e63eeba58"}}}}`
	recPing           = `{}`
	recUnsubscribeAck = `{"id":4,"unsubscribe":{}}`
)

// Pushes that the live test cannot provoke with the API off, written from
// the protocol's definitions (protocol v0.19.2 client.proto), not recorded.
const (
	synUnsubscribe = `{"push":{"channel":"r1","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}`
	synDisconnect  = `{"push":{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}}`
	synOtherPub    = `{"push":{"channel":"r1","pub":{"data":{"hello":[1,{"x":"}"}]},"info":{"user":"u9","client":"c"}}}}`
	synEscapes     = `{"push":{"channel":"r\"1","pub":{"info":{"user":"x","client":"c"},"data":{"ts":-5,"s":"\u00e9\ud83d\ude00\n","u":"a\\b"}}}}`
)

// collect runs Parse and returns copies of its events.
func collect(t testing.TB, p *centrifugoProto, msg string) ([]liveEvent, string, error) {
	t.Helper()
	var evs []liveEvent
	reply, err := p.Parse([]byte(msg), func(ev *event) {
		evs = append(evs, liveEvent{kind: ev.kind, id: ev.id, room: string(ev.room), user: string(ev.user),
			status: string(ev.status), code: ev.code, sentNs: ev.sentNs, on: ev.on})
	})
	return evs, string(reply), err
}

func TestCentrifugoParse(t *testing.T) {
	const ts = 1796410577837463456
	for _, tc := range []struct {
		name  string
		msg   string
		want  []liveEvent
		reply string
	}{
		{"connect reply", recConnect, []liveEvent{{kind: evWelcome, id: centrifugoHelloID}}, ""},
		{"subscribe reply and own join in one frame", recSubscribeJoin, []liveEvent{
			{kind: evAck, id: 1}, {kind: evSync, id: 1}, {kind: evJoin, room: "r1", user: "u1"}}, ""},
		{"join push", recJoin, []liveEvent{{kind: evJoin, room: "r1", user: "u2"}}, ""},
		{"status push then publish reply", recPubThenAck, []liveEvent{
			{kind: evChange, room: "r1", user: "u1", status: "away", sentNs: ts}, {kind: evAck, id: 2}}, ""},
		{"typing push then the typing publish reply", recTypingThenAck, []liveEvent{
			{kind: evTyping, room: "r1", user: "u2", sentNs: ts, on: true}, {kind: evOther, id: centrifugoTypingID}}, ""},
		{"error reply", recError, []liveEvent{{kind: evErr, id: 3, code: "102 unknown channel"}}, ""},
		{"leave push", recLeave, []liveEvent{{kind: evLeave, room: "r1", user: "u2"}}, ""},
		{"ping", recPing, nil, "{}"},
		{"ping among replies", recPing + "\n" + recLeave + "\n", []liveEvent{{kind: evLeave, room: "r1", user: "u2"}}, "{}"},
		{"unsubscribe reply", recUnsubscribeAck, []liveEvent{{kind: evAck, id: 4}}, ""},
		{"server unsubscribe", synUnsubscribe, []liveEvent{{kind: evErr, room: "r1", code: "2000 server unsubscribe"}}, ""},
		{"disconnect push", synDisconnect, []liveEvent{{kind: evBye, code: "3001 shutdown"}}, ""},
		{"foreign publication", synOtherPub, []liveEvent{{kind: evOther, room: "r1", user: "u9"}}, ""},
		{"escapes, reordered members", synEscapes, []liveEvent{
			{kind: evChange, room: "r\"1", user: `a\b`, status: "é😀\n", sentNs: -5}}, ""},
		{"blank lines and spaces", " \n" + recJoin + " \r\n\n", []liveEvent{{kind: evJoin, room: "r1", user: "u2"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reply, err := collect(t, new(centrifugoProto), tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || reply != tc.reply {
				t.Errorf("Parse(%q)\n got %+v reply %q\nwant %+v reply %q", tc.msg, got, reply, tc.want, tc.reply)
			}
		})
	}
}

func TestCentrifugoParseErrors(t *testing.T) {
	for _, msg := range []string{
		`{"id":1`, `{"push":{"channel":"r1"`, `[]`, `{"id":1}x`, `{"push":{"channel":"r1}}`,
		`{"id":1,"error":{"code":1,"message":"\x"}}`, `{1:2}`, `{"a"}`, `{"a":}`,
	} {
		if _, _, err := collect(t, new(centrifugoProto), msg); err == nil {
			t.Errorf("Parse(%q): no error", msg)
		}
	}
}

func TestCentrifugoBuilders(t *testing.T) {
	p := new(centrifugoProto)
	for _, tc := range []struct {
		name, got, want string
	}{
		{"hello", string(p.Hello(nil, "u1", "T")), `{"id":2147483648,"connect":{"token":"T","name":"presence-load"}}`},
		{"hello without token", string(p.Hello(nil, "u1", "")), `{"id":2147483648,"connect":{"name":"presence-load"}}`},
		{"join", string(p.Join(nil, 1, "r1", "online")), `{"id":1,"subscribe":{"channel":"r1"}}`},
		{"leave", string(p.Leave(nil, 4, "r1")), `{"id":4,"unsubscribe":{"channel":"r1"}}`},
		{"set", string(p.Set(nil, 2, "r1", "u1", "away", 1796410577837463456)),
			`{"id":2,"publish":{"channel":"r1","data":{"u":"u1","s":"away","ts":1796410577837463456}}}`},
		{"typing", string(p.Typing(nil, "r1", "u2", true, 7)),
			`{"id":2147483649,"publish":{"channel":"r1","data":{"u":"u2","typing":true,"ts":7}}}`},
		{"typing off", string(p.Typing([]byte("x"), "r1", "u2", false, 0)),
			`x{"id":2147483649,"publish":{"channel":"r1","data":{"u":"u2","typing":false,"ts":0}}}`},
		{"escapes", string(p.Set(nil, 9, "r\"\\1", "u\n\x01", "é", 0)),
			`{"id":9,"publish":{"channel":"r\"\\1","data":{"u":"u\n\u0001","s":"é","ts":0}}}`},
	} {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, tc.got, tc.want)
		}
		if !json.Valid([]byte(tc.got)) && tc.name != "typing off" {
			t.Errorf("%s: invalid JSON %s", tc.name, tc.got)
		}
	}
}

// The hot path: a status push to a listener, and building a change.
func TestCentrifugoAllocs(t *testing.T) {
	p := new(centrifugoProto)
	msg := []byte(recPubThenAck)
	buf := make([]byte, 0, 256)
	n := 0
	fn := func(ev *event) { n += len(ev.user) }
	if a := testing.AllocsPerRun(100, func() {
		if _, err := p.Parse(msg, fn); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Parse of a pub push and a reply: %v allocs, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() {
		buf = p.Set(buf[:0], 2, "r1", "u1", "away", 1)
		buf = p.Typing(buf[:0], "r1", "u1", true, 1)
	}); a != 0 {
		t.Errorf("Set and Typing into a buffer: %v allocs, want 0", a)
	}
}

func BenchmarkCentrifugoParsePub(b *testing.B) {
	p := new(centrifugoProto)
	msg := []byte(recPub)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Parse(msg, func(*event) {}); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzCentrifugoParse: any message, whole or cut at any byte: no panic, the
// same events twice (nothing depends on state left by a previous call), and
// a reply only for a ping.
func FuzzCentrifugoParse(f *testing.F) {
	for _, s := range []string{recConnect, recSubscribeJoin, recJoin, recPubThenAck, recTypingThenAck, recError,
		recLeave, recPing, recUnsubscribeAck, synUnsubscribe, synDisconnect, synOtherPub, synEscapes} {
		f.Add([]byte(s))
		f.Add([]byte(s[:len(s)/2]))
		f.Add([]byte(s[len(s)/2:]))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		p := new(centrifugoProto)
		ev1, r1, err1 := collect(t, p, string(msg))
		ev2, r2, err2 := collect(t, p, string(msg))
		if fmt.Sprint(ev1, r1, err1) != fmt.Sprint(ev2, r2, err2) {
			t.Fatalf("two parses differ: %v %q %v / %v %q %v", ev1, r1, err1, ev2, r2, err2)
		}
		if r1 != "" && r1 != "{}" {
			t.Fatalf("reply %q", r1)
		}
		for _, ev := range ev1 {
			if ev.kind > evBye {
				t.Fatalf("kind %d", ev.kind)
			}
		}
	})
}

// FuzzCentrifugoPush: a push that encoding/json writes reads back as
// encoding/json reads it, whatever the strings hold.
func FuzzCentrifugoPush(f *testing.F) {
	f.Add("r1", "u1", "away", int64(1796410577837463456), false)
	f.Add("r\"1", "a\\b", "\u00e9\U0001F600\n", int64(-5), true)
	f.Add("", "", "\xff", int64(0), false)
	f.Fuzz(func(t *testing.T, room, user, status string, ts int64, typing bool) {
		data := map[string]any{"u": user, "s": status, "ts": ts}
		if typing {
			data = map[string]any{"u": user, "typing": true, "ts": ts}
		}
		push := map[string]any{"push": map[string]any{"channel": room, "pub": map[string]any{
			"data": data, "info": map[string]string{"user": "other", "client": "c"}}}}
		msg, err := json.Marshal(push)
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			Push struct {
				Channel string
				Pub     struct{ Data struct{ U, S string } }
			}
		}
		if err := json.Unmarshal(msg, &back); err != nil {
			t.Fatal(err)
		}
		evs, _, err := collect(t, new(centrifugoProto), string(msg))
		if err != nil || len(evs) != 1 {
			t.Fatalf("Parse(%s): %v %v", msg, evs, err)
		}
		want := liveEvent{kind: evChange, room: back.Push.Channel, user: back.Push.Pub.Data.U, status: back.Push.Pub.Data.S, sentNs: ts}
		if typing {
			want = liveEvent{kind: evTyping, room: back.Push.Channel, user: back.Push.Pub.Data.U, sentNs: ts, on: true}
		}
		if !bytes.Equal([]byte(fmt.Sprint(evs[0])), []byte(fmt.Sprint(want))) {
			t.Fatalf("Parse(%s)\n got %+v\nwant %+v", msg, evs[0], want)
		}
	})
}
