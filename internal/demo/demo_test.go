package demo

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"regexp"
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
				"Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
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

// TestPageAccessibility: the badge, whose text counts down while
// reconnecting, is no live region; a separate status region announces the
// state (app.js badge); no aria-label on an element without a role.
func TestPageAccessibility(t *testing.T) {
	pages, err := Pages(Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, body := parse(t, pages["/demo"])
	badge := regexp.MustCompile(`<span class="badge" data-testid="connection"[^>]*>`).Find(body)
	if badge == nil || bytes.Contains(badge, []byte("aria-live")) || bytes.Contains(badge, []byte(`role=`)) {
		t.Errorf("badge %q: want it present and not a live region", badge)
	}
	if !bytes.Contains(body, []byte(`id="conn-live" role="status" aria-live="polite"`)) {
		t.Error("no status region for the connection state (#conn-live)")
	}
	if m := regexp.MustCompile(`<span[^>]*aria-label=[^>]*>`).Find(body); m != nil {
		t.Errorf("aria-label on a span: %q", m)
	}
}

// TestAppScript runs testdata/app.test.mjs, the unit tests of static/app.js
// against a fake DOM and SDK, with node (Node 18 or later), if installed.
func TestAppScript(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	out, err := exec.Command(node, "--test", "testdata/app.test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test testdata/app.test.mjs: %v\n%s", err, out)
	}
}
