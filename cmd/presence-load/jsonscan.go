package main

// jscan reads JSON without allocating, for the messages of the server. It
// checks structure (objects, arrays, strings, literals, numbers) but not
// everything encoding/json checks: strings come back raw, the bytes between
// the quotes with their escapes undecoded (the ids the load generator uses
// have none), and numbers are read as integers. Any error sets bad.
type jscan struct {
	p     []byte
	i     int
	depth int
	bad   bool
}

// maxDepth bounds nesting, so that a hostile message cannot recurse deeply.
const maxDepth = 32

func (s *jscan) space() {
	for s.i < len(s.p) {
		switch s.p[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (s *jscan) peek() byte {
	s.space()
	if s.i < len(s.p) {
		return s.p[s.i]
	}
	return 0
}

// eat consumes c if it comes next.
func (s *jscan) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

// str reads a string and returns its raw contents.
func (s *jscan) str() []byte {
	if !s.eat('"') {
		s.bad = true
		return nil
	}
	start := s.i
	for s.i < len(s.p) {
		switch c := s.p[s.i]; {
		case c == '\\':
			s.i += 2
		case c == '"':
			v := s.p[start:s.i]
			s.i++
			return v
		case c < 0x20:
			s.bad = true
			return nil
		default:
			s.i++
		}
	}
	s.bad = true
	return nil
}

// int reads a number and returns its integer part (saturating).
func (s *jscan) int() int64 {
	s.space()
	neg := false
	if s.i < len(s.p) && s.p[s.i] == '-' {
		neg = true
		s.i++
	}
	start := s.i
	var n int64
	for s.i < len(s.p) && s.p[s.i] >= '0' && s.p[s.i] <= '9' {
		if n < (1<<62)/10 {
			n = n*10 + int64(s.p[s.i]-'0')
		}
		s.i++
	}
	if s.i == start {
		s.bad = true
		return 0
	}
	// A fraction or exponent: skipped.
	for s.i < len(s.p) {
		switch s.p[s.i] {
		case '.', 'e', 'E', '+', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			s.i++
			continue
		}
		break
	}
	if neg {
		n = -n
	}
	return n
}

// literal reads true, false or null; it returns true for true.
func (s *jscan) literal() bool {
	s.space()
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(s.p)-s.i >= len(lit) && string(s.p[s.i:s.i+len(lit)]) == lit {
			s.i += len(lit)
			return lit == "true"
		}
	}
	s.bad = true
	return false
}

// skip reads any value.
func (s *jscan) skip() {
	switch s.peek() {
	case '"':
		s.str()
	case '{':
		s.object(func([]byte) { s.skip() })
	case '[':
		s.array(s.skip)
	case 't', 'f', 'n':
		s.literal()
	default:
		s.int()
	}
}

// object reads an object, calling fn with each key; fn must read the value.
func (s *jscan) object(fn func(key []byte)) {
	if !s.eat('{') || s.depth >= maxDepth {
		s.bad = true
		return
	}
	s.depth++
	defer func() { s.depth-- }()
	if s.eat('}') {
		return
	}
	for !s.bad {
		key := s.str()
		if !s.eat(':') {
			s.bad = true
			return
		}
		fn(key)
		if s.eat(',') {
			continue
		}
		if !s.eat('}') {
			s.bad = true
		}
		return
	}
}

// array reads an array, calling fn to read each element.
func (s *jscan) array(fn func()) {
	if !s.eat('[') || s.depth >= maxDepth {
		s.bad = true
		return
	}
	s.depth++
	defer func() { s.depth-- }()
	if s.eat(']') {
		return
	}
	for !s.bad {
		fn()
		if s.eat(',') {
			continue
		}
		if !s.eat(']') {
			s.bad = true
		}
		return
	}
}

// end reports whether only white space is left.
func (s *jscan) end() bool {
	s.space()
	return s.i == len(s.p)
}
