package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// checkRequest fails t unless DecodeRequest gives for msg what
// DecodeCommand gives: the same error (identity, code and message) and the
// same fields, and leaves msg as it was.
func checkRequest(t *testing.T, msg []byte) {
	t.Helper()
	var c Command
	cerr := DecodeCommand(msg, &c)
	in := bytes.Clone(msg)
	var r Request
	rerr := DecodeRequest(msg, &r)
	if !bytes.Equal(in, msg) {
		t.Fatalf("DecodeRequest modified its input %q", in)
	}
	var ce, re *Error
	switch {
	case cerr == nil && rerr == nil:
	case errors.Is(cerr, ErrSyntax) && errors.Is(rerr, ErrSyntax):
	case errors.As(cerr, &ce) && errors.As(rerr, &re) && *ce == *re:
	default:
		t.Fatalf("%q: DecodeRequest error %v, DecodeCommand error %v", msg, rerr, cerr)
	}
	if cerr == nil && c.State != nil {
		if got, want := AppendCompactMeta([]byte("x"), c.State.Meta), "x"+string(CompactMeta(c.State.Meta)); string(got) != want {
			t.Fatalf("%q: AppendCompactMeta = %q, CompactMeta = %q", msg, got, want)
		}
	}
	want := Request{T: c.T, ID: c.ID, V: c.V, Token: c.Token, User: c.User, Room: c.Room, On: c.On, TS: c.TS, Resume: c.Resume}
	if c.State != nil {
		want.State, want.HasState = *c.State, true
	}
	got := r
	if len(got.State.Meta) == 0 && len(want.State.Meta) == 0 {
		got.State.Meta, want.State.Meta = nil, nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: DecodeRequest = %+v (meta %q), DecodeCommand = %+v (meta %q)", msg, got, got.State.Meta, want, want.State.Meta)
	}
}

// The common commands decode without allocating: each row is a message
// as clients send it.
func TestDecodeRequestDoesNotAllocate(t *testing.T) {
	tests := []struct{ name, msg string }{
		{"hello", `{"t":"hello","v":1,"user":"alice"}`},
		{"hello with token and state", `{"t":"hello","v":1,"token":"eyJh.eyJz.c2ln","state":{"status":"online","meta":{"name":"Alice"}}}`},
		{"join", `{"t":"join","id":1,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice","tags":["a",1.5e3,true,null]}}}`},
		{"join without state", `{"t":"join","id":1,"room":"chat:42"}`},
		{"leave", `{"t":"leave","id":2,"room":"chat:42"}`},
		{"set", `{"t":"set","id":3,"room":"chat:42","state":{"status":"away"}}`},
		{"set meta null", `{"t":"set","id":3,"room":"chat:42","state":{"meta":null}}`},
		{"typing on", `{"t":"typing","room":"chat:42","on":true}`},
		{"typing off", `{"t":"typing","room":"chat:42","on":false}`},
		{"sync", `{"t":"sync","id":4,"room":"chat:42"}`},
		{"auth", `{"t":"auth","id":5,"token":"new.jwt.sig"}`},
		{"ping", `{"t":"ping","ts":1700000000123}`},
		{"pong", `{"t":"pong","ts":1700000000123}`},
		{"unknown fields and whitespace", " {\"x\": {\"a\":[1,{\"b\":\"\\u00e9\"}]}, \"T\" : \"pong\" ,\"ts\":-0}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := []byte(tt.msg)
			checkRequest(t, msg)
			var r Request
			if n := testing.AllocsPerRun(100, func() {
				if err := DecodeRequest(msg, &r); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("%v allocations per run, want 0", n)
			}
		})
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	for _, bm := range []struct{ name, msg string }{
		{"join", `{"t":"join","id":17,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice"}}}`},
		{"typing", `{"t":"typing","room":"chat:42","on":true}`},
		{"pong", `{"t":"pong","ts":1700000000123}`},
	} {
		b.Run(bm.name, func(b *testing.B) {
			msg := []byte(bm.msg)
			var r Request
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if err := DecodeRequest(msg, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
