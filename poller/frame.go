package poller

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// AppendFrame appends one unmasked, final server frame to dst: the form
// Conn.Send takes. Encode a message once and Send the same bytes to every
// connection.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	switch {
	case n <= 125:
		dst = append(dst, 0x80|byte(op), byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 0x80|byte(op), 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 0x80|byte(op), 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// AppendTextFrame appends a text frame holding payload to dst.
func AppendTextFrame(dst, payload []byte) []byte { return AppendFrame(dst, ws.OpText, payload) }

// closeFrame builds a close frame; the reason is cut to fit 125 bytes.
func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		cut := 123
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	p := make([]byte, 0, 4+2+len(reason))
	p = append(p, 0x80|byte(ws.OpClose), byte(2+len(reason)))
	p = binary.BigEndian.AppendUint16(p, uint16(code))
	return append(p, reason...)
}
