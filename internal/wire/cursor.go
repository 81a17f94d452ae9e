package wire

import (
	"strconv"
	"strings"
)

// Cursor names one version of a room's state. Epoch identifies one
// incarnation of the room on its node (a room recreated after it emptied,
// or after a restart, gets a new epoch, so old cursors cannot be resumed);
// Seq counts the diffs of that incarnation. Clients treat the encoded form as
// opaque.
type Cursor struct {
	Epoch uint32
	Seq   uint64
}

// AppendCursor appends c's text form, "<epoch>.<seq>" in base 36, unquoted.
func AppendCursor(dst []byte, c Cursor) []byte {
	dst = strconv.AppendUint(dst, uint64(c.Epoch), 36)
	dst = append(dst, '.')
	return strconv.AppendUint(dst, c.Seq, 36)
}

// String is c's text form.
func (c Cursor) String() string { return string(AppendCursor(nil, c)) }

// ParseCursor parses the text form written by AppendCursor.
func ParseCursor(s string) (Cursor, bool) {
	e, q, ok := strings.Cut(s, ".")
	if !ok || e == "" || q == "" || len(s) > 32 {
		return Cursor{}, false
	}
	epoch, err := strconv.ParseUint(e, 36, 32)
	if err != nil {
		return Cursor{}, false
	}
	seq, err := strconv.ParseUint(q, 36, 64)
	if err != nil {
		return Cursor{}, false
	}
	return Cursor{Epoch: uint32(epoch), Seq: seq}, true
}
