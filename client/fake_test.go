package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"

	"github.com/presenced/presenced/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait of the tests for something that should
// happen promptly.
const waitTimeout = 3 * time.Second

// fakeServer speaks just enough of protocol v1 for one test: it answers
// hello with welcome (unless onHello says otherwise), records every client
// message, and with auto answers commands the way presenced does.
type fakeServer struct {
	t   *testing.T
	srv *httptest.Server
	url string

	// Static after newFakeServer.
	hb      int64                                   // welcome hb in ms
	auto    bool                                    // answer join/leave/set/sync/auth
	onHello func(fc *fakeConn, h wire.Command) bool // false: no welcome

	conns chan *fakeConn // every accepted connection, after its hello

	mu  sync.Mutex
	all []*fakeConn // guarded by mu
	seq int         // guarded by mu: connection ids
}

type fakeOpt func(*fakeServer)

func withHB(ms int64) fakeOpt { return func(fs *fakeServer) { fs.hb = ms } }
func withAuto() fakeOpt       { return func(fs *fakeServer) { fs.auto = true } }
func withHello(f func(fc *fakeConn, h wire.Command) bool) fakeOpt {
	return func(fs *fakeServer) { fs.onHello = f }
}

func newFakeServer(t *testing.T, opts ...fakeOpt) *fakeServer {
	t.Helper()
	fs := &fakeServer{t: t, hb: 30000, conns: make(chan *fakeConn, 64)}
	for _, o := range opts {
		o(fs)
	}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.handle))
	fs.url = "ws" + fs.srv.URL[len("http"):] + "/ws"
	t.Cleanup(fs.close)
	return fs
}

func (fs *fakeServer) close() {
	fs.mu.Lock()
	all := fs.all
	fs.mu.Unlock()
	for _, fc := range all {
		fc.conn.Close()
		<-fc.done
	}
	fs.srv.Close()
}

// accept returns the next connection whose hello arrived.
func (fs *fakeServer) accept(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-fs.conns:
		return fc
	case <-time.After(waitTimeout):
		t.Fatal("no connection")
		return nil
	}
}

// fakeConn is one server-side connection.
type fakeConn struct {
	fs    *fakeServer
	id    int
	conn  net.Conn
	br    *bufio.Reader
	hdr   http.Header
	hello wire.Command // set before the connection is sent on fs.conns
	done  chan struct{}

	wmu       sync.Mutex
	closeSent bool // guarded by wmu

	mu          sync.Mutex
	msgs        []wire.Command // guarded by mu: client messages after hello
	clientClose ws.StatusCode  // guarded by mu: the client's close code
	notify      chan struct{}

	pos int // owned by the test goroutine: msgs consumed by expect
}

func (fs *fakeServer) handle(w http.ResponseWriter, r *http.Request) {
	conn, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	fs.mu.Lock()
	fs.seq++
	fc := &fakeConn{fs: fs, id: fs.seq, conn: conn, br: rw.Reader, hdr: r.Header.Clone(), done: make(chan struct{}), notify: make(chan struct{}, 1)}
	fs.all = append(fs.all, fc)
	fs.mu.Unlock()
	defer close(fc.done)
	defer conn.Close()

	first := true
	for {
		data, _, err := wsutil.ReadClientData(fcRW{fc})
		if err != nil {
			if ce, ok := errors.AsType[wsutil.ClosedError](err); ok {
				fc.mu.Lock()
				fc.clientClose = ce.Code
				fc.mu.Unlock()
			}
			return
		}
		var cmd wire.Command
		if err := wire.DecodeCommand(data, &cmd); err != nil {
			fs.t.Errorf("fake server: bad client message %s: %v", data, err)
			continue
		}
		if first {
			first = false
			fc.hello = cmd
			fs.conns <- fc
			if fs.onHello == nil || fs.onHello(fc, cmd) {
				fc.welcome()
			}
			continue
		}
		fc.mu.Lock()
		fc.msgs = append(fc.msgs, cmd)
		fc.mu.Unlock()
		select {
		case fc.notify <- struct{}{}:
		default:
		}
		if fs.auto {
			fc.answer(cmd)
		}
	}
}

// fcRW is what wsutil reads client frames from and answers control frames
// to.
type fcRW struct{ fc *fakeConn }

func (rw fcRW) Read(p []byte) (int, error) { return rw.fc.br.Read(p) }

func (rw fcRW) Write(p []byte) (int, error) {
	rw.fc.wmu.Lock()
	defer rw.fc.wmu.Unlock()
	if rw.fc.closeSent {
		return len(p), nil
	}
	return rw.fc.conn.Write(p)
}

func (fc *fakeConn) welcome() {
	user := fc.hello.User
	if user == "" {
		user = "alice"
	}
	fc.send(string(wire.AppendWelcome(nil, "n1", fmt.Sprintf("c%d", fc.id), user, fc.fs.hb, 4096)))
}

// answer answers cmd as presenced would, with cursors "1.<n>".
func (fc *fakeConn) answer(cmd wire.Command) {
	switch cmd.T {
	case wire.TJoin, wire.TSync:
		fc.send(string(wire.AppendAck(nil, cmd.ID)))
		fc.send(fmt.Sprintf(`{"t":"sync","room":%q,"cur":"1.1","count":1,"members":[{"u":"alice","s":"online","m":{}}],"typing":[],"partial":false}`, cmd.Room))
	case wire.TLeave, wire.TSet, wire.TAuth:
		fc.send(string(wire.AppendAck(nil, cmd.ID)))
	case wire.TPing:
		fc.send(string(wire.AppendPong(nil, cmd.TS)))
	}
}

// send writes one text message; errors are ignored (the client may be
// gone).
func (fc *fakeConn) send(msg string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	if fc.closeSent {
		return
	}
	_ = wsutil.WriteServerText(fc.conn, []byte(msg))
}

// closeWith sends a close frame; the handler ends when the client answers.
func (fc *fakeConn) closeWith(code CloseCode, reason string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	if fc.closeSent {
		return
	}
	fc.closeSent = true
	_ = ws.WriteFrame(fc.conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), reason)))
	fc.conn.SetReadDeadline(time.Now().Add(waitTimeout))
}

// drop closes the TCP connection without a close frame.
func (fc *fakeConn) drop() { fc.conn.Close() }

// expect returns the next client message of type typ, skipping others.
func (fc *fakeConn) expect(t *testing.T, typ string) wire.Command {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		fc.mu.Lock()
		for fc.pos < len(fc.msgs) {
			m := fc.msgs[fc.pos]
			fc.pos++
			if m.T == typ {
				fc.mu.Unlock()
				return m
			}
		}
		fc.mu.Unlock()
		select {
		case <-fc.notify:
		case <-deadline:
			t.Fatalf("conn %d: no %q message from the client", fc.id, typ)
		}
	}
}

// received returns the client messages received so far.
func (fc *fakeConn) received() []wire.Command {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]wire.Command(nil), fc.msgs...)
}

func (fc *fakeConn) closeCode(t *testing.T) ws.StatusCode {
	t.Helper()
	select {
	case <-fc.done:
	case <-time.After(waitTimeout):
		t.Fatalf("conn %d still open", fc.id)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.clientClose
}

// testConfig is a Config for fs with short timers.
func testConfig(fs *fakeServer) Config {
	return Config{
		URL:              fs.url,
		Token:            "tok",
		MinBackoff:       10 * time.Millisecond,
		MaxBackoff:       40 * time.Millisecond,
		HeartbeatTimeout: waitTimeout,
		DialTimeout:      waitTimeout,
	}
}

// dial dials cfg and closes the client when the test ends.
func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialServer dials fs and returns the client and its server connection.
func dialServer(t *testing.T, fs *fakeServer, cfg Config) (*Client, *fakeConn) {
	t.Helper()
	c := dial(t, cfg)
	return c, fs.accept(t)
}

// waitEvent returns the next event of kind, skipping others.
func waitEvent(t *testing.T, c *Client, kind EventKind) Event {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed while waiting for %v", kind)
			}
			if ev.Kind == kind {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v event", kind)
		}
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ctxT is a context bounded by waitTimeout.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// joinSynced joins room through an auto server and waits for its sync.
func joinSynced(t *testing.T, c *Client, room string, st *State) {
	t.Helper()
	if err := c.Join(ctxT(t), room, st); err != nil {
		t.Fatalf("Join %s: %v", room, err)
	}
	eventually(t, waitTimeout, room+" synced", func() bool {
		v, ok := c.Room(room)
		return ok && v.Synced
	})
}

var _ io.ReadWriter = fcRW{}
