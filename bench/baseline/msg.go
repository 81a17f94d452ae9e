package main

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// The messages of protocol v1 that the baseline speaks, encoded and
// decoded with encoding/json as a typical server does.

// inMsg is any client message; which fields are set depends on T.
type inMsg struct {
	T      string            `json:"t"`
	V      int               `json:"v"`
	ID     int64             `json:"id"`
	User   string            `json:"user"`
	Token  string            `json:"token"`
	Room   string            `json:"room"`
	State  *inState          `json:"state"`
	On     bool              `json:"on"`
	TS     json.RawMessage   `json:"ts"`
	Resume map[string]string `json:"resume"`
}

type inState struct {
	Status string          `json:"status"`
	Meta   json.RawMessage `json:"meta"`
}

type memberOut struct {
	U string          `json:"u"`
	S string          `json:"s"`
	M json.RawMessage `json:"m"`
}

type welcomeOut struct {
	T    string `json:"t"`
	V    int    `json:"v"`
	Node string `json:"node"`
	Conn string `json:"conn"`
	User string `json:"user"`
	HB   int64  `json:"hb"`
	Max  int64  `json:"max"`
}

type ackOut struct {
	T  string `json:"t"`
	ID int64  `json:"id"`
}

type errOut struct {
	T    string `json:"t"`
	ID   int64  `json:"id,omitempty"`
	Code string `json:"code"`
	Msg  string `json:"msg"`
}

type syncOut struct {
	T       string      `json:"t"`
	Room    string      `json:"room"`
	Cur     string      `json:"cur"`
	Count   int         `json:"count"`
	Members []memberOut `json:"members"`
	Typing  []string    `json:"typing"`
	Partial bool        `json:"partial"`
}

type diffOut struct {
	T      string      `json:"t"`
	Room   string      `json:"room"`
	From   string      `json:"from"`
	Cur    string      `json:"cur"`
	Count  int         `json:"count"`
	Join   []memberOut `json:"join,omitempty"`
	Update []memberOut `json:"update,omitempty"`
	Leave  []string    `json:"leave,omitempty"`
	Typing *[]string   `json:"typing,omitempty"`
}

type pingOut struct {
	T  string `json:"t"`
	TS int64  `json:"ts"`
}

type pongOut struct {
	T  string          `json:"t"`
	TS json.RawMessage `json:"ts"`
}

// mustJSON encodes v; the types above always encode.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// tokenSubject returns the sub claim of a JWT without verifying it (the
// baseline accepts any token), or "" when it has none.
func tokenSubject(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return claims.Sub
}
