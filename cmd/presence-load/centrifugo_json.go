package main

import (
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonScanner walks the JSON of Centrifugo's replies without building
// values: member names and strings come back as slices of the input (a
// string with escapes is decoded into a new slice), numbers as int64. It is
// lenient where leniency costs nothing (a missing comma between members
// passes) and fails on anything it cannot walk; after a failure every method
// returns zero values and err holds the first error.
type jsonScanner struct {
	b   []byte
	i   int
	err error
}

func (s *jsonScanner) fail() error {
	if s.err == nil {
		s.err = fmt.Errorf("%w at byte %d", errCentrifugoSyntax, s.i)
	}
	s.i = len(s.b)
	return s.err
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// open consumes the { of an object.
func (s *jsonScanner) open() bool {
	if s.ws(); s.i < len(s.b) && s.b[s.i] == '{' {
		s.i++
		return true
	}
	return false
}

// objectKey starts a value that should be an object and returns its first
// member name; a value of another type (null) is skipped and reports none.
func (s *jsonScanner) objectKey() ([]byte, bool) {
	if s.open() {
		return s.key()
	}
	s.skip()
	return nil, false
}

// key returns the next member name of the object being read, after its {
// or after the previous member's value; false at its }.
func (s *jsonScanner) key() ([]byte, bool) {
	if s.ws(); s.i < len(s.b) {
		switch s.b[s.i] {
		case '}':
			s.i++
			return nil, false
		case ',':
			s.i++
			s.ws()
		}
	}
	if s.i == len(s.b) || s.b[s.i] != '"' {
		s.fail()
		return nil, false
	}
	k := s.str()
	if s.ws(); s.i == len(s.b) || s.b[s.i] != ':' {
		s.fail()
		return nil, false
	}
	s.i++
	return k, s.err == nil
}

// str reads a string value; a value of another type is skipped and reads nil.
func (s *jsonScanner) str() []byte {
	if s.ws(); s.i == len(s.b) || s.b[s.i] != '"' {
		s.skip()
		return nil
	}
	start := s.i + 1
	escaped := false
	for i := start; i < len(s.b); i++ {
		switch s.b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			s.i = i + 1
			if !escaped {
				return s.b[start:i]
			}
			out, ok := unescapeJSON(s.b[start:i])
			if !ok {
				s.fail()
			}
			return out
		}
	}
	s.fail()
	return nil
}

// int reads an integer value; another value is skipped and reads 0, and
// a fraction or exponent is skipped.
func (s *jsonScanner) int() int64 {
	s.ws()
	v := s.skip()
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n
}

// skip steps over one value and returns its bytes.
func (s *jsonScanner) skip() []byte {
	if s.ws(); s.i == len(s.b) {
		s.fail()
		return nil
	}
	start := s.i
	switch s.b[s.i] {
	case '{', '[':
		depth := 0
		for ; s.i < len(s.b); s.i++ {
			switch s.b[s.i] {
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					s.i++
					return s.b[start:s.i]
				}
			case '"':
				if !s.skipString() {
					return nil
				}
				s.i-- // the loop steps past the closing quote
			}
		}
		s.fail()
		return nil
	case '"':
		if !s.skipString() {
			return nil
		}
		return s.b[start:s.i]
	case '}', ']', ',', ':':
		s.fail()
		return nil
	}
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n', '"', '{', '[', ':':
			return s.b[start:s.i]
		}
		s.i++
	}
	return s.b[start:s.i]
}

// skipString steps over the string that starts at s.i.
func (s *jsonScanner) skipString() bool {
	for i := s.i + 1; i < len(s.b); i++ {
		switch s.b[i] {
		case '\\':
			i++
		case '"':
			s.i = i + 1
			return true
		}
	}
	s.fail()
	return false
}

// unescapeJSON decodes the inside of a JSON string that holds escapes. It
// allocates: Centrifugo escapes only what the sender escaped, and
// presence-load sends plain names.
func unescapeJSON(b []byte) ([]byte, bool) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			out = append(out, b[i])
			continue
		}
		if i++; i == len(b) {
			return nil, false
		}
		switch b[i] {
		case '"', '\\', '/':
			out = append(out, b[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b[i+1:])
			if !ok {
				return nil, false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(b[min(i+3, len(b)):]); ok && i+2 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r = d
						i += 6
					}
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false
		}
	}
	return out, true
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
