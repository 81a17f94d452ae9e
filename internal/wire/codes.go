package wire

// Version is the protocol version this package speaks.
const Version = 1

// Message types: the "t" field of every message.
const (
	THello   = "hello"   // C→S: session start
	TWelcome = "welcome" // S→C: answer to hello
	TJoin    = "join"    // C→S
	TLeave   = "leave"   // C→S
	TSet     = "set"     // C→S
	TTyping  = "typing"  // C→S, no id, no answer
	TSync    = "sync"    // C→S command and S→C full room state
	TAuth    = "auth"    // C→S token refresh
	TPing    = "ping"    // both ways
	TPong    = "pong"    // both ways
	TAck     = "ack"     // S→C
	TErr     = "err"     // S→C
	TDiff    = "diff"    // S→C
	TRefresh = "refresh" // S→C: the token expires soon
	TBye     = "bye"     // S→C: the server is draining
)

// Error codes carried by err messages.
const (
	ErrCodeBadRequest   = "bad_request"
	ErrCodeUnauthorized = "unauthorized"
	ErrCodeForbidden    = "forbidden"
	ErrCodeNotJoined    = "not_joined"
	ErrCodeTooManyRooms = "too_many_rooms"
	ErrCodeRateLimited  = "rate_limited"
	ErrCodeTooLarge     = "too_large"
	ErrCodeInternal     = "internal"
)

// CloseCode is a WebSocket close status code of the contract.
type CloseCode uint16

// Close codes of the contract.
const (
	CloseNormal          CloseCode = 1000 // normal
	CloseGoingAway       CloseCode = 1001 // drain: reconnect after bye.retry_ms
	CloseProtocolError   CloseCode = 1002
	CloseUnsupported     CloseCode = 1003 // binary frame
	CloseInvalidPayload  CloseCode = 1007 // invalid UTF-8 or JSON
	ClosePolicyViolation CloseCode = 1008 // the transport's bound on unread input (netpoll engine; not in the contract's table)
	CloseTooBig          CloseCode = 1009
	CloseInternalError   CloseCode = 1011 // the server failed (not in the contract's table: reconnect with backoff)
	CloseHeartbeat       CloseCode = 4001 // no client message for hb + hb_timeout
	CloseSlowConsumer    CloseCode = 4002 // outbox full for slow_timeout
	CloseTokenExpired    CloseCode = 4003 // token expired and not renewed within auth_grace
	CloseHelloTimeout    CloseCode = 4004 // no hello within hello_timeout
	CloseRateLimited     CloseCode = 4029 // far over the command rate for seconds
	CloseBadRequest      CloseCode = 4100 // a message other than hello first, or a bad hello
	CloseUnauthorized    CloseCode = 4101 // bad or expired token
	CloseForbidden       CloseCode = 4103 // the connection may not do what it asked
	CloseVersion         CloseCode = 4105 // unsupported protocol version
)

// Reconnect reports whether a client should reconnect after the server
// closed with code, per the contract's table: 1001 and 4000–4099 yes;
// 1000, protocol errors and 4100–4199 no. Codes the contract does not name
// (1006 abnormal closure, 1011 internal error, a dropped TCP connection)
// mean the connection was lost: reconnect with backoff.
func Reconnect(code CloseCode) bool {
	switch {
	case code == CloseNormal, code == CloseProtocolError, code == CloseUnsupported,
		code == CloseInvalidPayload, code == CloseTooBig:
		return false
	case code >= 4100 && code <= 4199:
		return false
	}
	return true
}

// String names the code as the contract does.
func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseGoingAway:
		return "going_away"
	case CloseProtocolError:
		return "protocol_error"
	case CloseUnsupported:
		return "binary_frame"
	case CloseInvalidPayload:
		return "invalid_payload"
	case ClosePolicyViolation:
		return "policy_violation"
	case CloseTooBig:
		return "too_big"
	case CloseInternalError:
		return "internal_error"
	case CloseHeartbeat:
		return "heartbeat_timeout"
	case CloseSlowConsumer:
		return "slow_consumer"
	case CloseTokenExpired:
		return "token_expired"
	case CloseHelloTimeout:
		return "hello_timeout"
	case CloseRateLimited:
		return "rate_limited"
	case CloseBadRequest:
		return "bad_request"
	case CloseUnauthorized:
		return "unauthorized"
	case CloseForbidden:
		return "forbidden"
	case CloseVersion:
		return "unsupported_version"
	}
	return "other"
}
