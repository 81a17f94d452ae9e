package poller

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

type echoHandler struct{}

func (echoHandler) OnOpen(c *Conn) {}
func (echoHandler) OnMessage(c *Conn, op ws.OpCode, msg []byte) {
	c.Send(AppendFrame(nil, op, msg))
}
func (echoHandler) OnDeadline(c *Conn)            {}
func (echoHandler) OnClose(c *Conn, i CloseInfo) {}

func TestSmokeEcho(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0"}, echoHandler{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	conn, _, _, err := ws.Dial(context.Background(), "ws://"+s.Addr().String()+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 3; i++ {
		if err := wsutil.WriteClientText(conn, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		msg, err := wsutil.ReadServerText(conn)
		if err != nil || string(msg) != "hello" {
			t.Fatalf("got %q %v", msg, err)
		}
	}
	_ = net.IPv4len
}
