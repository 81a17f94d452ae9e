package wire

import (
	"strconv"
	"unicode/utf8"
)

// Server → client encoders. Each appends one complete JSON message (or, for
// sync and diff, a piece of one) to dst and returns the extended slice.
// None allocates when dst has room.

// AppendWelcome encodes the answer to hello.
func AppendWelcome(dst []byte, node, conn, user string, hbMS int64, maxMessage int) []byte {
	dst = append(dst, `{"t":"welcome","v":`...)
	dst = strconv.AppendInt(dst, Version, 10)
	dst = appendField(dst, "node", node)
	dst = appendField(dst, "conn", conn)
	dst = appendField(dst, "user", user)
	dst = append(dst, `,"hb":`...)
	dst = strconv.AppendInt(dst, hbMS, 10)
	dst = append(dst, `,"max":`...)
	dst = strconv.AppendInt(dst, int64(maxMessage), 10)
	return append(dst, '}')
}

// AppendAck encodes the success answer to command id.
func AppendAck(dst []byte, id int64) []byte {
	dst = append(dst, `{"t":"ack","id":`...)
	dst = strconv.AppendInt(dst, id, 10)
	return append(dst, '}')
}

// AppendErr encodes an error answer; id 0 (a message without id) is omitted.
func AppendErr(dst []byte, id int64, code, msg string) []byte {
	dst = append(dst, `{"t":"err"`...)
	if id > 0 {
		dst = append(dst, `,"id":`...)
		dst = strconv.AppendInt(dst, id, 10)
	}
	dst = appendField(dst, "code", code)
	dst = appendField(dst, "msg", msg)
	return append(dst, '}')
}

// AppendPing encodes a heartbeat ping ({"t":"ping","ts":ts}); clients send
// the same shape.
func AppendPing(dst []byte, ts int64) []byte { return appendTS(dst, `{"t":"ping","ts":`, ts) }

// AppendPong encodes the answer to a ping carrying ts.
func AppendPong(dst []byte, ts int64) []byte { return appendTS(dst, `{"t":"pong","ts":`, ts) }

func appendTS(dst []byte, head string, ts int64) []byte {
	dst = append(dst, head...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// AppendRefresh asks the client for a new token before exp (unix seconds).
func AppendRefresh(dst []byte, exp int64) []byte {
	dst = append(dst, `{"t":"refresh","exp":`...)
	dst = strconv.AppendInt(dst, exp, 10)
	return append(dst, '}')
}

// AppendBye tells the client the server is going away.
func AppendBye(dst []byte, reason string, retryMS int64) []byte {
	dst = append(dst, `{"t":"bye"`...)
	dst = appendField(dst, "reason", reason)
	dst = append(dst, `,"retry_ms":`...)
	dst = strconv.AppendInt(dst, retryMS, 10)
	return append(dst, '}')
}

// AppendSyncStart opens a sync message up to its member list:
// {"t":"sync","room":…,"cur":…,"count":N,"members":[
// Follow with AppendMember for each member, then AppendSyncEnd.
func AppendSyncStart(dst []byte, room string, cur Cursor, count int) []byte {
	dst = append(dst, `{"t":"sync"`...)
	dst = appendField(dst, "room", room)
	dst = appendCursorField(dst, "cur", cur)
	dst = appendCount(dst, count)
	return append(dst, `,"members":[`...)
}

// AppendSyncEnd closes a sync opened by AppendSyncStart.
func AppendSyncEnd(dst []byte, typing []string, partial bool) []byte {
	dst = append(dst, ']')
	dst = AppendStrings(dst, "typing", typing)
	dst = append(dst, `,"partial":`...)
	dst = strconv.AppendBool(dst, partial)
	return append(dst, '}')
}

// AppendDiffStart opens a diff: {"t":"diff","room":…,"from":…,"cur":…,"count":N
// Follow with the optional lists (AppendListStart … AppendListEnd,
// AppendStrings) and close with AppendEnd.
func AppendDiffStart(dst []byte, room string, from, cur Cursor, count int) []byte {
	dst = append(dst, `{"t":"diff"`...)
	dst = appendField(dst, "room", room)
	dst = appendCursorField(dst, "from", from)
	dst = appendCursorField(dst, "cur", cur)
	return appendCount(dst, count)
}

// AppendListStart opens the list field key: ,"key":[
func AppendListStart(dst []byte, key string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	return append(dst, '"', ':', '[')
}

// AppendListEnd closes a list opened by AppendListStart.
func AppendListEnd(dst []byte) []byte { return append(dst, ']') }

// AppendEnd closes the message.
func AppendEnd(dst []byte) []byte { return append(dst, '}') }

// AppendMember appends one member object to an open list, with the comma
// when it is not the list's first element. meta is a compact JSON object
// (empty encodes as {}), as a string or a []byte.
func AppendMember[M ~string | ~[]byte](dst []byte, user, status string, meta M) []byte {
	dst = appendListComma(dst)
	dst = append(dst, `{"u":`...)
	dst = AppendString(dst, user)
	dst = append(dst, `,"s":`...)
	dst = AppendString(dst, status)
	dst = append(dst, `,"m":`...)
	if len(meta) == 0 {
		dst = append(dst, '{', '}')
	} else {
		dst = append(dst, meta...)
	}
	return append(dst, '}')
}

// AppendListString appends one string to an open list, with the comma when
// it is not the list's first element.
func AppendListString(dst []byte, s string) []byte {
	return AppendString(appendListComma(dst), s)
}

// AppendStrings appends the field ,"key":["a","b"] (an empty list for nil).
func AppendStrings(dst []byte, key string, list []string) []byte {
	dst = AppendListStart(dst, key)
	for _, s := range list {
		dst = AppendListString(dst, s)
	}
	return AppendListEnd(dst)
}

func appendListComma(dst []byte) []byte {
	if n := len(dst); n > 0 && dst[n-1] != '[' {
		dst = append(dst, ',')
	}
	return dst
}

func appendCount(dst []byte, count int) []byte {
	dst = append(dst, `,"count":`...)
	return strconv.AppendInt(dst, int64(count), 10)
}

func appendField(dst []byte, key, val string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return AppendString(dst, val)
}

func appendCursorField(dst []byte, key string, c Cursor) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':', '"')
	dst = AppendCursor(dst, c)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b >= 0x20 && b != '"' && b != '\\' && b < utf8.RuneSelf {
			i++
			continue
		}
		if b < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			if r == utf8.RuneError {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
