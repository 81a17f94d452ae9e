package presence

import (
	"testing"
	"unsafe"
)

// TestIdleStructSizes: what an idle joined connection keeps is a Session,
// a member and a sub (bench/RESULTS.md, "Memory an operator sees"); each
// must stay within its size class.
func TestIdleStructSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size, max uintptr
	}{
		{"Session", unsafe.Sizeof(Session{}), 208},
		{"member", unsafe.Sizeof(member{}), 80},
		{"sub", unsafe.Sizeof(sub{}), 32},
		{"change", unsafe.Sizeof(change{}), 64},
		{"version", unsafe.Sizeof(version{}), 48},
		{"room", unsafe.Sizeof(room{}), 416},
	} {
		if tc.size > tc.max {
			t.Errorf("unsafe.Sizeof(%s{}) = %d, want at most %d (its size class)", tc.name, tc.size, tc.max)
		}
	}
}
