package server_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/server"
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
// client, the Python websockets library, on each engine.
func TestInteropPython(t *testing.T) {
	requireWebsockets(t)
	cases := []struct {
		scenario  string
		want      []string // the script's output lines
		wantLabel string   // presenced_connections_closed_total reason
		wantCode  string   // the close code the server logged
	}{
		{
			scenario: "echo",
			want: []string{
				"extensions: none",
				`echo: {"t":"ping","ts":1}`,
				"echo: héllo wörld ✓",
				`fragmented: {"t":"fragmented","v":"✓"} ok`,
				"large: 4096 bytes ok",
				"large fragmented: ok",
				"pong: ok",
				"closed: 1000 bye",
			},
			wantLabel: "peer",
			wantCode:  "1000",
		},
		{scenario: "binary", want: []string{"closed: 1003"}, wantLabel: "server", wantCode: "1003"},
		{scenario: "too-big", want: []string{"closed: 1009"}, wantLabel: "protocol", wantCode: "1009"},
	}
	for _, engine := range engines {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.scenario, func(t *testing.T) {
				n := startServer(t, server.Config{Engine: engine})
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
					if got := metric(t, n.reg, "presenced_connections_closed_total", "reason", tc.wantLabel); got != 1 {
						return fmt.Errorf("closed_total{reason=%q} = %v, want 1", tc.wantLabel, got)
					}
					return nil
				})
			})
		}
	}
}
