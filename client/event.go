package client

import (
	"errors"
	"strconv"
	"time"
)

var (
	// ErrClosed is returned by the methods of a client that has stopped:
	// after Close, or wrapped together with the terminal error after a close
	// code that forbids reconnecting.
	ErrClosed = errors.New("client: closed")

	// ErrDisconnected is returned by Typing while no connection is up, and
	// by internal commands (auth) pending when a connection is lost.
	ErrDisconnected = errors.New("client: disconnected")

	// ErrServerSilent is the reason of a disconnect when the server sent
	// nothing for its heartbeat interval plus Config.HeartbeatTimeout.
	ErrServerSilent = errors.New("client: server silent for longer than hb + heartbeat timeout")

	// ErrNoTokenFunc is reported (as an Error event) when the server asks
	// for a token refresh and Config.TokenFunc is nil.
	ErrNoTokenFunc = errors.New("client: server asked for a token refresh but Config.TokenFunc is nil")
)

// CommandError is the server's err answer to a command.
type CommandError struct {
	Code string // one of the ErrCode constants, e.g. "not_joined"
	Msg  string // human readable
}

func (e *CommandError) Error() string { return "client: " + e.Code + ": " + e.Msg }

// CloseError is a close frame from the server: the reason of a disconnect,
// or the terminal error of a client whose close code forbids reconnecting.
type CloseError struct {
	Code   CloseCode
	Reason string
}

func (e *CloseError) Error() string {
	s := "client: server closed the connection: " + strconv.Itoa(int(e.Code)) + " " + e.Code.String()
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	// EventConnected: a welcome arrived. Node, Conn, User are set;
	// Resumed says whether the hello asked to resume rooms (each of them
	// then answers with an EventChanged, resume succeeded, or an
	// EventSynced).
	EventConnected EventKind = iota + 1
	// EventDisconnected: a connection ended or a connection attempt
	// failed. Close is the server's close code (0 when the connection was
	// lost without one), Err the reason, RetryIn the delay before the next
	// attempt. Terminal means the client stopped and will not reconnect.
	EventDisconnected
	// EventSynced: a full sync of Room replaced its view. Sync is the
	// sync.
	EventSynced
	// EventChanged: a diff was applied to Room's view. Diff is the diff:
	// who joined, updated, left, the typing set when it changed, the count.
	EventChanged
	// EventRefreshed: the server acknowledged a renewed token.
	EventRefreshed
	// EventBye: the server is draining; RetryIn is its retry_ms.
	EventBye
	// EventError: an err message without id, an error answer to a
	// command the client sent on its own (gap sync, resume set, auth), or a
	// failed token refresh. Err is set; Room when the error is about one.
	EventError
)

func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventDisconnected:
		return "disconnected"
	case EventSynced:
		return "synced"
	case EventChanged:
		return "changed"
	case EventRefreshed:
		return "refreshed"
	case EventBye:
		return "bye"
	case EventError:
		return "error"
	}
	return "unknown"
}

// Event is something that happened to the client, delivered on the channel
// returned by Client.Events. Which fields are set depends on Kind.
type Event struct {
	Kind EventKind
	Room string // Synced, Changed; Error when about a room

	// Sync (Synced) and Diff (Changed) are the server's message. The
	// members' Meta bytes are shared with the client's view of the room:
	// do not modify them.
	Sync *Sync
	Diff *Diff

	Node, Conn, User string // Connected: from the welcome
	Resumed          bool   // Connected: the hello carried resume

	Close    CloseCode     // Disconnected: the close code, 0 without one
	Err      error         // Disconnected, Error
	RetryIn  time.Duration // Disconnected: delay before the next attempt; Bye: retry_ms
	Terminal bool          // Disconnected: the client stopped
}
