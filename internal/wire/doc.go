// Package wire is protocol v1 of presenced (docs/protocol.md): message
// types, error codes, close codes, the decoder of client commands and server
// events, and append-style encoders for both directions.
//
// Encoders append one JSON message to a caller's buffer and allocate nothing
// when it has room, so the server encodes each room diff once and sends the
// same bytes to every subscriber:
//
//	buf = wire.AppendDiffStart(buf[:0], "chat:42", from, cur, 3)
//	buf = wire.AppendListStart(buf, "join")
//	buf = wire.AppendMember(buf, "carol", "online", nil)
//	buf = wire.AppendListEnd(buf)
//	buf = wire.AppendEnd(buf)
//
// Decoding: DecodeCommand uses encoding/json and returns ErrSyntax for a
// message that is not JSON (close 1007) and an *Error (answered with err,
// the connection stays open) for JSON that is not a valid command. The
// server decodes with DecodeRequest: the same results, but the common
// commands are decoded in place, without allocating, into a Request whose
// strings alias the message (copy what outlives it).
//
// Everything here is a pure function or an immutable value: safe for
// concurrent use. Standard library only.
package wire
