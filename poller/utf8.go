package poller

import "unicode/utf8"

// utf8State validates UTF-8 split across fragments: it keeps the bytes of
// a code point cut by a fragment boundary (at most 3).
type utf8State struct {
	tail [4]byte
	n    uint8
}

// feed validates p, continuing the previous fragments. With last set the
// message must end on a code point boundary. It fails as soon as the bytes
// seen cannot start a valid text.
func (s *utf8State) feed(p []byte, last bool) bool {
	for s.n > 0 && len(p) > 0 { // complete the code point cut last time
		s.tail[s.n] = p[0]
		s.n++
		p = p[1:]
		if utf8.FullRune(s.tail[:s.n]) {
			if r, size := utf8.DecodeRune(s.tail[:s.n]); r == utf8.RuneError && size == 1 { // not U+FFFD itself
				return false
			}
			s.n = 0
			break
		}
		if !validPrefix(s.tail[:s.n]) {
			return false
		}
	}
	if s.n == 0 {
		cut := incompleteTail(p)
		if !utf8.Valid(p[:len(p)-cut]) || !validPrefix(p[len(p)-cut:]) {
			return false
		}
		s.n = uint8(copy(s.tail[:], p[len(p)-cut:]))
	}
	return !last || s.n == 0
}

// incompleteTail is the length of a possibly valid, incomplete code point
// at the end of p (0 to 3 bytes).
func incompleteTail(p []byte) int {
	for i := 1; i <= 3 && i <= len(p); i++ {
		b := p[len(p)-i]
		if b < 0x80 {
			return 0
		}
		if b >= 0xC0 { // a leading byte: is its sequence cut?
			if utf8.FullRune(p[len(p)-i:]) {
				return 0
			}
			return i
		}
	}
	return 0
}

// validPrefix reports whether p (shorter than a full code point) can begin
// a valid UTF-8 sequence.
func validPrefix(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	b0 := p[0]
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case b0 >= 0xC2 && b0 <= 0xDF:
	case b0 == 0xE0:
		lo = 0xA0
	case b0 >= 0xE1 && b0 <= 0xEC, b0 == 0xEE, b0 == 0xEF:
	case b0 == 0xED:
		hi = 0x9F
	case b0 == 0xF0:
		lo = 0x90
	case b0 >= 0xF1 && b0 <= 0xF3:
	case b0 == 0xF4:
		hi = 0x8F
	default:
		return false
	}
	if len(p) > 1 && (p[1] < lo || p[1] > hi) {
		return false
	}
	for i := 2; i < len(p); i++ { // not p[2:]: p may hold a single byte
		if p[i] < 0x80 || p[i] > 0xBF {
			return false
		}
	}
	return true
}
