package client

import "github.com/presenced/presenced/internal/wire"

// Protocol types of internal/wire the API uses, aliased so that programs
// outside this module, which cannot import internal/wire, can name them.
type (
	// State is a member's state as the client sends it in join and set:
	// Status (1–32 bytes, "" means "online") and Meta (a JSON object of
	// at most 512 bytes, or empty).
	State = wire.State
	// CloseCode is a WebSocket close code of the protocol.
	CloseCode = wire.CloseCode
	// Message is a decoded server message, as carried by Event.Diff.
	Message = wire.Event
)

// Close codes of the protocol (see the contract's table).
const (
	CloseNormal         = wire.CloseNormal
	CloseGoingAway      = wire.CloseGoingAway
	CloseProtocolError  = wire.CloseProtocolError
	CloseUnsupported    = wire.CloseUnsupported
	CloseInvalidPayload = wire.CloseInvalidPayload
	CloseTooBig         = wire.CloseTooBig
	CloseHeartbeat      = wire.CloseHeartbeat
	CloseSlowConsumer   = wire.CloseSlowConsumer
	CloseTokenExpired   = wire.CloseTokenExpired
	CloseHelloTimeout   = wire.CloseHelloTimeout
	CloseRateLimited    = wire.CloseRateLimited
	CloseBadRequest     = wire.CloseBadRequest
	CloseUnauthorized   = wire.CloseUnauthorized
	CloseForbidden      = wire.CloseForbidden
	CloseVersion        = wire.CloseVersion
)

// Error codes of err answers (CommandError.Code).
const (
	ErrCodeBadRequest   = wire.ErrCodeBadRequest
	ErrCodeUnauthorized = wire.ErrCodeUnauthorized
	ErrCodeForbidden    = wire.ErrCodeForbidden
	ErrCodeNotJoined    = wire.ErrCodeNotJoined
	ErrCodeTooManyRooms = wire.ErrCodeTooManyRooms
	ErrCodeRateLimited  = wire.ErrCodeRateLimited
	ErrCodeTooLarge     = wire.ErrCodeTooLarge
	ErrCodeInternal     = wire.ErrCodeInternal
)
