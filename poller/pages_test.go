package poller

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pageResponse encodes a complete 200 response with body, the way a
// Config.Pages user builds it once at startup.
func pageResponse(body string) []byte {
	return fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

// headOf is resp up to and including the blank line.
func headOf(resp []byte) []byte {
	return resp[:bytes.Index(resp, headerEnd)+len(headerEnd)]
}

// pageCase is one request to a server with Config.Pages.
type pageCase struct {
	name       string
	outbox     int    // Config.Outbox; 0 for the default
	overCap    bool   // MaxConns is 1 and an upgraded connection holds it
	req        string // the whole request
	want       []byte // every byte the server sends before it closes; nil: judge wantStatus
	wantStatus int    // when want is nil
	wantReject RejectReason
}

func pageCases() []pageCase {
	demo := pageResponse("<!doctype html><title>demo</title>")
	big := pageResponse(strings.Repeat("0123456789abcdef", 1<<16)) // 1 MiB, far over the outbox
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" }
	return []pageCase{
		{name: "GET", req: get("/demo"), want: demo, wantReject: RejectPage},
		{name: "GET with a query string", req: get("/demo?user=ann&room=lobby"), want: demo, wantReject: RejectPage},
		{name: "HEAD gets the headers only", req: "HEAD /demo HTTP/1.1\r\nHost: x\r\n\r\n", want: headOf(demo), wantReject: RejectPage},
		{name: "HTTP/1.0", req: "GET /demo HTTP/1.0\r\n\r\n", want: demo, wantReject: RejectPage},
		{name: "response larger than the outbox is written whole", outbox: 4096, req: get("/big"), want: big, wantReject: RejectPage},
		{name: "unknown path", req: get("/demo/nope"), wantStatus: 404, wantReject: RejectNotFound},
		{name: "path prefix of a page", req: get("/dem"), wantStatus: 404, wantReject: RejectNotFound},
		{name: "POST of a page", req: "POST /demo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", wantStatus: 405, wantReject: RejectBadRequest},
		{name: "WebSocket path without upgrade headers", req: get("/ws"), wantStatus: 400, wantReject: RejectBadRequest},
		{name: "over MaxConns", overCap: true, req: get("/demo"), wantStatus: 503, wantReject: RejectCapacity},
	}
}

// TestPages serves Config.Pages on both engines, each request sent whole
// and chopped into 1-byte writes, and checks that upgrades still work.
func TestPages(t *testing.T) {
	pages := func() map[string][]byte {
		return map[string][]byte{
			"/demo": pageResponse("<!doctype html><title>demo</title>"),
			"/big":  pageResponse(strings.Repeat("0123456789abcdef", 1<<16)),
		}
	}
	forEachEngine(t, func(t *testing.T, engine string) {
		for _, tc := range pageCases() {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				cfg := Config{Pages: pages(), Outbox: tc.outbox}
				var hold *rawClient
				if tc.overCap {
					cfg.MaxConns = 1
				}
				srv, rec := startRecorded(t, engine, cfg)
				if tc.overCap {
					hold = dialRaw(t, srv.Addr())
					hold.upgrade()
				}
				for i, chop := range []bool{false, true} {
					c := dialRaw(t, srv.Addr())
					c.chop = chop
					if tc.want == nil {
						resp, err := c.request(tc.req)
						if err != nil {
							t.Fatalf("chop=%v: %v", chop, err)
						}
						if resp.StatusCode != tc.wantStatus {
							t.Fatalf("chop=%v: status %d, want %d", chop, resp.StatusCode, tc.wantStatus)
						}
						c.expectEOF()
					} else {
						c.mustWrite([]byte(tc.req))
						c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
						got, err := io.ReadAll(c.br) // until the server closes
						if err != nil {
							t.Fatalf("chop=%v: read: %v (after %d bytes)", chop, err, len(got))
						}
						if !bytes.Equal(got, tc.want) {
							t.Fatalf("chop=%v: got %d bytes %.80q…, want %d bytes %.80q…", chop, len(got), got, len(tc.want), tc.want)
						}
					}
					c.conn.Close() // the server lingers until this EOF (or CloseTimeout)
					rec.waitReject(t, tc.wantReject, i+1)
				}
				if hold != nil { // TestMaxConns checks that the cap frees up
					hold.closeHandshake(1000, "")
					rec.check(t)
					return
				}
				c := dialRaw(t, srv.Addr())
				c.upgrade()
				echoRoundTrip(t, c, "still upgrades")
				c.closeHandshake(1000, "")
				rec.check(t)
			})
		}
	})
}

// TestPagesHTTPClient fetches a page with net/http, as a browser would.
func TestPagesHTTPClient(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		body := "hello from the event loop"
		srv, _ := startRecorded(t, engine, Config{Pages: map[string][]byte{"/": pageResponse(body)}})
		resp, err := http.Get("http://" + srv.Addr().String() + "/?x=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(got) != body || resp.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("GET: %d %q %v %v", resp.StatusCode, got, resp.Header, err)
		}
	})
}

func TestPagesConfig(t *testing.T) {
	ok := pageResponse("x")
	for _, tc := range []struct {
		name  string
		pages map[string][]byte
	}{
		{"relative path", map[string][]byte{"demo": ok}},
		{"path with a query", map[string][]byte{"/demo?x": ok}},
		{"the WebSocket path", map[string][]byte{"/ws": ok}},
		{"not a response", map[string][]byte{"/demo": []byte("<html>")}},
		{"no end of headers", map[string][]byte{"/demo": []byte("HTTP/1.1 200 OK\r\n")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(Config{Addr: "127.0.0.1:0", Pages: tc.pages}, newRecorder()); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

// TestPagesLookupAllocs: serving a page costs no allocation in the lookup.
func TestPagesLookupAllocs(t *testing.T) {
	ps, err := newPages(Config{Path: "/ws", Pages: map[string][]byte{"/demo/app.js": pageResponse("x")}})
	if err != nil {
		t.Fatal(err)
	}
	req := []byte("HEAD http://x/demo/app.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := ps.lookup(req); !ok {
			t.Fatal("not found")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
}

// TestPagesLateBytes: a client that sends bytes after its request (a
// pipelined request, a stray byte) and reads slowly through a small
// receive buffer still gets the whole page. Without the lingering close
// the server closed its socket once the kernel had taken the response, the
// late byte made the kernel answer with a reset, and the client's kernel
// dropped the response bytes not yet read.
func TestPagesLateBytes(t *testing.T) {
	page := pageResponse(strings.Repeat("0123456789abcdef", 25<<10/16)) // 25 KiB, like presenced.js
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		srv, rec := startRecorded(t, engine, Config{Pages: map[string][]byte{"/demo": page}})
		d := net.Dialer{Timeout: ioTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
			var err error
			rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 2048) })
			return err
		}}
		nc, err := d.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := nc.Write([]byte("GET /demo HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		// Not a timing assertion: the server (unfixed) has closed its
		// socket by then, having handed the whole page to its kernel.
		time.Sleep(200 * time.Millisecond)
		if _, err := nc.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(ioTimeout))
		var got []byte
		buf := make([]byte, 1024)
		for {
			n, err := nc.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("read: %v after %d of %d bytes", err, len(got), len(page))
			}
			time.Sleep(2 * time.Millisecond) // a slow reader
		}
		if !bytes.Equal(got, page) {
			t.Fatalf("got %d bytes, want the %d of the page", len(got), len(page))
		}
		nc.Close() // the server's lingering ends with this EOF
		rec.waitReject(t, RejectPage, 1)
	})
}

// captureEngine is a discardEngine that remembers the last slice written,
// or takes nothing (EAGAIN) when full is set.
type captureEngine struct {
	discardEngine
	full bool
	last []byte
}

func (e *captureEngine) write(c *Conn, p []byte) (int, error) {
	e.last = p
	if e.full {
		return 0, unix.EAGAIN
	}
	return len(p), nil
}

// TestPageHandshakeAllocsAndCopies: handshake serves a page from the Config.Pages
// slice itself, with no allocation and no per-connection copy, whether the
// socket takes the bytes at once or they wait in the outbox.
func TestPageHandshakeAllocsAndCopies(t *testing.T) {
	page := pageResponse(strings.Repeat("x", 4096))
	cfg, err := Config{Pages: map[string][]byte{"/demo": page}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	sh := newShared(cfg, &nopHandler{})
	if sh.pages, err = newPages(cfg); err != nil {
		t.Fatal(err)
	}
	req := []byte("GET /demo?user=ann HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, full := range []bool{false, true} {
		eng := &captureEngine{full: full}
		c := sh.newConn(7, netip.MustParseAddrPort("127.0.0.1:1"), eng)
		serve := func() {
			c.state, c.reject = stateHandshake, 0
			c.dropOutboxLocked()
			if n, ok := c.handshake(req); ok || n != len(req) || c.reject != RejectPage {
				t.Fatalf("handshake: %d %v %v", n, ok, c.reject)
			}
		}
		if !full { // an outbox comes from a pool, which may allocate
			if n := testing.AllocsPerRun(100, serve); n != 0 {
				t.Errorf("%v allocations per page served", n)
			}
		}
		serve()
		if len(eng.last) != len(page) || &eng.last[0] != &page[0] {
			t.Errorf("full=%v: wrote %d bytes at %p, not the page's %d at %p", full, len(eng.last), &eng.last[0], len(page), &page[0])
		}
		if full && (len(c.out) != 1 || &c.out[0][0] != &page[0] || len(c.out[0]) != len(page)) {
			t.Errorf("queued %d buffers, not the page's slice", len(c.out))
		}
		sh.limits.release(c.remote, c.admitted())
	}
}

// TestPagesLookup: only a well-formed GET or HEAD request line of a page
// is served; anything else goes to the upgrader as without Pages.
func TestPagesLookup(t *testing.T) {
	page := pageResponse("x")
	ps, err := newPages(Config{Path: "/ws", Pages: map[string][]byte{"/demo": page}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		line string // the request line, without its CRLF
		want []byte // nil: not a page
	}{
		{"GET /demo HTTP/1.1", page},
		{"GET /demo HTTP/1.0", page},
		{"HEAD /demo HTTP/1.1", headOf(page)},
		{"GET /demo?user=ann&room=lobby HTTP/1.1", page},
		{"GET /demo? HTTP/1.1", page},
		{"GET http://127.0.0.1:8080/demo HTTP/1.1", page},
		{"GET HTTPS://example.com/demo?x=1 HTTP/1.1", page},
		{"GET /demo HTTP/1.2", nil},
		{"GET /demo HTTP/2.0", nil},
		{"GET /demo HTTP/1.1x", nil},
		{"GET /demo http/1.1", nil},
		{"GET /demo  HTTP/1.1", nil},
		{"GET /demo", nil},
		{"GET /demo\tHTTP/1.1", nil},
		{"GET /demo/ HTTP/1.1", nil},
		{"GET http://example.com HTTP/1.1", nil},
		{"GET http:///demo HTTP/1.1", nil},
		{"GET ftp://example.com/demo HTTP/1.1", nil},
		{"get /demo HTTP/1.1", nil},
		{"POST /demo HTTP/1.1", nil},
	} {
		got, ok := ps.lookup([]byte(tc.line + "\r\nHost: x\r\n\r\n"))
		if ok != (tc.want != nil) || !bytes.Equal(got, tc.want) {
			t.Errorf("%q: served %v (%d bytes), want %v", tc.line, ok, len(got), tc.want != nil)
		}
	}
}

// TestPageWriteDeadline: a page that the socket cannot take at once has
// HandshakeTimeout to be written (it may take many round trips), an HTTP
// error CloseTimeout.
func TestPageWriteDeadline(t *testing.T) {
	cfg := fuzzConfig
	cfg.HandshakeTimeout = time.Hour
	cfg.CloseTimeout = time.Second
	for _, tc := range []struct {
		req  string
		want time.Duration
	}{
		{"GET /demo HTTP/1.1\r\n\r\n", time.Hour},
		{"GET /nope HTTP/1.1\r\n\r\n", time.Second},
	} {
		fc := newFakeConn(t, cfg)
		fc.eng.full = true // the socket takes nothing yet
		before := nowNano()
		fc.feed([]byte(tc.req), nil)
		if fc.c.state != stateRejecting {
			t.Fatalf("%q: state %v, want rejecting while the response waits", tc.req, fc.c.state)
		}
		if d := time.Duration(fc.eng.deadline.Load() - before); d < tc.want || d > tc.want+time.Minute {
			t.Errorf("%q: write deadline in %v, want %v", tc.req, d, tc.want)
		}
	}
}

// TestLingerBounds: once its response is written a refused connection
// shuts its write side and lingers, discarding input, for at most
// CloseTimeout and lingerMax bytes.
func TestLingerBounds(t *testing.T) {
	fc := newFakeConn(t, fuzzConfig)
	fc.feed([]byte("GET /demo HTTP/1.1\r\n\r\n"), nil)
	if fc.finished || fc.c.state != stateLingering || fc.eng.shutWR != 1 {
		t.Fatalf("finished %v, state %v, shutdownWrite %d: want lingering", fc.finished, fc.c.state, fc.eng.shutWR)
	}
	if d, max := fc.eng.deadline.Load(), nowNano()+int64(fc.c.sh.cfg.CloseTimeout); d == 0 || d > max {
		t.Fatalf("deadline %d, want by %d", d, max)
	}
	fc.feed(make([]byte, lingerMax), []byte{255})
	if fc.finished {
		t.Fatalf("finished after %d bytes, before lingerMax", lingerMax)
	}
	fc.feed([]byte("x"), nil)
	if !fc.finished {
		t.Fatal("still lingering beyond lingerMax")
	}
	if !slices.Equal(fc.h.rejects, []RejectReason{RejectPage}) {
		t.Fatalf("OnReject %v", fc.h.rejects)
	}

	// Server shutdown does not wait for a lingering connection.
	fc = newFakeConn(t, fuzzConfig)
	fc.feed([]byte("HEAD /demo HTTP/1.1\r\n\r\n"), nil)
	fc.c.shutdown()
	if fc.c.state != stateClosed || !slices.Equal(fc.h.rejects, []RejectReason{RejectPage}) {
		t.Fatalf("after shutdown: state %v, OnReject %v", fc.c.state, fc.h.rejects)
	}
}
