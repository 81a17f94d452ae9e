package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	jsclient "github.com/presenced/presenced/clients/js"
	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/presence"
)

// TestDemo: with Demo the public listener serves the demo page and the SDK
// (on both engines), counted as pages, not handshake failures; without it
// /demo is 404 as before.
func TestDemo(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			n := startServer(t, server.Config{Engine: engine, Demo: true, Presence: presence.Config{Insecure: true}})
			base := "http://" + n.Addr().String()
			status, body := httpGet(t, base+"/demo?user=ann&room=lobby")
			if status != 200 || !strings.Contains(body, `data-ws-path="/ws" data-insecure="true"`) {
				t.Fatalf("/demo: %d %.200q", status, body)
			}
			if status, body := httpGet(t, base+"/demo/presenced.js"); status != 200 || body != string(jsclient.Source) {
				t.Fatalf("/demo/presenced.js: %d, %d bytes, want the %d of clients/js Source", status, len(body), len(jsclient.Source))
			}
			for _, path := range []string{"/demo/", "/demo/app.js", "/demo/style.css"} {
				if status, _ := httpGet(t, base+path); status != 200 {
					t.Errorf("%s: %d", path, status)
				}
			}
			if status, _ := httpGet(t, base+"/demo/missing.js"); status != 404 {
				t.Errorf("/demo/missing.js: %d, want 404", status)
			}
			eventually(t, 10*time.Second, func() error {
				if got := metric(t, n.reg, "presenced_pages_served_total"); got != 5 {
					return fmt.Errorf("presenced_pages_served_total %v, want 5", got)
				}
				if got := metric(t, n.reg, "presenced_handshake_failures_total", "reason", "not_found"); got != 1 {
					return fmt.Errorf("handshake failures not_found %v, want 1", got)
				}
				return nil
			})
			if got := metric(t, n.reg, "presenced_handshake_failures_total", "reason", "page"); got != -1 {
				t.Errorf("a page is counted as a handshake failure: %v", got)
			}
			if rec := n.logs.find("msg", "demo page", "url", base+"/demo"); rec == nil {
				t.Error("the demo URL was not logged")
			}
		})
	}
	t.Run("with tokens", func(t *testing.T) {
		t.Parallel()
		n := startServer(t, server.Config{Demo: true, JWT: auth.Config{HS256Secret: testSecret}})
		status, body := httpGet(t, "http://"+n.Addr().String()+"/demo")
		if status != 200 || !strings.Contains(body, `data-insecure="false"`) {
			t.Fatalf("/demo: %d %.200q", status, body)
		}
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		n := startServer(t, server.Config{Presence: presence.Config{Insecure: true}})
		for _, path := range []string{"/demo", "/demo/presenced.js"} {
			if status, _ := httpGet(t, "http://"+n.Addr().String()+path); status != 404 {
				t.Errorf("%s: %d, want 404", path, status)
			}
		}
		if rec := n.logs.find("msg", "demo page"); rec != nil {
			t.Errorf("demo URL logged without Demo: %v", rec)
		}
	})
}
