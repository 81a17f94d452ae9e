package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// contractCommands are the client messages of docs/protocol.md.
var contractCommands = []string{
	`{"t":"hello","v":1,"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"}`,
	`{"t":"hello","v":1,"user":"alice"}`,
	`{"t":"hello","v":1,"token":"tok","resume":{"chat:42":"7.16","lobby":""},"state":{"status":"online","meta":{"name":"Alice"}}}`,
	`{"t":"join","id":1,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice"}}}`,
	`{"t":"join","id":1,"room":"chat:42"}`,
	`{"t":"leave","id":2,"room":"chat:42"}`,
	`{"t":"set","id":3,"room":"chat:42","state":{"status":"away"}}`,
	`{"t":"typing","room":"chat:42","on":true}`,
	`{"t":"typing","room":"chat:42","on":false}`,
	`{"t":"sync","id":4,"room":"chat:42"}`,
	`{"t":"auth","id":5,"token":"new.jwt.sig"}`,
	`{"t":"ping","ts":123}`,
	`{"t":"pong","ts":123}`,
}

// FuzzDecodeCommand checks that DecodeCommand never panics, tells JSON
// syntax errors (ErrSyntax) from invalid commands (*Error with a contract
// code), and that a command it accepts survives a round trip through
// encoding/json unchanged.
func FuzzDecodeCommand(f *testing.F) {
	for _, msg := range contractCommands {
		f.Add([]byte(msg))
		// A message split across reads: every piece is a seed of its own.
		for _, at := range []int{1, 2, len(msg) / 3, len(msg) / 2, 2 * len(msg) / 3, len(msg) - 2, len(msg) - 1} {
			f.Add([]byte(msg[:at]))
			f.Add([]byte(msg[at:]))
		}
	}
	for _, msg := range []string{
		``, ` `, `{`, `}`, `[`, `[]`, `{}`, `null`, `"ping"`, `42`, `true`,
		`{"t":`, `{"t":"`, `{"t":1}`, `{"t":"shout"}`, `{"t":"ping"}{"t":"ping"}`,
		"\xff\xfe\xfd", "{\"t\":\"ping\",\"x\":\"\xff\"}", `{"t":"join","id":1e309,"room":"r"}`,
		`{"t":"join","id":-1,"room":"r"}`, `{"t":"join","id":1,"room":"a b"}`,
		`{"T":"JOIN","ID":1,"ROOM":"r"}`, `{"t":"join","id":1,"room":"r","Room":"s"}`,
		`{"t":"set","id":1,"room":"r","state":{"meta":null}}`,
		`{"t":"set","id":1,"room":"r","state":{"meta": { "a" : "<&>\u2028" } }}`,
		`{"t":"set","id":1,"room":"r","state":{"meta":` + metaOfLen(513) + `}}`,
		`{"t":"hello","token":"x","resume":{}}`,
		`{"t":"hello","token":"x","resume":{"a":null},"resume":{"b":"1.1"}}`,
		`{"t":"join","id":1,"room":"r","state":{"status":"a"},"state":{"meta":{}}}`,
		strings.Repeat("[", 5000) + strings.Repeat("]", 5000),
		`{"t":"ping","ts":12345678901234567890}`,
		// The fast path of DecodeRequest at its edges.
		`{"T":"leave","ID":2,"Room":"chat:42"}`, `{"t":"ping","ts":-9223372036854775808}`,
		`{"t":"ping","ts":9223372036854775807}`, `{"t":"ping","ts":-0}`, `{"t":"ping","ts":01}`,
		`{"t":"typing","room":"r","on":null,"x":[1.5e+3,-0.0,{"":""},[]]}`,
		`{"t":"join","id":1,"room":"r","state":{"status":null,"meta":{"a":"\u00e9\n","b":"Ã©"}}}`,
		`{"t":"set","id":1,"room":"r","state":{"status":"away","Status":"busy"}}`,
		`{"t":"join","id":1,"room":"r","state":{"meta":{}},"state":null}`,
		`{"t":"pong","ts":1,"x":"\ud800"}`, `{"t":"pong","ts":1e0}`, `{"t":"hello","v":1,"user":"a","v":2}`,
	} {
		f.Add([]byte(msg))
	}

	f.Fuzz(func(t *testing.T, msg []byte) {
		checkRequest(t, msg)
		in := bytes.Clone(msg)
		var c Command
		err := DecodeCommand(msg, &c)
		if !bytes.Equal(in, msg) {
			t.Fatalf("DecodeCommand modified its input")
		}
		if err != nil {
			checkDecodeError(t, msg, err)
			return
		}
		if !json.Valid(msg) {
			t.Fatalf("DecodeCommand accepted invalid JSON %q", msg)
		}

		// Re-encode and decode again. Unknown fields, duplicate keys,
		// keys in another case (encoding/json matches them without regard
		// to case), escapes and whitespace all normalise on the way, so the
		// second decode must give the same Command. HTML escaping is off:
		// json.Marshal would rewrite <, > and & inside meta's raw bytes.
		var out bytes.Buffer
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&c); err != nil {
			t.Fatalf("re-encoding %+v: %v", c, err)
		}
		var c2 Command
		if err := DecodeCommand(out.Bytes(), &c2); err != nil {
			t.Fatalf("%q decoded, but its re-encoding %q does not: %v", msg, out.Bytes(), err)
		}
		if a, b := normalize(c), normalize(c2); !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip changed the command:\n  in  %q\n  out %q\n  %s\n  %s", msg, out.Bytes(), fmtCommand(a), fmtCommand(b))
		}
	})
}

// normalize makes two decodings of the same command comparable: meta is
// compared without insignificant whitespace (json.Marshal compacts a
// RawMessage), and an empty resume map (omitted when re-encoded) as nil.
func normalize(c Command) Command {
	if len(c.Resume) == 0 {
		c.Resume = nil
	}
	if c.State != nil {
		st := *c.State
		st.Meta = CompactMeta(st.Meta)
		c.State = &st
	}
	return c
}

// checkDecodeError fails t unless err is ErrSyntax for a message that is
// not JSON, or an *Error with a code DecodeCommand is documented to return
// for one that is.
func checkDecodeError(t *testing.T, msg []byte, err error) {
	t.Helper()
	var werr *Error
	switch {
	case errors.Is(err, ErrSyntax):
		if json.Valid(msg) {
			t.Fatalf("ErrSyntax for valid JSON %q", msg)
		}
	case errors.As(err, &werr):
		if !json.Valid(msg) {
			t.Fatalf("*Error %v for invalid JSON %q: want ErrSyntax", err, msg)
		}
		if werr.Code != ErrCodeBadRequest && werr.Code != ErrCodeTooLarge {
			t.Fatalf("*Error with code %q for %q, want bad_request or too_large", werr.Code, msg)
		}
		if werr.Msg == "" {
			t.Fatalf("*Error without a message for %q", msg)
		}
	default:
		t.Fatalf("DecodeCommand(%q): error %v (%T) is neither ErrSyntax nor *Error", msg, err, err)
	}
}

// FuzzParseCursor checks that ParseCursor never panics and that a cursor it
// accepts re-encodes to a canonical text that parses to the same cursor.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{
		"0.0", "1.z", "10.101", "1z141z3.3w5e11264sgsf", "1z141z4.0", "0.3w5e11264sgsg",
		"", ".", "a.", ".b", "x.y.z", "1..2", "+1.2", "-1.2", "1_0.2", "A.B", "00.01",
		"0." + strings.Repeat("0", 31), "é.1", "1.\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := ParseCursor(s)
		if !ok {
			if c != (Cursor{}) {
				t.Fatalf("ParseCursor(%q) failed but returned %+v", s, c)
			}
			return
		}
		if len(s) > 32 || strings.Count(s, ".") != 1 {
			t.Fatalf("ParseCursor accepted %q", s)
		}
		text := c.String()
		if string(AppendCursor(nil, c)) != text {
			t.Fatalf("AppendCursor and String differ for %+v", c)
		}
		c2, ok := ParseCursor(text)
		if !ok || c2 != c {
			t.Fatalf("ParseCursor(%q) = %+v; its text %q parses to %+v, %v", s, c, text, c2, ok)
		}
		if text2 := c2.String(); text2 != text {
			t.Fatalf("canonical text %q re-encodes to %q", text, text2)
		}
	})
}

// FuzzAppendString checks that AppendString always writes one valid JSON
// string that reads back as s with each invalid byte replaced by U+FFFD.
//
// Not strings.ToValidUTF8(s, "\uFFFD"): that replaces a whole run of
// invalid bytes with one U+FFFD, while AppendString (like json.Marshal and
// json.Unmarshal) replaces each invalid byte; see replaceInvalid.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{
		"", "chat:42", tricky, "\x00", "\x1f", "\xff", "\xe2\x82", "\xed\xa0\x80",
		"\u2028\u2029", "\uFFFD", "a\xffb\xfe\xfdc", "\xc0\xaf", "\xf4\x90\x80\x80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := AppendString(nil, s)
		if !json.Valid(got) {
			t.Fatalf("AppendString(%q) = %q: not valid JSON", s, got)
		}
		if !utf8.Valid(got) {
			t.Fatalf("AppendString(%q) = %q: not valid UTF-8", s, got)
		}
		for _, b := range got {
			if b < 0x20 {
				t.Fatalf("AppendString(%q) = %q: raw control byte %#x", s, got, b)
			}
		}
		if bytes.Contains(got, []byte("\u2028")) || bytes.Contains(got, []byte("\u2029")) {
			t.Fatalf("AppendString(%q) = %q: raw U+2028 or U+2029", s, got)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("json.Unmarshal(%q): %v", got, err)
		}
		if want := replaceInvalid(s); back != want {
			t.Fatalf("AppendString(%q) reads back as %q, want %q", s, back, want)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("valid string %q reads back as %q", s, back)
		}
		if p := AppendString([]byte(`["x",`), s); string(p) != `["x",`+string(got) {
			t.Fatalf("AppendString after a prefix = %q", p)
		}
	})
}
