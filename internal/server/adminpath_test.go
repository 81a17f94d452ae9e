package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestAdminUncleanPaths: a path under /api/ that the mux would redirect to
// its clean form ("//", "." or ".." segments, "/api" without the slash)
// is authenticated first (401 without the token), then answered 307 with
// the clean Location and a JSON body, and counted in the requests metric
// (endpoint "redirect").
func TestAdminUncleanPaths(t *testing.T) {
	n, _ := adminNode(t, sdkInsecure())
	base := "http://" + n.AdminAddr().String()
	hc := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	call := func(path, token string) (int, string, map[string]any) {
		t.Helper()
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			t.Errorf("GET %s: %d, body %q is not JSON", path, resp.StatusCode, b)
		}
		return resp.StatusCode, resp.Header.Get("Location"), body
	}
	for path, want := range map[string]string{
		"/api/rooms//members":                      "/api/rooms/members",
		"/api/rooms/./members":                     "/api/rooms/members",
		"/api//users/a/rooms":                      "/api/users/a/rooms",
		"/api/rooms/x/../team%2Fa/members?limit=2": "/api/rooms/team%2Fa/members?limit=2",
		"/api": "/api/",
	} {
		if code, loc, body := call(path, ""); code != 401 || loc != "" || errCode(body) != "unauthorized" {
			t.Errorf("GET %s without the token: %d Location %q %v, want 401 unauthorized", path, code, loc, body)
		}
		if code, loc, body := call(path, "tok"); code != 307 || loc != want || errCode(body) != "redirect" {
			t.Errorf("GET %s: %d Location %q %v, want 307 to %s", path, code, loc, body, want)
		}
	}
	if v := metric(t, n.reg, "presenced_admin_requests_total", "endpoint", "redirect", "code", "307"); v != 5 {
		t.Errorf("requests{redirect,307} %v, want 5", v)
	}
	if v := metric(t, n.reg, "presenced_admin_requests_total", "endpoint", "redirect", "code", "401"); v != 5 {
		t.Errorf("requests{redirect,401} %v, want 5", v)
	}
	// Clean paths and the other listeners' paths are not touched.
	if code, _, body := call("/api/rooms/team%2Fa/members", "tok"); code != 404 {
		t.Errorf("GET a clean path: %d %v, want 404 (no such room)", code, body)
	}
}
