package wire

// Request is a client command as the server handles it: Command without
// copies. DecodeRequest fills it without allocating for the commands of
// the contract as clients send them (plain strings, each field once,
// no resume), so a Request belongs on the stack of the code handling one
// message.
//
// Aliasing: Token, User, Room, State.Status and State.Meta may point into
// the message bytes given to DecodeRequest. They are valid only while those
// bytes are: whatever outlives the message (a user id, a room name kept by
// the room table, a status, a meta) must be copied (strings.Clone,
// CompactMeta) or interned. T is always one of the T constants (or a copy
// for an unknown type).
type Request struct {
	T        string
	ID       int64
	V        int    // hello
	Token    string // hello, auth
	User     string // hello, insecure servers only
	Room     string // join, leave, set, typing, sync
	State    State  // hello, join, set: meaningful when HasState
	HasState bool   // the message carried a state object (not null)
	On       bool   // typing
	TS       int64  // ping, pong
	// Resume is hello's room → last cursor. A hello with resume is decoded
	// by DecodeCommand: the map and its strings are new, never aliased.
	Resume map[string]string
}

// DecodeRequest is DecodeCommand into a Request: the same checks, the same
// errors (ErrSyntax, or an *Error with the same code and message), the same
// fields, and r is reset first. Well-formed common commands are decoded in
// place without allocating (see Request for what aliases msg); anything
// else (escapes in strings, non-ASCII, duplicate keys, resume, deep
// nesting, any error) is decoded by DecodeCommand.
func DecodeRequest(msg []byte, r *Request) error {
	if decodeFast(msg, r) {
		return nil
	}
	return decodeSlow(msg, r)
}

// decodeSlow decodes msg with DecodeCommand. It is a function of its own
// so that its Command is allocated only when it runs.
func decodeSlow(msg []byte, r *Request) error {
	c := new(Command)
	err := DecodeCommand(msg, c)
	*r = Request{T: c.T, ID: c.ID, V: c.V, Token: c.Token, User: c.User, Room: c.Room, On: c.On, TS: c.TS, Resume: c.Resume}
	if c.State != nil {
		r.State, r.HasState = *c.State, true
	}
	return err
}

// Fields of a command, as bits of decodeFast's seen set.
const (
	fieldUnknown = iota
	fieldT
	fieldID
	fieldV
	fieldToken
	fieldUser
	fieldResume
	fieldRoom
	fieldState
	fieldOn
	fieldTS
	fieldStatus // in state
	fieldMeta   // in state
)

// maxFastDepth bounds the nesting decodeFast skips; deeper values go to
// encoding/json (whose own limit is 10,000).
const maxFastDepth = 32

// decodeFast decodes msg into r if it is a valid command on the fast path
// and reports whether it did; false leaves r in any state.
func decodeFast(msg []byte, r *Request) bool {
	*r = Request{}
	s := scanner{b: msg}
	s.ws()
	if !s.eat('{') {
		return false
	}
	var seen uint16
	for {
		s.ws()
		key, ok := s.key()
		if !ok {
			return false
		}
		f := commandField(key)
		if f != fieldUnknown {
			if seen&(1<<f) != 0 {
				return false // encoding/json keeps the last one, or merges
			}
			seen |= 1 << f
		}
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		switch f {
		case fieldT:
			r.T, ok = s.stringOrNull()
		case fieldID:
			r.ID, ok = s.intOrNull()
		case fieldV:
			var v int64
			v, ok = s.intOrNull()
			r.V = int(v)
		case fieldToken:
			r.Token, ok = s.stringOrNull()
		case fieldUser:
			r.User, ok = s.stringOrNull()
		case fieldRoom:
			r.Room, ok = s.stringOrNull()
		case fieldOn:
			r.On, ok = s.boolOrNull()
		case fieldTS:
			r.TS, ok = s.intOrNull()
		case fieldState:
			ok = s.state(r)
		case fieldResume:
			return false
		default:
			ok = s.skip(0)
		}
		if !ok {
			return false
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if !s.eat('}') {
			return false
		}
		break
	}
	s.ws()
	return s.i == len(s.b) && r.check()
}

// state decodes the value of "state": null or an object.
func (s *scanner) state(r *Request) bool {
	if s.literal("null") {
		return true
	}
	if !s.eat('{') {
		return false
	}
	r.HasState = true
	s.ws()
	if s.eat('}') {
		return true
	}
	var seen uint16
	for {
		s.ws()
		key, ok := s.key()
		if !ok {
			return false
		}
		f := stateField(key)
		if f != fieldUnknown {
			if seen&(1<<f) != 0 {
				return false
			}
			seen |= 1 << f
		}
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		switch f {
		case fieldStatus:
			r.State.Status, ok = s.stringOrNull()
		case fieldMeta:
			start := s.i
			ok = s.skip(0)
			r.State.Meta = s.b[start:s.i:s.i]
		default:
			ok = s.skip(0)
		}
		if !ok {
			return false
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		return s.eat('}')
	}
}

// check is Command.check for the fast path: it reports whether r is a valid
// command (errors are left to DecodeCommand, which words them), sets T to
// its constant, and clears a null meta.
func (r *Request) check() bool {
	needID, needRoom := false, false
	switch r.T {
	case THello:
		r.T = THello
		if r.Token == "" && r.User == "" || r.User != "" && !ValidID(r.User) {
			return false
		}
	case TJoin:
		r.T, needID, needRoom = TJoin, true, true
	case TLeave:
		r.T, needID, needRoom = TLeave, true, true
	case TSync:
		r.T, needID, needRoom = TSync, true, true
	case TSet:
		r.T, needID, needRoom = TSet, true, true
		if !r.HasState {
			return false
		}
	case TTyping:
		r.T, needRoom = TTyping, true
	case TAuth:
		r.T, needID = TAuth, true
		if r.Token == "" {
			return false
		}
	case TPing:
		r.T = TPing
	case TPong:
		r.T = TPong
	default:
		return false
	}
	if needID && r.ID <= 0 || needRoom && !ValidID(r.Room) {
		return false
	}
	if !r.HasState {
		return true
	}
	st := &r.State
	if len(st.Status) > MaxStatusLen || len(st.Meta) > MaxMetaLen {
		return false
	}
	switch {
	case len(st.Meta) == 0, st.Meta[0] == '{':
	case string(st.Meta) == "null":
		st.Meta = nil
	default:
		return false
	}
	return true
}

// commandField is the field a top-level key names. Keys match without
// regard to ASCII case, as encoding/json matches them (non-ASCII keys never
// reach here).
func commandField(key []byte) int {
	switch len(key) {
	case 1:
		if key[0]|0x20 == 't' {
			return fieldT
		}
		if key[0]|0x20 == 'v' {
			return fieldV
		}
	case 2:
		switch {
		case foldEq(key, "id"):
			return fieldID
		case foldEq(key, "on"):
			return fieldOn
		case foldEq(key, "ts"):
			return fieldTS
		}
	case 4:
		switch {
		case foldEq(key, "room"):
			return fieldRoom
		case foldEq(key, "user"):
			return fieldUser
		}
	case 5:
		switch {
		case foldEq(key, "token"):
			return fieldToken
		case foldEq(key, "state"):
			return fieldState
		}
	case 6:
		if foldEq(key, "resume") {
			return fieldResume
		}
	}
	return fieldUnknown
}

func stateField(key []byte) int {
	switch {
	case foldEq(key, "status"):
		return fieldStatus
	case foldEq(key, "meta"):
		return fieldMeta
	}
	return fieldUnknown
}

// foldEq reports whether key equals the lower-case ASCII name without
// regard to case. key holds printable ASCII only.
func foldEq(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := range len(key) {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}
