package poller

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
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
				srv, rec := startRecorded(t, engine, Config{Pages: pages(), Outbox: tc.outbox})
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
					rec.waitReject(t, tc.wantReject, i+1)
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
	req := []byte("HEAD /demo/app.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := ps.lookup(req); !ok {
			t.Fatal("not found")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
}
