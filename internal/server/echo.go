package server

import (
	"github.com/gobwas/ws"

	"github.com/presenced/presenced/poller"
)

// echoApp is the temporary application of /ws until the presence core
// (issue T2) replaces it. It sends every text message back unchanged and
// closes the connection with 1003 on a binary message, as protocol v1
// requires. A reply that does not fit in the outbox is dropped (and counted
// in presenced_send_full_total).
type echoApp struct {
	s *Server // static
}

var _ poller.Handler = echoApp{}

func (echoApp) OnOpen(*poller.Conn) {}

func (a echoApp) OnMessage(c *poller.Conn, op ws.OpCode, msg []byte) {
	if op != ws.OpText {
		c.Close(ws.StatusUnsupportedData, "binary messages are not supported")
		return
	}
	// Sent bytes must not change until the kernel has them: one buffer per
	// reply.
	a.s.send(c, poller.AppendTextFrame(make([]byte, 0, len(msg)+10), msg))
}

func (echoApp) OnDeadline(*poller.Conn) {}

func (echoApp) OnClose(*poller.Conn, poller.CloseInfo) {}
