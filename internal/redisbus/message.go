package redisbus

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/presenced/presenced/presence"
)

// Message format, version 1 (all integers unsigned varints, strings a
// varint length then the bytes):
//
//	byte    version (1)
//	byte    kind: 1 delta, 2 full, 3 gone, 4 probe
//	string  sender: the incarnation id ("node#epoch"); for gone, the dead id
//	string  room ("" for a probe)
//	uvarint seq: per (sender, room): Unix ms × 1000 at the sender's first
//	        write of the room (a full message), then +1 per message; 0 for
//	        gone and probe
//	uvarint ts: the sender's wall clock, Unix milliseconds
//	uvarint n: holdings, then n times:
//	  string  user
//	  byte    flags: bit 0 held
//	  if held: string status, string meta, uvarint version, uvarint typing ms
//
// A full message carries only held holdings: it replaces the sender's
// whole part of the room. A delta carries the holdings that changed
// (held=false: the sender let go of the user).
//
// The value of a user in the members hash m:<room>|<id> is
//
//	byte    version (1)
//	uvarint version (the holding's HLC)
//	uvarint typing deadline, Unix milliseconds (0: not typing)
//	string  status
//	string  meta
const wireVersion = 1

// kind is a message's kind.
type kind byte

const (
	kindDelta kind = 1 // the holdings that changed
	kindFull  kind = 2 // the sender's whole part of the room
	kindGone  kind = 3 // the sender (a dead id) has no part any more (the reaper)
	kindProbe kind = 4 // on a marker channel: is this subscription alive?
)

// message is one bus message.
type message struct {
	kind   kind
	sender string
	room   string
	seq    uint64
	ts     int64 // Unix ms
	hs     []presence.Holding
}

var errMalformed = errors.New("redisbus: malformed message")

const flagHeld = 1

// appendMessage appends m encoded to dst. A full message leaves out the
// holdings that are not held.
func appendMessage(dst []byte, m *message) []byte {
	dst = append(dst, wireVersion, byte(m.kind))
	dst = appendString(dst, m.sender)
	dst = appendString(dst, m.room)
	dst = binary.AppendUvarint(dst, m.seq)
	dst = binary.AppendUvarint(dst, uint64(max(m.ts, 0)))
	n := len(m.hs)
	if m.kind == kindFull {
		n = 0
		for i := range m.hs {
			if m.hs[i].Held {
				n++
			}
		}
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for i := range m.hs {
		h := &m.hs[i]
		if !h.Held && m.kind == kindFull {
			continue
		}
		dst = appendString(dst, h.User)
		if !h.Held {
			dst = append(dst, 0)
			continue
		}
		dst = append(dst, flagHeld)
		dst = appendString(dst, h.Status)
		dst = appendString(dst, h.Meta)
		dst = binary.AppendUvarint(dst, h.Version)
		dst = binary.AppendUvarint(dst, typingMS(h.Typing))
	}
	return dst
}

// typingMS is d in whole milliseconds, rounded up so that a member still
// typing never turns into one that is not.
func typingMS(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Millisecond - 1) / time.Millisecond)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decoder reads a message; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errMalformed
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errMalformed
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errMalformed
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// decodeMessage decodes one message. It never allocates more than the
// input's size justifies: a count larger than the bytes left is an error.
func decodeMessage(b []byte) (message, error) {
	d := decoder{b: b}
	var m message
	if d.byte() != wireVersion {
		return message{}, errMalformed
	}
	m.kind = kind(d.byte())
	if m.kind < kindDelta || m.kind > kindProbe {
		return message{}, errMalformed
	}
	m.sender = d.string()
	m.room = d.string()
	m.seq = d.uvarint()
	ts := d.uvarint()
	if ts > 1<<62 {
		d.err = errMalformed
	}
	m.ts = int64(ts)
	n := d.uvarint()
	if d.err != nil {
		return message{}, d.err
	}
	// Each holding takes at least 2 bytes (an empty user, the flags).
	if n > uint64(len(d.b))/2 {
		return message{}, errMalformed
	}
	if n > 0 {
		m.hs = make([]presence.Holding, 0, n)
	}
	for range n {
		var h presence.Holding
		h.User = d.string()
		flags := d.byte()
		if flags&^flagHeld != 0 {
			d.err = errMalformed
		}
		if flags&flagHeld != 0 {
			h.Held = true
			h.Status = d.string()
			h.Meta = d.string()
			h.Version = d.uvarint()
			t := d.uvarint()
			if t > uint64(365*24*time.Hour/time.Millisecond) {
				d.err = errMalformed
			}
			h.Typing = time.Duration(t) * time.Millisecond
		}
		if d.err != nil {
			return message{}, d.err
		}
		if m.kind == kindFull && !h.Held {
			return message{}, errMalformed
		}
		m.hs = append(m.hs, h)
	}
	if len(d.b) != 0 {
		return message{}, errMalformed
	}
	return m, nil
}

// appendValue appends the members-hash value of the held holding h,
// published at now.
func appendValue(dst []byte, h *presence.Holding, now time.Time) []byte {
	dst = append(dst, wireVersion)
	dst = binary.AppendUvarint(dst, h.Version)
	var deadline uint64
	if ms := typingMS(h.Typing); ms > 0 {
		deadline = uint64(now.UnixMilli()) + ms
	}
	dst = binary.AppendUvarint(dst, deadline)
	dst = appendString(dst, h.Status)
	return appendString(dst, h.Meta)
}

// decodeValue decodes the members-hash value of user, read at now: a held
// holding whose Typing is what is left of the typing deadline.
func decodeValue(user string, b []byte, now time.Time) (presence.Holding, error) {
	d := decoder{b: b}
	if d.byte() != wireVersion {
		return presence.Holding{}, errMalformed
	}
	h := presence.Holding{User: user, Held: true}
	h.Version = d.uvarint()
	deadline := d.uvarint()
	h.Status = d.string()
	h.Meta = d.string()
	if d.err != nil || len(d.b) != 0 || deadline > 1<<62 {
		return presence.Holding{}, errMalformed
	}
	if left := int64(deadline) - now.UnixMilli(); deadline > 0 && left > 0 {
		h.Typing = time.Duration(left) * time.Millisecond
	}
	return h, nil
}
