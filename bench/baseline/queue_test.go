package main

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsPair returns the server side of a real WebSocket connection and its
// client side.
func wsPair(t *testing.T) (srv, cli *websocket.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err == nil {
			got <- ws
		}
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	cli, _, err = websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv = <-got
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return srv, cli
}

// TestSendQueue: the queue holds up to SendBuffer messages, signals the
// writer once, and drops the connection beyond; a taken queue keeps no
// storage.
func TestSendQueue(t *testing.T) {
	srv, cli := wsPair(t)
	c := &conn{s: &Server{cfg: Config{SendBuffer: 3}.withDefaults()}, ws: srv, wake: make(chan struct{}, 1)}
	for _, m := range []string{"a", "b", "c"} {
		c.send([]byte(m))
	}
	if len(c.wake) != 1 {
		t.Errorf("wake holds %d signals, want 1", len(c.wake))
	}
	q := c.takeQueue()
	if len(q) != 3 || string(q[0]) != "a" || string(q[2]) != "c" {
		t.Errorf("queue %q, want a b c", q)
	}
	if c.q != nil {
		t.Errorf("queue kept after take: %d", cap(c.q))
	}
	for range 4 { // one more than the cap: dropped
		c.send([]byte("x"))
	}
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := cli.ReadMessage(); err == nil {
		t.Error("the connection over its queue's cap is still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the connection over its queue's cap was not dropped")
	}
}

func TestSendBufferDefault(t *testing.T) {
	if got := (Config{}).withDefaults().SendBuffer; got != DefaultSendBuffer {
		t.Errorf("SendBuffer default %d, want %d", got, DefaultSendBuffer)
	}
}
