package presence

import (
	"iter"

	"github.com/presenced/presenced/internal/wire"
)

// CloseReason says why a connection ended. Its String is a stable
// snake_case label for logs and metrics; HandleClose returns it and counts
// it in Metrics.Closes.
type CloseReason uint8

const (
	// ClosePeer: the client sent a close frame (any code; 1000 makes its
	// members leave at once, others keep them for LeaveGrace).
	ClosePeer CloseReason = iota + 1
	// CloseReset: the TCP connection ended without a close frame.
	CloseReset
	// CloseHeartbeat: no client message for hb + hb_timeout (4001).
	CloseHeartbeat
	// CloseHelloTimeout: no hello within HelloTimeout (4004).
	CloseHelloTimeout
	// CloseSlow: the outbox stayed full for SlowTimeout (4002).
	CloseSlow
	// CloseTokenExpired: the token expired and was not renewed within
	// AuthGrace (4003). Kept apart from CloseAuth: it invites a reconnect
	// and is the client's refresh failing, not a refused token.
	CloseTokenExpired
	// CloseAuth: a token was refused (4101) or names another user (4103).
	CloseAuth
	// CloseRate: far over the command rate for FloodSeconds (4029).
	CloseRate
	// CloseProtocol: the client broke the protocol: presence's 1003 (binary
	// message), 1007 (invalid JSON), 4100 (bad request before or at
	// hello), 4105 (version), and the transport's 1002, 1007 (invalid
	// UTF-8) and 1009.
	CloseProtocol
	// CloseDrain: Hub.Drain sent bye and 1001.
	CloseDrain
	// CloseShutdown: the transport stopped serving (1001) before presence
	// closed the connection.
	CloseShutdown
	// CloseInternal: the server failed (1011): the token verifier failed at
	// hello, or a handler panicked.
	CloseInternal
	// CloseAdmin: an operator disconnected the user (Hub.Disconnect, the
	// admin API). With a code that forbids a reconnect (4100–4199) its
	// members leave at once; with one that invites it (4000–4099) they
	// keep LeaveGrace, like every close that invites the client back.
	CloseAdmin

	closeReasonEnd // one past the last
)

// CloseReasons yields every CloseReason, in order, so a metrics adapter can
// create each label up front.
func CloseReasons() iter.Seq[CloseReason] {
	return func(yield func(CloseReason) bool) {
		for r := ClosePeer; r < closeReasonEnd; r++ {
			if !yield(r) {
				return
			}
		}
	}
}

func (r CloseReason) String() string {
	switch r {
	case ClosePeer:
		return "peer"
	case CloseReset:
		return "reset"
	case CloseHeartbeat:
		return "heartbeat"
	case CloseHelloTimeout:
		return "hello_timeout"
	case CloseSlow:
		return "slow"
	case CloseTokenExpired:
		return "token_expired"
	case CloseAuth:
		return "auth"
	case CloseRate:
		return "rate"
	case CloseProtocol:
		return "protocol"
	case CloseDrain:
		return "drain"
	case CloseShutdown:
		return "shutdown"
	case CloseInternal:
		return "internal"
	case CloseAdmin:
		return "admin"
	}
	return "unknown"
}

// EndCause is how the transport saw a connection end.
type EndCause uint8

const (
	// EndLost: the connection is gone and nothing more is known (a TCP
	// reset or EOF without a close frame). The zero value.
	EndLost EndCause = iota
	// EndClosed: the closing handshake the session started (Sink.Close)
	// ended; ConnEnd.Code is the code it sent.
	EndClosed
	// EndPeer: the client sent a close frame first; ConnEnd.Code is its
	// code (1005 if it had none).
	EndPeer
	// EndProtocol: the transport closed the connection for a protocol
	// violation; ConnEnd.Code is what it sent (1002, 1007, 1009).
	EndProtocol
	// EndTimeout: a closing handshake with ConnEnd.Code, started by either
	// side, did not finish in time.
	EndTimeout
	// EndShutdown: the transport stopped serving and closed the connection
	// itself (1001).
	EndShutdown
	// EndFailed: the server failed while handling the connection (a handler
	// panic) and closed it with 1011.
	EndFailed
)

// ConnEnd is what the transport saw when a connection ended: who started
// the end and the close code on the wire. HandleClose turns it into a
// CloseReason and a leave mode.
type ConnEnd struct {
	Cause EndCause
	Code  wire.CloseCode // 0 if no close frame was involved
}

// closeRecord packs the first close a session started: code<<8 | reason,
// and overDrain. 0: none.
type closeRecord uint32

// overDrain marks an operator's close that took over the drain's
// (Session.takeDrain): the record holds the operator's code and reason,
// but the connection's close frame was the drain's 1001.
const overDrain closeRecord = 1 << 24

func recordOf(code wire.CloseCode, reason CloseReason) closeRecord {
	return closeRecord(code)<<8 | closeRecord(reason)
}

func (c closeRecord) code() wire.CloseCode { return wire.CloseCode(c >> 8 & 0xffff) }
func (c closeRecord) reason() CloseReason  { return CloseReason(c & 0xff) }
func (c closeRecord) started() bool        { return c != 0 }

// sent is the code of the close frame: the drain's 1001 for a record
// that took over the drain's.
func (c closeRecord) sent() wire.CloseCode {
	if c&overDrain != 0 {
		return wire.CloseGoingAway
	}
	return c.code()
}

// is reports whether the session's close sent code.
func (c closeRecord) is(code wire.CloseCode) bool { return c.started() && c.sent() == code }

// ending decides, in one place, why a connection ended and whether its
// members stay for a grace (Config.LeaveGrace, plus its bye's retry_ms for
// a drain: see HandleClose). own is the close the session started
// (closeWith), if any. The transport's view says who started the end: a
// close frame from the client, a transport protocol error, the transport's
// shutdown or a handler panic came first, so any close of the session's
// was not sent; otherwise the session's own close is why.
func ending(end ConnEnd, own closeRecord) (reason CloseReason, grace bool) {
	code := end.Code
	switch end.Cause {
	case EndPeer:
		reason = ClosePeer
	case EndProtocol:
		reason = CloseProtocol // 1002, 1007, 1009
		if code == wire.ClosePolicyViolation {
			reason = CloseRate // 1008: the client sent far more than it read (the transport's input bound): a flood
		}
	case EndShutdown:
		reason = CloseShutdown
	case EndFailed:
		reason = CloseInternal
	case EndLost:
		reason = CloseReset
		if own.started() {
			reason, code = own.reason(), own.code()
		}
	case EndClosed, EndTimeout:
		// Ours if we closed with that code (a timeout may also end the
		// client's or the transport's handshake); else the code tells.
		if own.started() && (end.Cause == EndClosed || own.is(code)) {
			reason, code = own.reason(), own.code()
		} else {
			reason = reasonOfCode(code)
		}
	default:
		reason = CloseReset
	}
	return reason, graced(reason, code)
}

// graced reports whether members of a connection that ended for reason,
// with code, stay for LeaveGrace: the client closing with 1000, protocol
// violations, refused tokens and an operator's disconnect (closes that forbid a reconnect) leave at
// once; lost connections and closes that invite a reconnect (heartbeat,
// slow, token expiry, rate, drain, shutdown, internal) keep them.
func graced(reason CloseReason, code wire.CloseCode) bool {
	switch reason {
	case ClosePeer:
		return code != wire.CloseNormal
	case CloseProtocol, CloseAuth:
		return false
	case CloseAdmin: // the operator's code says whether the client comes back
		return wire.Reconnect(code)
	}
	return true
}

// reasonOfCode names a close the session did not record: a closing
// handshake that timed out, started by the client (its code) or the
// transport (1001 shutdown, 1002/1007/1009), or a session close made
// without closeWith.
func reasonOfCode(code wire.CloseCode) CloseReason {
	switch code {
	case wire.CloseGoingAway:
		return CloseShutdown
	case wire.CloseProtocolError, wire.CloseUnsupported, wire.CloseInvalidPayload, wire.CloseTooBig,
		wire.CloseBadRequest, wire.CloseVersion:
		return CloseProtocol
	case wire.CloseInternalError:
		return CloseInternal
	case wire.CloseHeartbeat:
		return CloseHeartbeat
	case wire.CloseSlowConsumer:
		return CloseSlow
	case wire.CloseTokenExpired:
		return CloseTokenExpired
	case wire.CloseHelloTimeout:
		return CloseHelloTimeout
	case wire.CloseRateLimited, wire.ClosePolicyViolation:
		return CloseRate // 1008: the client sent far more than it read (netpoll's input bound), a flood
	case wire.CloseUnauthorized, wire.CloseForbidden:
		return CloseAuth
	}
	return ClosePeer
}

// closeWith is the one way a session closes its connection: the first
// close wins and records code and reason for HandleClose; later ones do
// nothing. Safe from any goroutine (room flushers close slow consumers).
// It reports whether it started the close: false when another close of
// the session came first, or the client or the transport had already
// started closing the connection (then the transport's view is the reason).
func (s *Session) closeWith(code wire.CloseCode, reason CloseReason, text string) (started bool) {
	if !s.claimClose(code, reason) {
		return false
	}
	return s.sink.Close(code, text)
}

// endedRecord is claimed by HandleClose when the session had started no
// close, so that no close starts after the end.
const endedRecord = uint32(closeReasonEnd) // recordOf(0, closeReasonEnd)

// claimClose records code and reason if no close was started, and reports
// whether it did: the caller then sends its last frames and closes the
// sink.
func (s *Session) claimClose(code wire.CloseCode, reason CloseReason) bool {
	return s.closed.CompareAndSwap(0, uint32(recordOf(code, reason)))
}

// drainRecord is the record of the drain's close (bye, 1001).
const drainRecord = uint32(closeRecord(wire.CloseGoingAway)<<8 | closeRecord(CloseDrain))

// takeDrain makes the drain's close of the session, if that is its close
// and the connection has not ended, an operator's close with code: the
// client got bye and 1001 already (one close frame per connection), but
// the connection ends as an operator's close, counted as CloseAdmin, and
// with a code that forbids a reconnect its memberships end without
// LeaveGrace. It reports whether it did. Safe from any goroutine.
func (s *Session) takeDrain(code wire.CloseCode) bool {
	return s.closed.CompareAndSwap(drainRecord, uint32(recordOf(code, CloseAdmin)|overDrain))
}

// closing reports whether the session started a close or the connection
// is gone: the Handle methods then do nothing.
func (s *Session) closing() bool {
	return s.state == ended || s.closed.Load() != 0
}
