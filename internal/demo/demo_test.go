package demo

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	jsclient "github.com/presenced/presenced/clients/js"
)

// parse reads resp as a client would.
func parse(t *testing.T, resp []byte) (*http.Response, []byte) {
	t.Helper()
	r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(resp)), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if r.ContentLength != int64(len(body)) || !r.Close {
		t.Fatalf("Content-Length %d for %d bytes, close %v", r.ContentLength, len(body), r.Close)
	}
	return r, body
}

func TestPages(t *testing.T) {
	pages, err := Pages(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/demo", "text/html; charset=utf-8", `data-ws-path="/ws" data-insecure="true"`},
		{"/demo/", "text/html; charset=utf-8", `data-testid="connection"`},
		{"/demo/app.js", "text/javascript; charset=utf-8", `from "./presenced.js"`},
		{"/demo/style.css", "text/css; charset=utf-8", ".member"},
		{"/demo/presenced.js", "text/javascript; charset=utf-8", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, ok := pages[tc.path]
			if !ok {
				t.Fatal("missing")
			}
			r, body := parse(t, resp)
			if r.StatusCode != 200 || r.Header.Get("Content-Type") != tc.contentType {
				t.Fatalf("status %d, Content-Type %q", r.StatusCode, r.Header.Get("Content-Type"))
			}
			for k, v := range map[string]string{
				"Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"Cache-Control":           "no-cache",
			} {
				if got := r.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if !bytes.Contains(body, []byte(tc.contains)) {
				t.Errorf("body lacks %q", tc.contains)
			}
		})
	}
	if len(pages) != 5 {
		t.Errorf("%d pages, want 5", len(pages))
	}
	if _, body := parse(t, pages["/demo/presenced.js"]); !bytes.Equal(body, jsclient.Source) {
		t.Error("/demo/presenced.js is not clients/js Source")
	}
}

// TestRender: the page learns the WebSocket path and the auth mode, escaped.
func TestRender(t *testing.T) {
	pages, err := Pages(Config{WSPath: `/a"b<c`})
	if err != nil {
		t.Fatal(err)
	}
	_, body := parse(t, pages["/demo"])
	if want := `data-ws-path="/a&#34;b&lt;c" data-insecure="false"`; !strings.Contains(string(body), want) {
		t.Fatalf("page lacks %s", want)
	}
}
