package poller

import (
	"testing"
	"unsafe"
)

// TestConnSize: an idle epoll connection costs its Conn and nothing else
// (bench/RESULTS.md), so the Conn must stay within its 224-byte size
// class. A new field goes into padding (see the flags beside state) or
// says what it costs per connection.
func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(Conn{}); got > 224 {
		t.Errorf("unsafe.Sizeof(Conn{}) = %d, want at most 224 (a size class; the next is 240)", got)
	}
}
