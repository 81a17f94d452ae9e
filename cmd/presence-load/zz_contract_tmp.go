package main

// TEMPORARY: a copy of the protocol contract of /work/wt/LOAD4.md so that
// centrifugo.go compiles and tests on its own before protocol.go (owner:
// helper "load") exists. Drop this file at merge.

// A protocol builds the messages of one server's wire protocol and reads its replies.
// It holds no per-connection state beyond what is passed in; calls for one connection
// come from one goroutine.
type protocol interface {
	Hello(dst []byte, user, token string) []byte // first message of a session
	Join(dst []byte, id uint32, room, status string) []byte
	Leave(dst []byte, id uint32, room string) []byte
	Set(dst []byte, id uint32, room, user, status string, sentNs int64) []byte
	Typing(dst []byte, room, user string, on bool, sentNs int64) []byte
	// Parse reads one text message from the server and calls fn once per event in it
	// (Centrifugo packs several newline-separated replies into one frame). It returns a
	// reply to send at once (an answer to an application ping) or nil.
	Parse(p []byte, fn func(ev *event)) (reply []byte, err error)
}

type eventKind uint8

const (
	evOther eventKind = iota
	evWelcome
	evAck
	evErr
	evSync
	evChange
	evLeave
	evJoin
	evTyping
	evBye
)

type event struct {
	kind    eventKind
	id      uint32 // evAck/evErr: the command
	room    []byte // may alias p: copy to keep
	user    []byte // evChange/evJoin/evLeave/evTyping: the member (one event per member)
	status  []byte // evChange/evJoin/evSync: its status
	sentNs  int64  // evChange/evTyping: the "ts" the sender embedded, 0 when absent
	on      bool   // evTyping
	members int    // evSync: how many members the sync listed
	code    string // evErr code / close reason
}

func main() {}
