package redisbus

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/presenced/presenced/presence"
)

func TestMessageRoundTrip(t *testing.T) {
	held := presence.Holding{User: "u1", Held: true, Status: "online", Meta: `{"a":1}`, Version: 1<<40 + 7, Typing: 2500 * time.Millisecond}
	let := presence.Holding{User: "u2"}
	for _, tc := range []struct {
		name string
		m    message
		want []presence.Holding // nil: m.hs
	}{
		{name: "delta", m: message{kind: kindDelta, sender: "n1#00ff", room: "room:1", seq: 42, ts: 1700000000123, hs: []presence.Holding{held, let}}},
		{name: "full drops let-go holdings", m: message{kind: kindFull, sender: "n1#01", room: "r", seq: 1, ts: 5, hs: []presence.Holding{held, let}}, want: []presence.Holding{held}},
		{name: "empty full", m: message{kind: kindFull, sender: "n#1", room: "r", seq: 9}},
		{name: "gone", m: message{kind: kindGone, sender: "dead#1", room: "r", ts: 1}},
		{name: "probe", m: message{kind: kindProbe, sender: "n#1", seq: 1<<64 - 1}},
		{name: "unicode and empty user", m: message{kind: kindDelta, sender: "ñ#2", room: "😀", seq: 3, hs: []presence.Holding{{User: "", Held: true}}}},
		{name: "sub-ms typing rounds up", m: message{kind: kindDelta, sender: "n#1", room: "r", seq: 1, hs: []presence.Holding{{User: "u", Held: true, Typing: time.Microsecond}}},
			want: []presence.Holding{{User: "u", Held: true, Typing: time.Millisecond}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := appendMessage(nil, &tc.m)
			got, err := decodeMessage(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			want := tc.m
			if tc.want != nil {
				want.hs = tc.want
			}
			if len(want.hs) == 0 {
				want.hs = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			// Every strict prefix is malformed.
			for i := range b {
				if _, err := decodeMessage(b[:i]); err == nil {
					t.Fatalf("prefix of %d bytes decoded", i)
				}
			}
			if _, err := decodeMessage(append(bytes.Clone(b), 0)); err == nil {
				t.Fatal("trailing byte accepted")
			}
		})
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version 2", []byte{2, 1, 0, 0, 0, 0, 0}},
		{"kind 0", []byte{1, 0, 0, 0, 0, 0, 0}},
		{"kind 5", []byte{1, 5, 0, 0, 0, 0, 0}},
		{"huge count", []byte{1, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"string past end", []byte{1, 1, 9, 'a'}},
		{"bad flags", []byte{1, 1, 0, 0, 0, 0, 1, 0, 2}},
		{"full with let-go", []byte{1, 2, 0, 0, 0, 0, 1, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := decodeMessage(tc.b); err == nil {
				t.Fatalf("decoded %+v", m)
			}
		})
	}
}

func TestValueRoundTrip(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct {
		name string
		h    presence.Holding
		at   time.Time
		want time.Duration
	}{
		{"not typing", presence.Holding{User: "u", Held: true, Status: "away", Meta: "{}", Version: 3}, now, 0},
		{"typing, read at once", presence.Holding{User: "u", Held: true, Version: 4, Typing: 3 * time.Second}, now, 3 * time.Second},
		{"typing, read later", presence.Holding{User: "u", Held: true, Typing: 3 * time.Second}, now.Add(time.Second), 2 * time.Second},
		{"typing expired", presence.Holding{User: "u", Held: true, Typing: time.Second}, now.Add(2 * time.Second), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := appendValue(nil, &tc.h, now)
			got, err := decodeValue("u", v, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.h
			want.Typing = tc.want
			if got != want {
				t.Fatalf("got %+v want %+v", got, want)
			}
			for i := range v {
				if _, err := decodeValue("u", v[:i], now); err == nil {
					t.Fatalf("prefix of %d bytes decoded", i)
				}
			}
		})
	}
}

// FuzzDecodeMessage: the decoder never panics, and what it accepts
// re-encodes to the same bytes.
func FuzzDecodeMessage(f *testing.F) {
	seeds := []message{
		{kind: kindDelta, sender: "n1#00ff", room: "room", seq: 7, ts: 99, hs: []presence.Holding{
			{User: "a", Held: true, Status: "s", Meta: `{"x":"y"}`, Version: 12, Typing: time.Second}, {User: "b"}}},
		{kind: kindFull, sender: "n2#1", room: "r", seq: 1, hs: []presence.Holding{{User: "a", Held: true}}},
		{kind: kindGone, sender: "dead#2", room: "r"},
		{kind: kindProbe, sender: "n#3", seq: 5},
	}
	for _, m := range seeds {
		b := appendMessage(nil, &m)
		f.Add(b)
		// Seeds split at every third byte: the decoder sees truncations.
		for i := 1; i < len(b); i += 3 {
			f.Add(b[:i])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if again := appendMessage(nil, &m); !bytes.Equal(again, b) {
			// Varints have one canonical form here; non-minimal ones
			// decode too, so compare by value instead.
			m2, err := decodeMessage(again)
			if err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("re-encoding differs: %+v vs %+v (%v)", m, m2, err)
			}
		}
	})
}
