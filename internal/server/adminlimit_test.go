package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// blockingState is an adminState whose Nodes waits for release, and whose
// RoomNames fails with redisbus.ErrTooManyRooms.
type blockingState struct {
	started chan struct{}
	release chan struct{}
}

func (b blockingState) RoomMembers(context.Context, string) ([]presence.MemberInfo, error) {
	return nil, nil
}

func (b blockingState) RoomNames(context.Context, string) ([]string, error) {
	return nil, fmt.Errorf("scan: %w", redisbus.ErrTooManyRooms)
}

func (b blockingState) RoomCounts(context.Context, []string) (map[string]int, error) {
	return nil, nil
}

func (b blockingState) UserRooms(context.Context, string) ([]string, error) { return nil, nil }

func (b blockingState) Nodes(context.Context) ([]presence.NodeInfo, error) {
	b.started <- struct{}{}
	<-b.release
	return nil, nil
}

func (b blockingState) Disconnect(_ context.Context, user string, _ wire.CloseCode) (closed, draining, held int, _ error) {
	if user == "kickfails" {
		return 2, 0, 0, errors.New("redis: connection refused")
	}
	return 1, 0, 0, nil
}

// testAdminAPI is the API over st with the production limits, the token
// "t0k", node "n1", logs and metrics discarded.
func testAdminAPI(st adminState) *adminAPI {
	return newAdminAPI(st, newAdminAuth([]byte("t0k"), false, nil), slog.New(slog.DiscardHandler),
		prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"endpoint", "code"}), "n1")
}

// TestAdminReadLimit: at most adminMaxReads reads run at once; one more
// answers 503 busy with Retry-After at once, a disconnect is not limited,
// and a read that would scan too many rooms answers 422.
func TestAdminReadLimit(t *testing.T) {
	// started has room for one read over the limit, and the calls are
	// bounded, so that a broken limit fails the test instead of hanging it.
	st := blockingState{started: make(chan struct{}, adminMaxReads+1), release: make(chan struct{})}
	a := testAdminAPI(st)
	mux := http.NewServeMux()
	a.register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	quick := &http.Client{Timeout: 2 * time.Second} // a call answered at once
	held := &http.Client{Timeout: 30 * time.Second} // a read held until release
	do := func(cl *http.Client, method, path string) (int, string, http.Header) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer t0k")
		resp, err := cl.Do(req)
		if err != nil {
			t.Error(err)
			return 0, "", nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return resp.StatusCode, e.Error.Code, resp.Header
	}

	var wg sync.WaitGroup
	for range adminMaxReads {
		wg.Go(func() {
			if code, _, _ := do(held, "GET", "/api/nodes"); code != 200 {
				t.Errorf("a read within the limit: %d, want 200", code)
			}
		})
		<-st.started
	}
	if code, ecode, h := do(quick, "GET", "/api/nodes"); code != 503 || ecode != "busy" || h.Get("Retry-After") == "" {
		t.Errorf("one read over the limit: %d %q Retry-After %q, want 503 busy with Retry-After", code, ecode, h.Get("Retry-After"))
	}
	if code, ecode, _ := do(quick, "GET", "/api/rooms"); code != 503 || ecode != "busy" {
		t.Errorf("rooms over the limit: %d %q, want 503 busy", code, ecode)
	}
	if code, _, _ := do(quick, "POST", "/api/users/alice/disconnect"); code != 200 {
		t.Errorf("a disconnect while the reads are full: %d, want 200", code)
	}
	close(st.release)
	wg.Wait()
	if code, ecode, _ := do(quick, "GET", "/api/rooms"); code != 422 || ecode != "too_many_rooms" {
		t.Errorf("rooms over the scan cap: %d %q, want 422 too_many_rooms", code, ecode)
	}
	if n := len(a.reads); n != 0 {
		t.Errorf("%d reads still counted after every request ended", n)
	}
}

// TestAdminDisconnectKickFails: when telling the other nodes fails after
// this node closed its connections, the answer is 503 and still says how
// many were closed here; a wrong method is 405 with Allow.
func TestAdminDisconnectKickFails(t *testing.T) {
	a := testAdminAPI(blockingState{})
	mux := http.NewServeMux()
	a.register(mux)
	do := func(method, path string) (*httptest.ResponseRecorder, map[string]any) {
		r := httptest.NewRequest(method, path, nil)
		r.Header.Set("Authorization", "Bearer t0k")
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		var body map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Errorf("%s %s: %v in %q", method, path, err, w.Body.String())
		}
		return w, body
	}
	w, body := do("POST", "/api/users/kickfails/disconnect")
	e, _ := body["error"].(map[string]any)
	if w.Code != 503 || e["code"] != "unavailable" || body["closed_here"] != float64(2) || body["user"] != "kickfails" {
		t.Errorf("a failed kick: %d %v, want 503 unavailable with closed_here 2", w.Code, body)
	}
	if msg, _ := e["message"].(string); !strings.Contains(msg, "other nodes") || strings.Contains(msg, "reading") {
		t.Errorf("a failed kick's message %q should name telling the other nodes", msg)
	}
	for _, tc := range []struct{ method, path, allow string }{
		{"GET", "/api/users/a/disconnect", "POST"},
		{"POST", "/api/rooms/x/members", "GET, HEAD"},
		{"PUT", "/api/rooms", "GET, HEAD"},
	} {
		w, body := do(tc.method, tc.path)
		e, _ := body["error"].(map[string]any)
		if w.Code != 405 || e["code"] != "method_not_allowed" || w.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d %v Allow %q, want 405 method_not_allowed Allow %q", tc.method, tc.path, w.Code, body, w.Header().Get("Allow"), tc.allow)
		}
	}
}
