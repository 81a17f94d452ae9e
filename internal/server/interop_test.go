package server_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// debianPython is Debian's interpreter: python3-websockets installs there,
// whatever python3 comes first on PATH (pyenv, a venv).
const debianPython = "/usr/bin/python3"

// requireWebsockets skips the test unless Debian's python3 can import
// websockets. `make test` installs it (apt-get install python3-websockets).
func requireWebsockets(t *testing.T) {
	t.Helper()
	out, err := exec.Command(debianPython, "-c", "import websockets; print(websockets.__version__)").CombinedOutput()
	if err != nil {
		t.Skipf("interop client unavailable: %s cannot import websockets (%v: %s); run `make deps` or `apt-get install python3-websockets`",
			debianPython, err, bytes.TrimSpace(out))
	}
	t.Logf("python websockets %s", bytes.TrimSpace(out))
}

// TestInteropPython drives a whole in-process server with an independent
// client, the Python websockets library, on each engine: two users say
// hello, join a room, see each other in sync and diffs, set their status,
// type, answer server pings, leave and close.
func TestInteropPython(t *testing.T) {
	requireWebsockets(t)
	cases := []struct {
		scenario   string
		want       []string // the script's output lines
		wantLabel  string   // presenced_connections_closed_total reason
		wantCode   string   // the close code the server logged
		wantClosed float64  // connections closed with wantLabel
	}{
		{
			scenario: "presence",
			want: []string{
				"extensions: none",
				"welcome: user=alice v=1 hb=300 max=4096",
				"alice join: ack 1",
				`alice sync: 1 ['alice/online/{"name":"Alice"}'] complete`,
				"alice fragmented set: ack 2",
				"alice diff: update [{'u': 'alice', 's': 'online', 'm': {'name': 'Alice ✓'}}]",
				`bob sync: 2 ['alice/online/{"name":"Alice \\u2713"}', 'bob/online/{"name":"Bob"}']`,
				"alice diff: join ['bob'] count 2",
				"alice diff: update [{'u': 'bob', 's': 'away', 'm': {'name': 'Bob'}}]",
				"alice diff: typing ['bob'] keys ['count', 'cur', 'from', 'room', 't', 'typing']",
				"alice ping: pong 42",
				"largest message: pong 7",
				"server pings: answered",
				"alice ping: pong 43",
				"alice diff: leave ['bob'] count 1",
				"chain: ok",
				"pong frame: ok",
				"bob closed: 1000",
				"alice closed: 1000 bye",
			},
			wantLabel:  "peer",
			wantCode:   "1000",
			wantClosed: 2,
		},
		{scenario: "binary", want: []string{"closed: 1003"}, wantLabel: "protocol", wantCode: "1003", wantClosed: 1},
		{scenario: "too-big", want: []string{"closed: 1009"}, wantLabel: "protocol", wantCode: "1009", wantClosed: 1},
		{scenario: "invalid-json", want: []string{"closed: 1007"}, wantLabel: "protocol", wantCode: "1007", wantClosed: 1},
		{scenario: "version", want: []string{"closed: 4105"}, wantLabel: "protocol", wantCode: "4105", wantClosed: 1},
	}
	for _, engine := range engines {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.scenario, func(t *testing.T) {
				t.Parallel()
				cfg := quickConfig(engine)
				cfg.Presence.HeartbeatInterval = 300 * time.Millisecond
				n := startServer(t, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, debianPython, "testdata/interop_client.py", tc.scenario, "ws://"+n.Addr().String()+"/ws")
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("client: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
				}
				got := strings.Split(strings.TrimSpace(stdout.String()), "\n")
				if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
					t.Fatalf("client output:\n%s\nwant:\n%s\nstderr:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"), &stderr)
				}
				eventually(t, 5*time.Second, func() error {
					if n.logs.find("msg", "connection closed", "reason", tc.wantLabel, "code", tc.wantCode) == nil {
						return fmt.Errorf("server logged no close with reason=%s code=%s", tc.wantLabel, tc.wantCode)
					}
					if got := metric(t, n.reg, "presenced_connections_closed_total", "reason", tc.wantLabel); got != tc.wantClosed {
						return fmt.Errorf("closed_total{reason=%q} = %v, want %v", tc.wantLabel, got, tc.wantClosed)
					}
					if got := metric(t, n.reg, "presenced_sessions"); got != 0 {
						return fmt.Errorf("sessions = %v, want 0", got)
					}
					return nil
				})
			})
		}
	}
}
