package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unsafe"
)

// Field limits of the contract.
const (
	MaxIDLen     = 128 // room and user ids: 1–128 bytes of [A-Za-z0-9._:@/-]
	MaxStatusLen = 32  // status: 1–32 bytes
	MaxMetaLen   = 512 // meta: a JSON object of at most 512 bytes as sent
)

// DefaultStatus is the status of a member that never set one.
const DefaultStatus = "online"

// ErrSyntax reports a message that is not one JSON value: the connection
// closes with CloseInvalidPayload (1007).
var ErrSyntax = errors.New("wire: message is not valid JSON")

// Error is a request the server answers with an err message of Code; the
// connection stays open.
type Error struct {
	Code string // one of the ErrCode constants
	Msg  string // human readable
}

func (e *Error) Error() string { return "wire: " + e.Code + ": " + e.Msg }

func badRequest(format string, args ...any) *Error {
	return &Error{Code: ErrCodeBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// State is a member's state as a client sends it.
type State struct {
	Status string          `json:"status,omitempty"`
	Meta   json.RawMessage `json:"meta,omitempty"` // a JSON object, as sent
}

// Command is any client message. Which fields are meaningful depends on T.
type Command struct {
	T      string            `json:"t"`
	ID     int64             `json:"id,omitempty"`
	V      int               `json:"v,omitempty"`      // hello
	Token  string            `json:"token,omitempty"`  // hello, auth
	User   string            `json:"user,omitempty"`   // hello, insecure servers only
	Resume map[string]string `json:"resume,omitempty"` // hello: room → last cursor ("" = none)
	Room   string            `json:"room,omitempty"`   // join, leave, set, typing, sync
	State  *State            `json:"state,omitempty"`  // hello, join, set
	On     bool              `json:"on,omitempty"`     // typing
	TS     int64             `json:"ts,omitempty"`     // ping, pong
}

// DecodeCommand parses msg into c, which it resets first, and checks it
// against the contract: ErrSyntax for a message that is not JSON, an *Error
// with code bad_request (or too_large for an oversized meta) for a valid JSON
// message that is not a well-formed command, including an unknown t.
// Unknown fields are ignored. It does not apply defaults.
func DecodeCommand(msg []byte, c *Command) error {
	*c = Command{}
	if err := json.Unmarshal(msg, c); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || !json.Valid(msg) {
			return ErrSyntax
		}
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return badRequest("field %q has the wrong type", typ.Field)
		}
		return badRequest("message must be a JSON object with a string field t")
	}
	return c.check()
}

func (c *Command) check() error {
	needID := false
	needRoom := false
	switch c.T {
	case THello:
		if c.Token == "" && c.User == "" {
			return badRequest("hello needs token (or user on an insecure server)")
		}
		if c.User != "" && !ValidID(c.User) {
			return badRequest("user must be 1-128 bytes of [A-Za-z0-9._:@/-]")
		}
		// The first invalid room in sorted order: the same message for
		// the same command, whatever the map's order.
		bad, found := "", false
		for room := range c.Resume {
			if !ValidID(room) && (!found || room < bad) {
				bad, found = room, true
			}
		}
		if found {
			return badRequest("resume room %.140q is not a valid room id", bad)
		}
	case TJoin, TLeave, TSync:
		needID, needRoom = true, true
	case TSet:
		needID, needRoom = true, true
		if c.State == nil {
			return badRequest("set needs state")
		}
	case TTyping:
		needRoom = true
	case TAuth:
		needID = true
		if c.Token == "" {
			return badRequest("auth needs token")
		}
	case TPing, TPong:
	case "":
		return badRequest("message needs a string field t")
	default:
		return badRequest("unknown message type %.40q", c.T)
	}
	if needID && c.ID <= 0 {
		return badRequest("%s needs a positive integer id", c.T)
	}
	if needRoom && !ValidID(c.Room) {
		return badRequest("room must be 1-128 bytes of [A-Za-z0-9._:@/-]")
	}
	if c.State != nil {
		return c.State.check()
	}
	return nil
}

func (s *State) check() error {
	if s.Status != "" && len(s.Status) > MaxStatusLen {
		return badRequest("status must be 1-32 bytes")
	}
	if len(s.Meta) == 0 {
		return nil
	}
	if len(s.Meta) > MaxMetaLen {
		return &Error{Code: ErrCodeTooLarge, Msg: "meta is larger than 512 bytes"}
	}
	m := bytes.TrimLeft(s.Meta, " \t\r\n")
	if len(m) == 0 || m[0] != '{' {
		if bytes.Equal(m, []byte("null")) {
			s.Meta = nil
			return nil
		}
		return badRequest("meta must be a JSON object")
	}
	return nil
}

// ValidID reports whether s is a valid room or user id: 1–128 bytes of
// [A-Za-z0-9._:@/-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '.', b == '_', b == ':', b == '@', b == '/', b == '-':
		default:
			return false
		}
	}
	return true
}

// CompactMeta returns meta without insignificant whitespace, in a new slice
// (nil for an empty or null meta). meta must have passed DecodeCommand.
func CompactMeta(meta json.RawMessage) []byte {
	if len(meta) == 0 {
		return nil
	}
	// Sized as sent (compact is never longer): one allocation, no bigger
	// than it needs (bytes.Buffer would round a small one up to 64 bytes).
	b := bytes.NewBuffer(make([]byte, 0, len(meta)))
	if err := json.Compact(b, meta); err != nil || bytes.Equal(b.Bytes(), []byte("null")) {
		return nil
	}
	return b.Bytes()
}

// AppendCompactMeta appends meta without insignificant whitespace to dst,
// as CompactMeta does but into the caller's buffer, and nothing for an
// empty or null meta. meta must have passed DecodeCommand or DecodeRequest
// (a valid JSON object): it does not check the syntax again.
func AppendCompactMeta(dst []byte, meta []byte) []byte {
	if len(meta) == 0 || string(meta) == "null" {
		return dst
	}
	inString := false
	start := 0
	for i := 0; i < len(meta); i++ {
		c := meta[i]
		switch {
		case inString:
			if c == '\\' {
				i++ // the escaped byte cannot end the string
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ', c == '\t', c == '\n', c == '\r':
			dst = append(dst, meta[start:i]...)
			start = i + 1
		}
	}
	return append(dst, meta[start:]...)
}

// CompactMetaString is CompactMeta as a string ("" for an empty or null
// meta), without a second copy: the compacted bytes are new and never
// written again.
func CompactMetaString(meta json.RawMessage) string {
	b := CompactMeta(meta)
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Member is one room member in a sync or diff.
type Member struct {
	U string          `json:"u"`
	S string          `json:"s"`
	M json.RawMessage `json:"m"`
}

// Event is any server message. Which fields are meaningful depends on T.
type Event struct {
	T       string    `json:"t"`
	ID      int64     `json:"id"`      // ack, err
	Code    string    `json:"code"`    // err
	Msg     string    `json:"msg"`     // err
	V       int       `json:"v"`       // welcome
	Node    string    `json:"node"`    // welcome
	Conn    string    `json:"conn"`    // welcome
	User    string    `json:"user"`    // welcome
	HB      int64     `json:"hb"`      // welcome: heartbeat interval in ms
	Max     int       `json:"max"`     // welcome: max message bytes
	Room    string    `json:"room"`    // sync, diff
	From    string    `json:"from"`    // diff
	Cur     string    `json:"cur"`     // sync, diff
	Count   int       `json:"count"`   // sync, diff
	Members []Member  `json:"members"` // sync
	Join    []Member  `json:"join"`    // diff
	Update  []Member  `json:"update"`  // diff
	Leave   []string  `json:"leave"`   // diff
	Typing  *[]string `json:"typing"`  // sync; diff only when the typing set changed
	Partial bool      `json:"partial"` // sync
	TS      int64     `json:"ts"`      // ping, pong
	Exp     int64     `json:"exp"`     // refresh: unix seconds
	Reason  string    `json:"reason"`  // bye
	RetryMS int64     `json:"retry_ms"`
}

// DecodeEvent parses a server message into e, which it resets first.
func DecodeEvent(msg []byte, e *Event) error {
	*e = Event{}
	if err := json.Unmarshal(msg, e); err != nil {
		return fmt.Errorf("wire: bad server message: %w", err)
	}
	if e.T == "" {
		return errors.New("wire: server message without t")
	}
	return nil
}
