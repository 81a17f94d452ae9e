package wire

import (
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// tricky holds every character AppendString escapes or must keep.
const tricky = "q\"b\\s/\x00\x1f\x7f\n\r\t\u2028\u2029é€😀<>&"

// fullSync is a sync of three members (meta nil, an object, nil again)
// with one user typing.
func fullSync(dst []byte) []byte {
	dst = AppendSyncStart(dst, "chat:42", Cursor{Epoch: 7, Seq: 42}, 3)
	dst = AppendMember(dst, "alice", "online", "")
	dst = AppendMember(dst, "bob", "away", []byte(`{"name":"Bob","tags":["a","b"]}`))
	dst = AppendMember(dst, tricky, tricky, []byte{})
	return AppendSyncEnd(dst, []string{"bob"}, true)
}

var fullSyncEvent = Event{
	T: TSync, Room: "chat:42", Cur: "7.16", Count: 3,
	Members: []Member{
		{U: "alice", S: "online", M: json.RawMessage(`{}`)},
		{U: "bob", S: "away", M: json.RawMessage(`{"name":"Bob","tags":["a","b"]}`)},
		{U: tricky, S: tricky, M: json.RawMessage(`{}`)},
	},
	Typing:  &[]string{"bob"},
	Partial: true,
}

// fullDiff is a diff with join, update and leave lists and the typing set
// typing (none when typing is nil, [] when it is empty).
func fullDiff(dst []byte, typing []string) []byte {
	dst = AppendDiffStart(dst, "chat:42", Cursor{Epoch: 7, Seq: 42}, Cursor{Epoch: 7, Seq: 43}, 4)
	dst = AppendListStart(dst, "join")
	dst = AppendMember(dst, "carol", "online", "")
	dst = AppendMember(dst, "dave", "online", []byte(`{"n":1}`))
	dst = AppendListEnd(dst)
	dst = AppendListStart(dst, "update")
	dst = AppendMember(dst, "alice", "away", []byte(`{"name":"Alice"}`))
	dst = AppendListEnd(dst)
	dst = AppendListStart(dst, "leave")
	dst = AppendListString(dst, "bob")
	dst = AppendListString(dst, tricky)
	dst = AppendListEnd(dst)
	if typing != nil {
		dst = AppendStrings(dst, "typing", typing)
	}
	return AppendEnd(dst)
}

func fullDiffEvent(typing *[]string) Event {
	return Event{
		T: TDiff, Room: "chat:42", From: "7.16", Cur: "7.17", Count: 4,
		Join: []Member{
			{U: "carol", S: "online", M: json.RawMessage(`{}`)},
			{U: "dave", S: "online", M: json.RawMessage(`{"n":1}`)},
		},
		Update: []Member{{U: "alice", S: "away", M: json.RawMessage(`{"name":"Alice"}`)}},
		Leave:  []string{"bob", tricky},
		Typing: typing,
	}
}

// Every server encoder writes one valid JSON message that DecodeEvent reads
// back to the values encoded, and appends to dst without touching what it
// holds.
func TestServerEncodersRoundTrip(t *testing.T) {
	maxCur := Cursor{Epoch: math.MaxUint32, Seq: math.MaxUint64}
	tests := []struct {
		name string
		enc  func(dst []byte) []byte
		want Event
	}{
		{
			name: "welcome",
			enc:  func(b []byte) []byte { return AppendWelcome(b, "node-1", "c-9", "alice", 25000, 4096) },
			want: Event{T: TWelcome, V: Version, Node: "node-1", Conn: "c-9", User: "alice", HB: 25000, Max: 4096},
		},
		{
			name: "welcome escaped",
			enc:  func(b []byte) []byte { return AppendWelcome(b, tricky, tricky, tricky, math.MaxInt64, math.MaxInt32) },
			want: Event{T: TWelcome, V: Version, Node: tricky, Conn: tricky, User: tricky, HB: math.MaxInt64, Max: math.MaxInt32},
		},
		{
			name: "ack",
			enc:  func(b []byte) []byte { return AppendAck(b, 1) },
			want: Event{T: TAck, ID: 1},
		},
		{
			name: "ack of the largest id",
			enc:  func(b []byte) []byte { return AppendAck(b, math.MaxInt64) },
			want: Event{T: TAck, ID: math.MaxInt64},
		},
		{
			name: "err with id",
			enc:  func(b []byte) []byte { return AppendErr(b, 3, ErrCodeNotJoined, "room chat:42 is not joined") },
			want: Event{T: TErr, ID: 3, Code: ErrCodeNotJoined, Msg: "room chat:42 is not joined"},
		},
		{
			name: "err without id",
			enc:  func(b []byte) []byte { return AppendErr(b, 0, ErrCodeBadRequest, tricky) },
			want: Event{T: TErr, Code: ErrCodeBadRequest, Msg: tricky},
		},
		{
			name: "err with a negative id",
			enc:  func(b []byte) []byte { return AppendErr(b, -1, ErrCodeInternal, "") },
			want: Event{T: TErr, Code: ErrCodeInternal},
		},
		{
			name: "ping",
			enc:  func(b []byte) []byte { return AppendPing(b, 1700000000123) },
			want: Event{T: TPing, TS: 1700000000123},
		},
		{
			name: "ping with extreme ts",
			enc:  func(b []byte) []byte { return AppendPing(b, math.MinInt64) },
			want: Event{T: TPing, TS: math.MinInt64},
		},
		{
			name: "pong",
			enc:  func(b []byte) []byte { return AppendPong(b, 123) },
			want: Event{T: TPong, TS: 123},
		},
		{
			name: "refresh",
			enc:  func(b []byte) []byte { return AppendRefresh(b, 1700000060) },
			want: Event{T: TRefresh, Exp: 1700000060},
		},
		{
			name: "bye",
			enc:  func(b []byte) []byte { return AppendBye(b, "draining", 2500) },
			want: Event{T: TBye, Reason: "draining", RetryMS: 2500},
		},
		{
			name: "bye escaped",
			enc:  func(b []byte) []byte { return AppendBye(b, tricky, 0) },
			want: Event{T: TBye, Reason: tricky},
		},
		{
			name: "full sync",
			enc:  fullSync,
			want: fullSyncEvent,
		},
		{
			name: "empty sync",
			enc: func(b []byte) []byte {
				return AppendSyncEnd(AppendSyncStart(b, "lobby", Cursor{}, 0), nil, false)
			},
			want: Event{T: TSync, Room: "lobby", Cur: "0.0", Members: []Member{}, Typing: &[]string{}},
		},
		{
			name: "partial sync with the largest cursor",
			enc: func(b []byte) []byte {
				b = AppendSyncStart(b, "big", maxCur, 5000)
				b = AppendMember(b, "u1", "online", "")
				return AppendSyncEnd(b, []string{"u1", "u2"}, true)
			},
			want: Event{
				T: TSync, Room: "big", Cur: "1z141z3.3w5e11264sgsf", Count: 5000,
				Members: []Member{{U: "u1", S: "online", M: json.RawMessage(`{}`)}},
				Typing:  &[]string{"u1", "u2"}, Partial: true,
			},
		},
		{
			name: "full diff",
			enc:  func(b []byte) []byte { return fullDiff(b, []string{"carol", "dave"}) },
			want: fullDiffEvent(&[]string{"carol", "dave"}),
		},
		{
			name: "diff with an empty typing set",
			enc:  func(b []byte) []byte { return fullDiff(b, []string{}) },
			want: fullDiffEvent(&[]string{}),
		},
		{
			name: "diff without typing",
			enc:  func(b []byte) []byte { return fullDiff(b, nil) },
			want: fullDiffEvent(nil),
		},
		{
			name: "diff of a large room",
			enc: func(b []byte) []byte {
				b = AppendDiffStart(b, "big", Cursor{Epoch: 1, Seq: 35}, Cursor{Epoch: 1, Seq: 36}, 1001)
				return AppendEnd(b)
			},
			want: Event{T: TDiff, Room: "big", From: "1.z", Cur: "1.10", Count: 1001},
		},
		{
			name: "diff with empty lists",
			enc: func(b []byte) []byte {
				b = AppendDiffStart(b, "r", Cursor{}, Cursor{Seq: 1}, 0)
				b = AppendListEnd(AppendListStart(b, "join"))
				b = AppendListEnd(AppendListStart(b, "leave"))
				return AppendEnd(b)
			},
			want: Event{T: TDiff, Room: "r", From: "0.0", Cur: "0.1", Join: []Member{}, Leave: []string{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.enc(nil)
			if !json.Valid(msg) {
				t.Fatalf("not valid JSON: %s", msg)
			}
			if !utf8.Valid(msg) {
				t.Fatalf("not valid UTF-8: %q", msg)
			}
			var e Event
			if err := DecodeEvent(msg, &e); err != nil {
				t.Fatalf("DecodeEvent(%s): %v", msg, err)
			}
			if !reflect.DeepEqual(e, tt.want) {
				t.Errorf("DecodeEvent(%s)\n got %+v\nwant %+v", msg, e, tt.want)
			}
			checkAppends(t, tt.enc, msg)
		})
	}
}

// checkAppends fails t unless enc appends exactly msg to a buffer that
// already holds bytes, and to one with spare capacity.
func checkAppends(t *testing.T, enc func([]byte) []byte, msg []byte) {
	t.Helper()
	const prefix = `{"x":[`
	got := enc([]byte(prefix))
	if string(got) != prefix+string(msg) {
		t.Errorf("appended to %q: got %q, want %q", prefix, got, prefix+string(msg))
	}
	buf := make([]byte, 3, 8192)
	copy(buf, "abc")
	got = enc(buf)
	if string(got) != "abc"+string(msg) || &got[0] != &buf[0] {
		t.Errorf("appended to a buffer with room: got %q (same array: %v)", got, &got[0] == &buf[0])
	}
}

// The typing field of a diff is a non-nil empty list when nobody types any
// more, and absent (nil) when the set did not change.
func TestDiffTyping(t *testing.T) {
	var e Event
	if err := DecodeEvent(fullDiff(nil, []string{}), &e); err != nil {
		t.Fatal(err)
	}
	if e.Typing == nil || *e.Typing == nil || len(*e.Typing) != 0 {
		t.Errorf("typing [] decoded as %#v, want a non-nil empty list", e.Typing)
	}
	if err := DecodeEvent(fullDiff(nil, nil), &e); err != nil {
		t.Fatal(err)
	}
	if e.Typing != nil {
		t.Errorf("diff without typing: Typing = %#v, want nil", e.Typing)
	}
	if msg := fullDiff(nil, nil); strings.Contains(string(msg), "typing") {
		t.Errorf("diff without typing mentions it: %s", msg)
	}
}

// The exact bytes of the documented shapes (docs/protocol.md).
func TestServerEncodersExact(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"ack", AppendAck(nil, 1), `{"t":"ack","id":1}`},
		{"err", AppendErr(nil, 3, ErrCodeNotJoined, "human readable"), `{"t":"err","id":3,"code":"not_joined","msg":"human readable"}`},
		{"err without id", AppendErr(nil, 0, ErrCodeBadRequest, "x"), `{"t":"err","code":"bad_request","msg":"x"}`},
		{"ping", AppendPing(nil, 123), `{"t":"ping","ts":123}`},
		{"pong", AppendPong(nil, 123), `{"t":"pong","ts":123}`},
		{"refresh", AppendRefresh(nil, 99), `{"t":"refresh","exp":99}`},
		{"bye", AppendBye(nil, "draining", 1500), `{"t":"bye","reason":"draining","retry_ms":1500}`},
		{"welcome", AppendWelcome(nil, "n1", "c1", "alice", 25000, 4096), `{"t":"welcome","v":1,"node":"n1","conn":"c1","user":"alice","hb":25000,"max":4096}`},
		{
			"sync", AppendSyncEnd(AppendMember(AppendSyncStart(nil, "chat:42", Cursor{Epoch: 1, Seq: 2}, 1), "alice", "online", []byte(`{"name":"Alice"}`)), []string{"bob"}, false),
			`{"t":"sync","room":"chat:42","cur":"1.2","count":1,"members":[{"u":"alice","s":"online","m":{"name":"Alice"}}],"typing":["bob"],"partial":false}`,
		},
		{
			"diff", fullDiff(nil, []string{"carol"}),
			`{"t":"diff","room":"chat:42","from":"7.16","cur":"7.17","count":4,` +
				`"join":[{"u":"carol","s":"online","m":{}},{"u":"dave","s":"online","m":{"n":1}}],` +
				`"update":[{"u":"alice","s":"away","m":{"name":"Alice"}}],` +
				`"leave":["bob","q\"b\\s/\u0000\u001f` + "\x7f" + `\n\r\t\u2028\u2029é€😀<>&"],"typing":["carol"]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if string(tt.got) != tt.want {
				t.Errorf("got  %s\nwant %s", tt.got, tt.want)
			}
		})
	}
}

// Every client encoder writes one valid JSON message that DecodeCommand
// accepts and reads back to the values encoded.
func TestClientEncodersRoundTrip(t *testing.T) {
	meta := json.RawMessage(`{"name":"Alice","n":[1,2]}`)
	tests := []struct {
		name string
		enc  func(dst []byte) []byte
		want Command
	}{
		{
			name: "join without state",
			enc:  func(b []byte) []byte { return AppendJoin(b, 1, "chat:42", nil) },
			want: Command{T: TJoin, ID: 1, Room: "chat:42"},
		},
		{
			name: "join with state",
			enc:  func(b []byte) []byte { return AppendJoin(b, 1, "chat:42", &State{Status: "online", Meta: meta}) },
			want: Command{T: TJoin, ID: 1, Room: "chat:42", State: &State{Status: "online", Meta: meta}},
		},
		{
			name: "join with meta only",
			enc:  func(b []byte) []byte { return AppendJoin(b, 2, "r", &State{Meta: meta}) },
			want: Command{T: TJoin, ID: 2, Room: "r", State: &State{Meta: meta}},
		},
		{
			name: "join with status only",
			enc:  func(b []byte) []byte { return AppendJoin(b, 2, "r", &State{Status: tricky[:20]}) },
			want: Command{T: TJoin, ID: 2, Room: "r", State: &State{Status: tricky[:20]}},
		},
		{
			name: "join with an empty state",
			enc:  func(b []byte) []byte { return AppendJoin(b, 2, "r", &State{}) },
			want: Command{T: TJoin, ID: 2, Room: "r", State: &State{}},
		},
		{
			name: "leave",
			enc:  func(b []byte) []byte { return AppendLeave(b, 2, "chat:42") },
			want: Command{T: TLeave, ID: 2, Room: "chat:42"},
		},
		{
			name: "set",
			enc:  func(b []byte) []byte { return AppendSet(b, 3, "chat:42", State{Status: "away"}) },
			want: Command{T: TSet, ID: 3, Room: "chat:42", State: &State{Status: "away"}},
		},
		{
			name: "set with meta",
			enc: func(b []byte) []byte {
				return AppendSet(b, math.MaxInt64, "chat:42", State{Status: "away", Meta: meta})
			},
			want: Command{T: TSet, ID: math.MaxInt64, Room: "chat:42", State: &State{Status: "away", Meta: meta}},
		},
		{
			name: "set with an empty state",
			enc:  func(b []byte) []byte { return AppendSet(b, 3, "r", State{}) },
			want: Command{T: TSet, ID: 3, Room: "r", State: &State{}},
		},
		{
			name: "sync",
			enc:  func(b []byte) []byte { return AppendSyncRequest(b, 4, "chat:42") },
			want: Command{T: TSync, ID: 4, Room: "chat:42"},
		},
		{
			name: "typing on",
			enc:  func(b []byte) []byte { return AppendTyping(b, "chat:42", true) },
			want: Command{T: TTyping, Room: "chat:42", On: true},
		},
		{
			name: "typing off",
			enc:  func(b []byte) []byte { return AppendTyping(b, "chat:42", false) },
			want: Command{T: TTyping, Room: "chat:42"},
		},
		{
			name: "auth",
			enc:  func(b []byte) []byte { return AppendAuth(b, 5, "eyJh.eyJz.c2ln") },
			want: Command{T: TAuth, ID: 5, Token: "eyJh.eyJz.c2ln"},
		},
		{
			name: "auth with an escaped token",
			enc:  func(b []byte) []byte { return AppendAuth(b, 5, tricky) },
			want: Command{T: TAuth, ID: 5, Token: tricky},
		},
		{
			name: "ping",
			enc:  func(b []byte) []byte { return AppendPing(b, 123) },
			want: Command{T: TPing, TS: 123},
		},
		{
			name: "pong",
			enc:  func(b []byte) []byte { return AppendPong(b, 123) },
			want: Command{T: TPong, TS: 123},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.enc(nil)
			if !json.Valid(msg) {
				t.Fatalf("not valid JSON: %s", msg)
			}
			var c Command
			if err := DecodeCommand(msg, &c); err != nil {
				t.Fatalf("DecodeCommand(%s): %v", msg, err)
			}
			if !reflect.DeepEqual(c, tt.want) {
				t.Errorf("DecodeCommand(%s)\n got %s\nwant %s", msg, fmtCommand(c), fmtCommand(tt.want))
			}
			checkAppends(t, tt.enc, msg)
		})
	}
}

func TestMarshalHelloRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		hello Hello
		want  Command
	}{
		{
			name:  "token",
			hello: Hello{Token: "eyJh.eyJz.c2ln"},
			want:  Command{T: THello, V: Version, Token: "eyJh.eyJz.c2ln"},
		},
		{
			name:  "user",
			hello: Hello{User: "alice"},
			want:  Command{T: THello, V: Version, User: "alice"},
		},
		{
			name: "resume and state",
			hello: Hello{
				Token:  "tok<&>",
				Resume: map[string]string{"chat:42": "7.16", "lobby": ""},
				State:  &State{Status: "away", Meta: json.RawMessage(`{"name":"Alice"}`)},
			},
			want: Command{
				T: THello, V: Version, Token: "tok<&>",
				Resume: map[string]string{"chat:42": "7.16", "lobby": ""},
				State:  &State{Status: "away", Meta: json.RawMessage(`{"name":"Alice"}`)},
			},
		},
		{
			name:  "empty resume is omitted",
			hello: Hello{Token: "tok", Resume: map[string]string{}},
			want:  Command{T: THello, V: Version, Token: "tok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := MarshalHello(tt.hello)
			if err != nil {
				t.Fatalf("MarshalHello: %v", err)
			}
			if !json.Valid(msg) {
				t.Fatalf("not valid JSON: %s", msg)
			}
			var c Command
			if err := DecodeCommand(msg, &c); err != nil {
				t.Fatalf("DecodeCommand(%s): %v", msg, err)
			}
			if !reflect.DeepEqual(c, tt.want) {
				t.Errorf("DecodeCommand(%s)\n got %s\nwant %s", msg, fmtCommand(c), fmtCommand(tt.want))
			}
		})
	}

	if _, err := MarshalHello(Hello{Token: "t", State: &State{Meta: json.RawMessage(`{`)}}); err == nil {
		t.Error("MarshalHello with an invalid meta: nil error")
	}
}

// replaceInvalid is s with each byte that is not part of valid UTF-8
// replaced by U+FFFD, one per byte, as encoding/json does on both Marshal
// and Unmarshal. (strings.ToValidUTF8 differs: it replaces a whole run of
// invalid bytes with a single U+FFFD.)
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		name string
		in   string
		json string // the exact encoding
		want string // what json.Unmarshal reads back
	}{
		{"empty", "", `""`, ""},
		{"plain", "chat:42", `"chat:42"`, "chat:42"},
		{"quote", `a"b`, `"a\"b"`, `a"b`},
		{"backslash", `a\b`, `"a\\b"`, `a\b`},
		{"slash kept", "a/b", `"a/b"`, "a/b"},
		{"NUL", "a\x00b", `"a\u0000b"`, "a\x00b"},
		{"unit separator", "\x1f", `"\u001f"`, "\x1f"},
		{"backspace and form feed", "\b\f", `"\u0008\u000c"`, "\b\f"},
		{"escape char", "\x1b[0m", `"\u001b[0m"`, "\x1b[0m"},
		{"newline", "a\nb", `"a\nb"`, "a\nb"},
		{"carriage return", "a\rb", `"a\rb"`, "a\rb"},
		{"tab", "a\tb", `"a\tb"`, "a\tb"},
		{"DEL kept", "\x7f", "\"\x7f\"", "\x7f"},
		{"space kept", " ", `" "`, " "},
		{"HTML kept", "<a&b>", `"<a&b>"`, "<a&b>"},
		{"line separator", "a\u2028b", `"a\u2028b"`, "a\u2028b"},
		{"paragraph separator", "a\u2029b", `"a\u2029b"`, "a\u2029b"},
		{"two-byte UTF-8 kept", "é", `"é"`, "é"},
		{"three-byte UTF-8 kept", "€✓", `"€✓"`, "€✓"},
		{"four-byte UTF-8 kept", "😀", `"😀"`, "😀"},
		{"U+FFFD kept", "\uFFFD", "\"\uFFFD\"", "\uFFFD"},
		{"U+2027 kept", "\u2027", "\"\u2027\"", "\u2027"},
		{"invalid byte", "a\xffb", `"a\ufffdb"`, "a\uFFFDb"},
		{"invalid bytes one each", "\xff\xfe", `"\ufffd\ufffd"`, "\uFFFD\uFFFD"},
		{"continuation byte", "\x80", `"\ufffd"`, "\uFFFD"},
		{"truncated rune", "a\xe2\x82", `"a\ufffd\ufffd"`, "a\uFFFD\uFFFD"},
		{"truncated rune at the start", "\xe2\x82a", `"\ufffd\ufffda"`, "\uFFFD\uFFFDa"},
		{"surrogate half", "\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`, "\uFFFD\uFFFD\uFFFD"},
		{"overlong encoding", "\xc0\xaf", `"\ufffd\ufffd"`, "\uFFFD\uFFFD"},
		{"beyond U+10FFFF", "\xf4\x90\x80\x80", `"\ufffd\ufffd\ufffd\ufffd"`, "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"everything", tricky, `"q\"b\\s/\u0000\u001f` + "\x7f" + `\n\r\t\u2028\u2029é€😀<>&"`, tricky},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendString(nil, tt.in)
			if string(got) != tt.json {
				t.Errorf("AppendString(%q) = %s, want %s", tt.in, got, tt.json)
			}
			if !json.Valid(got) {
				t.Fatalf("AppendString(%q) = %s: not valid JSON", tt.in, got)
			}
			var s string
			if err := json.Unmarshal(got, &s); err != nil {
				t.Fatalf("json.Unmarshal(%s): %v", got, err)
			}
			if s != tt.want {
				t.Errorf("AppendString(%q) reads back as %q, want %q", tt.in, s, tt.want)
			}
			if r := replaceInvalid(tt.in); s != r {
				t.Errorf("reads back as %q, want %q (replaceInvalid)", s, r)
			}
			if got := AppendString([]byte("x"), tt.in); string(got) != "x"+tt.json {
				t.Errorf("appended to %q: %q", "x", got)
			}
		})
	}
}

func TestCursorRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    Cursor
		text string
	}{
		{"zero", Cursor{}, "0.0"},
		{"small", Cursor{Epoch: 1, Seq: 35}, "1.z"},
		{"base 36", Cursor{Epoch: 36, Seq: 36*36 + 1}, "10.101"},
		{"max epoch", Cursor{Epoch: math.MaxUint32}, "1z141z3.0"},
		{"max seq", Cursor{Seq: math.MaxUint64}, "0.3w5e11264sgsf"},
		{"max both", Cursor{Epoch: math.MaxUint32, Seq: math.MaxUint64}, "1z141z3.3w5e11264sgsf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendCursor(nil, tt.c)); got != tt.text {
				t.Errorf("AppendCursor(%+v) = %q, want %q", tt.c, got, tt.text)
			}
			if got := tt.c.String(); got != tt.text {
				t.Errorf("String() = %q, want %q", got, tt.text)
			}
			if got := string(AppendCursor([]byte(`"`), tt.c)); got != `"`+tt.text {
				t.Errorf("AppendCursor after a prefix = %q", got)
			}
			c, ok := ParseCursor(tt.text)
			if !ok || c != tt.c {
				t.Errorf("ParseCursor(%q) = %+v, %v; want %+v, true", tt.text, c, ok, tt.c)
			}
		})
	}
}

func TestParseCursorRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"dot only", "."},
		{"no seq", "a."},
		{"no epoch", ".b"},
		{"no dot", "1a"},
		{"two dots", "x.y.z"},
		{"two dots of digits", "1.2.3"},
		{"trailing dot", "1.2."},
		{"double dot", "1..2"},
		{"bad char in epoch", "1!.2"},
		{"bad char in seq", "1.2#"},
		{"dash", "1-2"},
		{"negative seq", "1.-2"},
		{"plus sign", "+1.2"},
		{"underscore", "1_0.2"},
		{"space", "1. 2"},
		{"leading space", " 1.2"},
		{"trailing space", "1.2 "},
		{"unicode", "é.1"},
		{"invalid UTF-8", "1.\xff"},
		{"epoch overflows uint32", "1z141z4.0"},
		{"seq overflows uint64", "0.3w5e11264sgsg"},
		{"too long", "0." + strings.Repeat("0", 31)},
		{"far too long", strings.Repeat("1", 100) + "." + strings.Repeat("1", 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, ok := ParseCursor(tt.in); ok {
				t.Errorf("ParseCursor(%q) = %+v, true; want false", tt.in, c)
			}
		})
	}
}

func TestReconnect(t *testing.T) {
	tests := []struct {
		code CloseCode
		want bool
	}{
		{CloseNormal, false},
		{CloseGoingAway, true},
		{CloseProtocolError, false},
		{CloseUnsupported, false},
		{CloseInvalidPayload, false},
		{CloseTooBig, false},
		{CloseHeartbeat, true},
		{CloseSlowConsumer, true},
		{CloseTokenExpired, true},
		{CloseHelloTimeout, true},
		{CloseRateLimited, true},
		{CloseBadRequest, false},
		{CloseUnauthorized, false},
		{CloseForbidden, false},
		{CloseVersion, false},
		// Codes the contract does not name.
		{1006, true}, // abnormal closure: the connection was lost
		{1011, true}, // internal server error
		{4000, true},
		{4099, true},
		{4100, false},
		{4199, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(int(tt.code)), func(t *testing.T) {
			if got := Reconnect(tt.code); got != tt.want {
				t.Errorf("Reconnect(%d) = %v, want %v", tt.code, got, tt.want)
			}
		})
	}
}

func TestCloseCodeString(t *testing.T) {
	tests := []struct {
		code CloseCode
		want string
	}{
		{CloseNormal, "normal"},
		{CloseGoingAway, "going_away"},
		{CloseProtocolError, "protocol_error"},
		{CloseUnsupported, "binary_frame"},
		{CloseInvalidPayload, "invalid_payload"},
		{CloseTooBig, "too_big"},
		{CloseHeartbeat, "heartbeat_timeout"},
		{CloseSlowConsumer, "slow_consumer"},
		{CloseTokenExpired, "token_expired"},
		{CloseHelloTimeout, "hello_timeout"},
		{CloseRateLimited, "rate_limited"},
		{CloseBadRequest, "bad_request"},
		{CloseUnauthorized, "unauthorized"},
		{CloseForbidden, "forbidden"},
		{CloseVersion, "unsupported_version"},
		{0, "other"},
		{1006, "other"},
		{4000, "other"},
	}
	seen := make(map[string]CloseCode)
	for _, tt := range tests {
		got := tt.code.String()
		if got != tt.want {
			t.Errorf("CloseCode(%d).String() = %q, want %q", tt.code, got, tt.want)
		}
		if prev, dup := seen[got]; dup && got != "other" {
			t.Errorf("codes %d and %d are both named %q", prev, tt.code, got)
		}
		seen[got] = tt.code
	}
}
