package wire

import (
	"encoding/json"
	"strconv"
)

// Client → server encoders, for the Go SDK and the load generator.

// Hello is the session start a client sends.
type Hello struct {
	Token  string            // a JWT
	User   string            // insecure servers only
	Resume map[string]string // room → last cursor seen ("" = none)
	State  *State            // the state for the resumed rooms
}

// MarshalHello encodes h with v set to Version.
func MarshalHello(h Hello) ([]byte, error) {
	return json.Marshal(Command{T: THello, V: Version, Token: h.Token, User: h.User, Resume: h.Resume, State: h.State})
}

// AppendJoin encodes a join; st may be nil.
func AppendJoin(dst []byte, id int64, room string, st *State) []byte {
	dst = appendCmd(dst, TJoin, id, room)
	if st != nil {
		dst = appendState(dst, *st)
	}
	return append(dst, '}')
}

// AppendLeave encodes a leave.
func AppendLeave(dst []byte, id int64, room string) []byte {
	return append(appendCmd(dst, TLeave, id, room), '}')
}

// AppendSet encodes a set.
func AppendSet(dst []byte, id int64, room string, st State) []byte {
	return append(appendState(appendCmd(dst, TSet, id, room), st), '}')
}

// AppendSyncRequest encodes a sync command.
func AppendSyncRequest(dst []byte, id int64, room string) []byte {
	return append(appendCmd(dst, TSync, id, room), '}')
}

// AppendTyping encodes a typing notice.
func AppendTyping(dst []byte, room string, on bool) []byte {
	dst = append(dst, `{"t":"typing"`...)
	dst = appendField(dst, "room", room)
	dst = append(dst, `,"on":`...)
	dst = strconv.AppendBool(dst, on)
	return append(dst, '}')
}

// AppendAuth encodes a token refresh.
func AppendAuth(dst []byte, id int64, token string) []byte {
	dst = append(dst, `{"t":"auth","id":`...)
	dst = strconv.AppendInt(dst, id, 10)
	dst = appendField(dst, "token", token)
	return append(dst, '}')
}

func appendCmd(dst []byte, t string, id int64, room string) []byte {
	dst = append(dst, `{"t":"`...)
	dst = append(dst, t...)
	dst = append(dst, `","id":`...)
	dst = strconv.AppendInt(dst, id, 10)
	return appendField(dst, "room", room)
}

func appendState(dst []byte, st State) []byte {
	dst = append(dst, `,"state":{`...)
	comma := false
	if st.Status != "" {
		dst = append(dst, `"status":`...)
		dst = AppendString(dst, st.Status)
		comma = true
	}
	if len(st.Meta) > 0 {
		if comma {
			dst = append(dst, ',')
		}
		dst = append(dst, `"meta":`...)
		dst = append(dst, st.Meta...)
	}
	return append(dst, '}')
}
