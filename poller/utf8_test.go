package poller

import (
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// canComplete reports whether p is valid UTF-8 or can become valid by
// appending at most 3 bytes: the reference for incremental validation.
// The candidate bytes cover the bounds of every second-byte range of
// RFC 3629 (0x80-0x8F, 0x90-0x9F, 0xA0-0xBF).
func canComplete(p []byte) bool {
	if utf8.Valid(p) {
		return true
	}
	candidates := []byte{0x80, 0x90, 0xA0, 0xBF}
	var try func(q []byte, depth int) bool
	try = func(q []byte, depth int) bool {
		if depth == 0 {
			return false
		}
		for _, b := range candidates {
			r := append(q[:len(q):len(q)], b)
			if utf8.Valid(r) || try(r, depth-1) {
				return true
			}
		}
		return false
	}
	return try(p, 3)
}

// randomText mixes ASCII, multi-byte code points (U+FFFD among them) and,
// when corrupt is set, a few invalid bytes.
func randomText(rng *rand.Rand, corrupt bool) []byte {
	pieces := []string{"a", "Z", " ", "é", "ß", "€", "\ufffd", "𝄞", "\U0010FFFF", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\U00010000"}
	bad := []string{"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\x80", "\xf8\x88\x80\x80\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80"}
	var p []byte
	for range rng.IntN(24) {
		if corrupt && rng.IntN(12) == 0 {
			p = append(p, bad[rng.IntN(len(bad))]...)
			continue
		}
		p = append(p, pieces[rng.IntN(len(pieces))]...)
	}
	if corrupt && rng.IntN(4) == 0 && len(p) > 0 { // flip a random byte
		p[rng.IntN(len(p))] ^= byte(1 << rng.IntN(8))
	}
	return p
}

// splitRandom cuts p into 1 to 6 fragments at random points (empty
// fragments included).
func splitRandom(rng *rand.Rand, p []byte) [][]byte {
	n := 1 + rng.IntN(6)
	cuts := make([]int, 0, n+1)
	for range n - 1 {
		cuts = append(cuts, rng.IntN(len(p)+1))
	}
	cuts = append(cuts, len(p))
	// Sort the cuts (few of them).
	for i := 1; i < len(cuts); i++ {
		for j := i; j > 0 && cuts[j] < cuts[j-1]; j-- {
			cuts[j], cuts[j-1] = cuts[j-1], cuts[j]
		}
	}
	var frags [][]byte
	prev := 0
	for _, c := range cuts {
		frags = append(frags, p[prev:c])
		prev = c
	}
	return frags
}

// checkUTF8Splits feeds frags to a utf8State and compares every answer
// with the reference: after each fragment the verdict must be "can this
// prefix still become valid?", and at the end utf8.Valid of the whole.
func checkUTF8Splits(t *testing.T, frags [][]byte) {
	t.Helper()
	var s utf8State
	var seen []byte
	for i, f := range frags {
		last := i == len(frags)-1
		seen = append(seen, f...)
		got := s.feed(f, last)
		want := canComplete(seen)
		if last {
			want = utf8.Valid(seen)
		}
		if got != want {
			t.Fatalf("fragments %q: after #%d (last=%v) feed=%v, want %v", frags, i, last, got, want)
		}
		if !got {
			return // a failed message is closed: nothing more is fed
		}
	}
}

func TestUTF8StateRandomSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		p := randomText(rng, rng.IntN(2) == 0)
		checkUTF8Splits(t, splitRandom(rng, p))
	}
}

func TestUTF8StateCases(t *testing.T) {
	tests := []struct {
		name  string
		frags []string
	}{
		{"empty message", []string{""}},
		{"empty fragments", []string{"", "", ""}},
		{"ascii", []string{"hello", " ", "world"}},
		{"2-byte split", []string{"\xc3", "\xa9"}},
		{"3-byte split 1+2", []string{"\xe2", "\x82\xac"}},
		{"3-byte split 2+1", []string{"\xe2\x82", "\xac"}},
		{"4-byte split byte by byte", []string{"\xf0", "\x9d", "\x84", "\x9e"}},
		{"4-byte split with empty fragments", []string{"\xf0", "", "\x9d\x84", "", "\x9e"}},
		{"U+FFFD split", []string{"\xef\xbf", "\xbd"}},
		{"U+FFFD split byte by byte", []string{"a\xef", "\xbf", "\xbdb"}},
		{"U+10FFFF split", []string{"\xf4\x8f", "\xbf\xbf"}},
		{"surrogate split", []string{"\xed", "\xa0\x80"}},
		{"overlong 3-byte split", []string{"\xe0", "\x80\x80"}},
		{"overlong 4-byte split", []string{"\xf0", "\x80\x80\x80"}},
		{"above U+10FFFF split", []string{"\xf4", "\x90\x80\x80"}},
		{"ascii after a cut lead byte", []string{"\xe2", "A"}},
		{"ends inside a code point", []string{"a\xe2\x82", ""}},
		{"lone continuation", []string{"a", "\x80"}},
		{"5-byte lead", []string{"\xf8", "\x88\x80\x80\x80"}},
		{"invalid in the first fragment", []string{"\xff", "a"}},
		{"too many continuation bytes", []string{"\xc3\xa9", "\xa9"}},
		{"split code point then invalid", []string{"\xc3", "\xa9\xff"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frags := make([][]byte, len(tc.frags))
			for i, f := range tc.frags {
				frags[i] = []byte(f)
			}
			checkUTF8Splits(t, frags)
		})
	}
}

// FuzzUTF8State: any bytes, split anywhere, validate like utf8.Valid.
func FuzzUTF8State(f *testing.F) {
	f.Add([]byte("héllo €𝄞"), []byte{1, 2, 3})
	f.Add([]byte("\xef\xbf\xbd"), []byte{1, 1})
	f.Add([]byte("\xed\xa0\x80"), []byte{1})
	f.Add([]byte("\xf0\x9d\x84\x9e"), []byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte, cuts []byte) {
		var frags [][]byte
		rest := p
		for _, c := range cuts {
			n := min(int(c)%8, len(rest))
			frags = append(frags, rest[:n])
			rest = rest[n:]
		}
		frags = append(frags, rest)
		checkUTF8Splits(t, frags)
	})
}
