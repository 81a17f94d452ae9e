package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// metaOfLen is a JSON object of exactly n bytes (n >= 8): {"k":"xx…"}.
func metaOfLen(n int) string {
	return `{"k":"` + strings.Repeat("x", n-8) + `"}`
}

func TestDecodeCommandValid(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want Command
	}{
		{
			name: "hello with token",
			msg:  `{"t":"hello","v":1,"token":"eyJh.eyJz.c2ln"}`,
			want: Command{T: THello, V: 1, Token: "eyJh.eyJz.c2ln"},
		},
		{
			name: "hello with user",
			msg:  `{"t":"hello","v":1,"user":"alice"}`,
			want: Command{T: THello, V: 1, User: "alice"},
		},
		{
			name: "hello with token and user",
			msg:  `{"t":"hello","v":1,"token":"tok","user":"alice"}`,
			want: Command{T: THello, V: 1, Token: "tok", User: "alice"},
		},
		{
			name: "hello with resume and state",
			msg: `{"t":"hello","v":1,"token":"tok","resume":{"chat:42":"1.2","lobby":""},` +
				`"state":{"status":"away","meta":{"name":"Alice"}}}`,
			want: Command{
				T: THello, V: 1, Token: "tok",
				Resume: map[string]string{"chat:42": "1.2", "lobby": ""},
				State:  &State{Status: "away", Meta: json.RawMessage(`{"name":"Alice"}`)},
			},
		},
		{
			// The version is the server's to check (close 4105), not the decoder's.
			name: "hello with another version",
			msg:  `{"t":"hello","v":2,"token":"tok"}`,
			want: Command{T: THello, V: 2, Token: "tok"},
		},
		{
			name: "hello without v",
			msg:  `{"t":"hello","token":"tok"}`,
			want: Command{T: THello, Token: "tok"},
		},
		{
			name: "join with state",
			msg:  `{"t":"join","id":1,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice"}}}`,
			want: Command{
				T: TJoin, ID: 1, Room: "chat:42",
				State: &State{Status: "online", Meta: json.RawMessage(`{"name":"Alice"}`)},
			},
		},
		{
			name: "join without state",
			msg:  `{"t":"join","id":1,"room":"chat:42"}`,
			want: Command{T: TJoin, ID: 1, Room: "chat:42"},
		},
		{
			name: "join with state null",
			msg:  `{"t":"join","id":1,"room":"chat:42","state":null}`,
			want: Command{T: TJoin, ID: 1, Room: "chat:42"},
		},
		{
			name: "join with meta null",
			msg:  `{"t":"join","id":1,"room":"r","state":{"status":"away","meta":null}}`,
			want: Command{T: TJoin, ID: 1, Room: "r", State: &State{Status: "away"}},
		},
		{
			name: "join with meta only",
			msg:  `{"t":"join","id":1,"room":"r","state":{"meta":{}}}`,
			want: Command{T: TJoin, ID: 1, Room: "r", State: &State{Meta: json.RawMessage(`{}`)}},
		},
		{
			name: "meta kept as sent",
			msg:  `{"t":"join","id":1,"room":"r","state":{"meta": { "a" : [1, 2] } }}`,
			want: Command{T: TJoin, ID: 1, Room: "r", State: &State{Meta: json.RawMessage(`{ "a" : [1, 2] }`)}},
		},
		{
			name: "meta of 512 bytes",
			msg:  `{"t":"join","id":1,"room":"r","state":{"meta":` + metaOfLen(512) + `}}`,
			want: Command{T: TJoin, ID: 1, Room: "r", State: &State{Meta: json.RawMessage(metaOfLen(512))}},
		},
		{
			name: "status of 32 bytes",
			msg:  `{"t":"set","id":3,"room":"r","state":{"status":"` + strings.Repeat("s", 32) + `"}}`,
			want: Command{T: TSet, ID: 3, Room: "r", State: &State{Status: strings.Repeat("s", 32)}},
		},
		{
			name: "leave",
			msg:  `{"t":"leave","id":2,"room":"chat:42"}`,
			want: Command{T: TLeave, ID: 2, Room: "chat:42"},
		},
		{
			name: "set",
			msg:  `{"t":"set","id":3,"room":"chat:42","state":{"status":"away"}}`,
			want: Command{T: TSet, ID: 3, Room: "chat:42", State: &State{Status: "away"}},
		},
		{
			name: "set with empty state",
			msg:  `{"t":"set","id":3,"room":"chat:42","state":{}}`,
			want: Command{T: TSet, ID: 3, Room: "chat:42", State: &State{}},
		},
		{
			name: "typing on",
			msg:  `{"t":"typing","room":"chat:42","on":true}`,
			want: Command{T: TTyping, Room: "chat:42", On: true},
		},
		{
			name: "typing off",
			msg:  `{"t":"typing","room":"chat:42","on":false}`,
			want: Command{T: TTyping, Room: "chat:42"},
		},
		{
			name: "typing without on",
			msg:  `{"t":"typing","room":"chat:42"}`,
			want: Command{T: TTyping, Room: "chat:42"},
		},
		{
			name: "sync",
			msg:  `{"t":"sync","id":4,"room":"chat:42"}`,
			want: Command{T: TSync, ID: 4, Room: "chat:42"},
		},
		{
			name: "auth",
			msg:  `{"t":"auth","id":5,"token":"new.jwt.sig"}`,
			want: Command{T: TAuth, ID: 5, Token: "new.jwt.sig"},
		},
		{
			name: "ping",
			msg:  `{"t":"ping","ts":123}`,
			want: Command{T: TPing, TS: 123},
		},
		{
			name: "pong",
			msg:  `{"t":"pong","ts":123}`,
			want: Command{T: TPong, TS: 123},
		},
		{
			name: "ping without ts",
			msg:  `{"t":"ping"}`,
			want: Command{T: TPing},
		},
		{
			name: "unknown fields ignored",
			msg:  `{"x":1,"t":"leave","id":2,"extra":{"a":[1,{"b":null}]},"room":"chat:42","zz":"q"}`,
			want: Command{T: TLeave, ID: 2, Room: "chat:42"},
		},
		{
			name: "whitespace around the message",
			msg:  " \n\t{ \"t\" : \"ping\" , \"ts\" : 7 }\r\n ",
			want: Command{T: TPing, TS: 7},
		},
		{
			name: "escaped strings",
			msg:  `{"t":"\u006aoin","id":1,"room":"chat\u003a42"}`,
			want: Command{T: TJoin, ID: 1, Room: "chat:42"},
		},
		{
			name: "room of 128 bytes with every allowed character",
			msg:  `{"t":"sync","id":9,"room":"` + id128 + `"}`,
			want: Command{T: TSync, ID: 9, Room: id128},
		},
		{
			name: "largest id",
			msg:  `{"t":"leave","id":9223372036854775807,"room":"r"}`,
			want: Command{T: TLeave, ID: 1<<63 - 1, Room: "r"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRequest(t, []byte(tt.msg))
			var c Command
			if err := DecodeCommand([]byte(tt.msg), &c); err != nil {
				t.Fatalf("DecodeCommand(%s): %v", tt.msg, err)
			}
			if !reflect.DeepEqual(c, tt.want) {
				t.Errorf("DecodeCommand(%s)\n got %s\nwant %s", tt.msg, fmtCommand(c), fmtCommand(tt.want))
			}
		})
	}
}

// id128 is a valid 128-byte id holding every allowed character.
var id128 = func() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@/-"
	return (alphabet + alphabet)[:128]
}()

func fmtCommand(c Command) string {
	s := fmt.Sprintf("%+v", c)
	if c.State != nil {
		s += fmt.Sprintf(" state=%+v meta=%q", *c.State, c.State.Meta)
	}
	return s
}

// errSyntax marks a case that wants ErrSyntax rather than an *Error.
const errSyntax = "syntax"

func TestDecodeCommandErrors(t *testing.T) {
	type errCase struct {
		name string
		msg  string
		want string // errSyntax or the *Error's code
	}
	tests := []errCase{
		{"not JSON", `hello`, errSyntax},
		{"empty", ``, errSyntax},
		{"only whitespace", " \n", errSyntax},
		{"truncated", `{"t":"join","id":1,"room":"chat`, errSyntax},
		{"truncated after the object opens", `{`, errSyntax},
		{"trailing garbage", `{"t":"ping"} x`, errSyntax},
		{"two objects", `{"t":"ping"}{"t":"ping"}`, errSyntax},
		{"single quotes", `{'t':'ping'}`, errSyntax},
		{"trailing comma", `{"t":"ping",}`, errSyntax},

		{"array", `[{"t":"ping"}]`, ErrCodeBadRequest},
		{"empty array", `[]`, ErrCodeBadRequest},
		{"string", `"ping"`, ErrCodeBadRequest},
		{"number", `42`, ErrCodeBadRequest},
		{"bool", `true`, ErrCodeBadRequest},
		{"null", `null`, ErrCodeBadRequest},
		{"empty object", `{}`, ErrCodeBadRequest},
		{"missing t", `{"id":1,"room":"r"}`, ErrCodeBadRequest},
		{"empty t", `{"t":"","id":1}`, ErrCodeBadRequest},
		{"t null", `{"t":null}`, ErrCodeBadRequest},
		{"unknown t", `{"t":"shout","id":1}`, ErrCodeBadRequest},
		{"server-only t", `{"t":"welcome"}`, ErrCodeBadRequest},
		{"t in upper case", `{"t":"PING"}`, ErrCodeBadRequest},
		{"t a number", `{"t":1}`, ErrCodeBadRequest},
		{"t an object", `{"t":{"x":"ping"}}`, ErrCodeBadRequest},
		{"t an array", `{"t":["ping"]}`, ErrCodeBadRequest},

		{"on a string", `{"t":"typing","room":"r","on":"yes"}`, ErrCodeBadRequest},
		{"room a number", `{"t":"join","id":1,"room":42}`, ErrCodeBadRequest},
		{"ts a string", `{"t":"ping","ts":"1"}`, ErrCodeBadRequest},
		{"state a string", `{"t":"join","id":1,"room":"r","state":"online"}`, ErrCodeBadRequest},
		{"status a number", `{"t":"join","id":1,"room":"r","state":{"status":1}}`, ErrCodeBadRequest},
		{"resume an array", `{"t":"hello","token":"x","resume":["r"]}`, ErrCodeBadRequest},
		{"resume cursor a number", `{"t":"hello","token":"x","resume":{"r":1}}`, ErrCodeBadRequest},

		{"hello without token and user", `{"t":"hello","v":1}`, ErrCodeBadRequest},
		{"hello with empty token", `{"t":"hello","v":1,"token":""}`, ErrCodeBadRequest},
		{"hello user with a space", `{"t":"hello","v":1,"user":"al ice"}`, ErrCodeBadRequest},
		{"hello user with #", `{"t":"hello","v":1,"user":"al#ice"}`, ErrCodeBadRequest},
		{"hello user with unicode", `{"t":"hello","v":1,"user":"alicé"}`, ErrCodeBadRequest},
		{"hello user too long", `{"t":"hello","v":1,"user":"` + strings.Repeat("u", 129) + `"}`, ErrCodeBadRequest},
		{"hello user bad next to a token", `{"t":"hello","v":1,"token":"x","user":"a b"}`, ErrCodeBadRequest},
		{"hello resume with a bad room", `{"t":"hello","v":1,"token":"x","resume":{"chat:42":"","bad room":""}}`, ErrCodeBadRequest},
		{"hello resume with an empty room", `{"t":"hello","v":1,"token":"x","resume":{"":""}}`, ErrCodeBadRequest},
		{"hello with a bad status", `{"t":"hello","v":1,"token":"x","state":{"status":"` + strings.Repeat("s", 33) + `"}}`, ErrCodeBadRequest},
		{"hello with a bad meta", `{"t":"hello","v":1,"token":"x","state":{"meta":[]}}`, ErrCodeBadRequest},

		{"set without state", `{"t":"set","id":3,"room":"r"}`, ErrCodeBadRequest},
		{"set with state null", `{"t":"set","id":3,"room":"r","state":null}`, ErrCodeBadRequest},
		{"status of 33 bytes", `{"t":"set","id":3,"room":"r","state":{"status":"` + strings.Repeat("s", 33) + `"}}`, ErrCodeBadRequest},
		{"meta of 513 bytes", `{"t":"join","id":1,"room":"r","state":{"meta":` + metaOfLen(513) + `}}`, ErrCodeTooLarge},
		{
			// "as sent": whitespace inside meta counts.
			name: "meta of 513 bytes with whitespace",
			msg:  `{"t":"join","id":1,"room":"r","state":{"meta":{ ` + metaOfLen(510)[1:509] + `  }}}`,
			want: ErrCodeTooLarge,
		},
		{"meta of 513 bytes on set", `{"t":"set","id":1,"room":"r","state":{"meta":` + metaOfLen(513) + `}}`, ErrCodeTooLarge},
		{"meta an array", `{"t":"join","id":1,"room":"r","state":{"meta":[1,2]}}`, ErrCodeBadRequest},
		{"meta a string", `{"t":"join","id":1,"room":"r","state":{"meta":"{}"}}`, ErrCodeBadRequest},
		{"meta a number", `{"t":"join","id":1,"room":"r","state":{"meta":5}}`, ErrCodeBadRequest},
		{"meta a bool", `{"t":"set","id":1,"room":"r","state":{"meta":false}}`, ErrCodeBadRequest},

		{"auth without token", `{"t":"auth","id":5}`, ErrCodeBadRequest},
		{"auth with empty token", `{"t":"auth","id":5,"token":""}`, ErrCodeBadRequest},
	}

	// Every command with an id, each with every bad id.
	withID := []struct{ t, format string }{
		{TJoin, `{"t":"join",%s"room":"r"}`},
		{TLeave, `{"t":"leave",%s"room":"r"}`},
		{TSet, `{"t":"set",%s"room":"r","state":{"status":"away"}}`},
		{TSync, `{"t":"sync",%s"room":"r"}`},
		{TAuth, `{"t":"auth",%s"token":"tok"}`},
	}
	badIDs := []struct{ name, field string }{
		{"missing", ``},
		{"null", `"id":null,`},
		{"zero", `"id":0,`},
		{"negative", `"id":-1,`},
		{"float", `"id":1.5,`},
		{"exponent", `"id":1e2,`},
		{"string", `"id":"1",`},
		{"too large", `"id":9223372036854775808,`},
		{"bool", `"id":true,`},
	}
	for _, c := range withID {
		for _, id := range badIDs {
			tests = append(tests, errCase{c.t + " id " + id.name, fmt.Sprintf(c.format, id.field), ErrCodeBadRequest})
		}
		// The same command with a good id is valid: the cases above test the id.
		tests = append(tests, errCase{c.t + " id valid", fmt.Sprintf(c.format, `"id":7,`), ""})
	}

	// Every command with a room, each with every bad room.
	withRoom := []struct{ t, format string }{
		{TJoin, `{"t":"join","id":1%s}`},
		{TLeave, `{"t":"leave","id":1%s}`},
		{TSet, `{"t":"set","id":1,"state":{}%s}`},
		{TSync, `{"t":"sync","id":1%s}`},
		{TTyping, `{"t":"typing","on":true%s}`},
	}
	badRooms := []struct{ name, field string }{
		{"missing", ``},
		{"null", `,"room":null`},
		{"empty", `,"room":""`},
		{"too long", `,"room":"` + strings.Repeat("r", 129) + `"`},
		{"with a space", `,"room":"chat 42"`},
		{"with unicode", `,"room":"chät"`},
		{"with escaped unicode", `,"room":"ch\u00e4t"`},
		{"with #", `,"room":"chat#42"`},
		{"with NUL", `,"room":"chat\u0000"`},
		{"with newline", `,"room":"chat\n"`},
		{"with +", `,"room":"a+b"`},
	}
	for _, c := range withRoom {
		for _, room := range badRooms {
			tests = append(tests, errCase{c.t + " room " + room.name, fmt.Sprintf(c.format, room.field), ErrCodeBadRequest})
		}
		tests = append(tests, errCase{c.t + " room valid", fmt.Sprintf(c.format, `,"room":"chat:42"`), ""})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRequest(t, []byte(tt.msg))
			var c Command
			err := DecodeCommand([]byte(tt.msg), &c)
			var werr *Error
			switch tt.want {
			case "":
				if err != nil {
					t.Fatalf("DecodeCommand(%s): %v, want nil", tt.msg, err)
				}
			case errSyntax:
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("DecodeCommand(%s): %v, want ErrSyntax", tt.msg, err)
				}
				if errors.As(err, &werr) {
					t.Fatalf("DecodeCommand(%s): ErrSyntax is also an *Error: %v", tt.msg, err)
				}
			default:
				if !errors.As(err, &werr) {
					t.Fatalf("DecodeCommand(%s): %v (%T), want an *Error", tt.msg, err, err)
				}
				if werr.Code != tt.want {
					t.Fatalf("DecodeCommand(%s): code %q (%v), want %q", tt.msg, werr.Code, err, tt.want)
				}
				if errors.Is(err, ErrSyntax) {
					t.Fatalf("DecodeCommand(%s): an *Error is also ErrSyntax: %v", tt.msg, err)
				}
				if werr.Msg == "" || !strings.Contains(err.Error(), werr.Code) {
					t.Errorf("Error() = %q, Msg = %q: want a message naming the code", err.Error(), werr.Msg)
				}
			}
		})
	}
}

// DecodeCommand resets the Command: nothing of a previous message leaks
// into the next one, whatever their fields.
func TestDecodeCommandResets(t *testing.T) {
	var c Command
	msgs := []string{
		`{"t":"hello","v":1,"token":"tok","resume":{"a":"1.1"},"state":{"status":"away","meta":{"x":1}}}`,
		`{"t":"join","id":1,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice"}}}`,
	}
	for _, msg := range msgs {
		if err := DecodeCommand([]byte(msg), &c); err != nil {
			t.Fatalf("DecodeCommand(%s): %v", msg, err)
		}
		if err := DecodeCommand([]byte(`{"t":"ping","ts":5}`), &c); err != nil {
			t.Fatalf("DecodeCommand(ping): %v", err)
		}
		if want := (Command{T: TPing, TS: 5}); !reflect.DeepEqual(c, want) {
			t.Errorf("after %s then ping: got %s, want %s", msg, fmtCommand(c), fmtCommand(want))
		}
		if c.Room != "" {
			t.Errorf("Room = %q after ping, want empty", c.Room)
		}
	}

	// A resumed map or a state of the previous message is not merged into.
	first := `{"t":"hello","token":"tok","resume":{"a":"1.1"},"state":{"status":"away","meta":{"x":1}}}`
	second := `{"t":"hello","token":"tok","resume":{"b":""},"state":{"meta":{"y":2}}}`
	if err := DecodeCommand([]byte(first), &c); err != nil {
		t.Fatal(err)
	}
	prevResume, prevState := c.Resume, c.State
	if err := DecodeCommand([]byte(second), &c); err != nil {
		t.Fatal(err)
	}
	want := Command{T: THello, Token: "tok", Resume: map[string]string{"b": ""}, State: &State{Meta: json.RawMessage(`{"y":2}`)}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %s, want %s", fmtCommand(c), fmtCommand(want))
	}
	if len(prevResume) != 1 || prevState.Status != "away" {
		t.Errorf("the previous command's map or state was modified: %v %+v", prevResume, *prevState)
	}

	// A failed decode resets too.
	if err := DecodeCommand([]byte(`{"t":"nope"`), &c); !errors.Is(err, ErrSyntax) {
		t.Fatalf("got %v, want ErrSyntax", err)
	}
	if !reflect.DeepEqual(c, Command{}) {
		t.Errorf("after a syntax error: %s, want the zero Command", fmtCommand(c))
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{"one byte", "a", true},
		{"digits", "0123456789", true},
		{"upper case", "ABCXYZ", true},
		{"room with colon", "chat:42", true},
		{"email-like", "alice@example.com", true},
		{"path-like", "org/team-1/room_2", true},
		{"every special", "._:@/-", true},
		{"128 bytes", strings.Repeat("a", 128), true},
		{"128 bytes of every allowed character", id128, true},
		{"empty", "", false},
		{"129 bytes", strings.Repeat("a", 129), false},
		{"space", "a b", false},
		{"leading space", " a", false},
		{"hash", "chat#1", false},
		{"plus", "a+b", false},
		{"percent", "a%20b", false},
		{"quote", `a"b`, false},
		{"backslash", `a\b`, false},
		{"comma", "a,b", false},
		{"NUL", "a\x00", false},
		{"newline", "a\n", false},
		{"DEL", "a\x7f", false},
		{"unicode", "alicé", false},
		{"invalid UTF-8", "a\xff", false},
		{"fullwidth letter", "ａ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidID(tt.id); got != tt.want {
				t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestCompactMeta(t *testing.T) {
	tests := []struct {
		name string
		meta json.RawMessage
		want []byte // nil means nil
	}{
		{"nil", nil, nil},
		{"empty", json.RawMessage{}, nil},
		{"null", json.RawMessage(`null`), nil},
		{"empty object", json.RawMessage(`{}`), []byte(`{}`)},
		{"empty object with spaces", json.RawMessage(`{ }`), []byte(`{}`)},
		{"compact already", json.RawMessage(`{"name":"Alice"}`), []byte(`{"name":"Alice"}`)},
		{
			name: "whitespace removed",
			meta: json.RawMessage("{ \"a\" :\t[1, 2,\n3],\r\n \"b\" : {\"c\" : null} }"),
			want: []byte(`{"a":[1,2,3],"b":{"c":null}}`),
		},
		{
			name: "whitespace in strings kept",
			meta: json.RawMessage(`{ "a b" : " x  y " }`),
			want: []byte(`{"a b":" x  y "}`),
		},
		{
			name: "escapes kept as sent",
			meta: json.RawMessage(`{"h": "<b>&amp;\u2028\"\\"}`),
			want: []byte(`{"h":"<b>&amp;\u2028\"\\"}`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append(json.RawMessage(nil), tt.meta...)
			got := CompactMeta(in)
			if app := AppendCompactMeta(nil, in); string(app) != string(got) {
				t.Errorf("AppendCompactMeta(%q) = %q, CompactMeta %q", in, app, got)
			}
			if tt.want == nil {
				if got != nil {
					t.Fatalf("CompactMeta(%q) = %q, want nil", tt.meta, got)
				}
				return
			}
			if string(got) != string(tt.want) {
				t.Fatalf("CompactMeta(%q) = %q, want %q", tt.meta, got, tt.want)
			}
			// The result is a new slice: changing it leaves meta alone.
			for i := range got {
				got[i] = 'X'
			}
			if string(in) != string(tt.meta) {
				t.Errorf("CompactMeta's result aliases its argument: meta now %q", in)
			}
		})
	}
}

// A meta accepted by DecodeCommand compacts to a valid JSON object no
// longer than the one sent.
func TestCompactMetaOfDecodedCommand(t *testing.T) {
	msg := `{"t":"join","id":1,"room":"r","state":{"meta": {  "name" : "Alice",  "tags" : [ "a" , "b" ] } }}`
	var c Command
	if err := DecodeCommand([]byte(msg), &c); err != nil {
		t.Fatal(err)
	}
	got := CompactMeta(c.State.Meta)
	if want := `{"name":"Alice","tags":["a","b"]}`; string(got) != want {
		t.Fatalf("CompactMeta = %q, want %q", got, want)
	}
	if !json.Valid(got) || len(got) > len(c.State.Meta) {
		t.Errorf("CompactMeta = %q: invalid or longer than %q", got, c.State.Meta)
	}
}
