package auth

// Match reports whether room matches the glob pattern. '*' matches any run
// of bytes, empty included, ':' and '/' included; '?' matches exactly one
// byte; every other byte matches itself. There are no character classes and
// no escapes, so a pattern cannot match a literal '*' or '?' only.
//
// Match runs in O(len(pattern)·len(room)) time at worst and allocates
// nothing: on a mismatch it backtracks only to the last '*', never
// recursively.
func Match(pattern, room string) bool {
	p, r := 0, 0
	star, next := -1, 0 // after a '*' at pattern[star], retry from room[next]
	for r < len(room) {
		if p < len(pattern) {
			switch c := pattern[p]; {
			case c == '*':
				star, next = p, r
				p++
				continue
			case c == '?' || c == room[r]:
				p++
				r++
				continue
			}
		}
		if star < 0 {
			return false
		}
		// Let the last '*' swallow one more byte and retry after it.
		next++
		p, r = star+1, next
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
