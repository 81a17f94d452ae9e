package client

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// TestJSParity checks that the JavaScript SDK (clients/js) applies the same
// close-code table and the same backoff ceilings as this package: every
// code from 1000 to 4999, and attempts 0 to 70. It runs the module with
// node, and skips where node is missing (make test installs it).
func TestJSParity(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found: make deps installs it")
	}
	module, err := filepath.Abs("../clients/js/src/presenced.js")
	if err != nil {
		t.Fatal(err)
	}
	script := `
		const { shouldReconnect, backoff } = await import(process.argv[1]);
		const reconnect = [];
		for (let c = 1000; c <= 4999; c++) reconnect.push(shouldReconnect(c));
		const top = () => 1 - Number.EPSILON; // the largest random number: the ceiling
		const ceilings = [];
		for (let n = 0; n <= 70; n++) ceilings.push(backoff(n, 500, 30000, top));
		console.log(JSON.stringify({ reconnect, ceilings }));`
	cmd := exec.Command(node, "--input-type=module", "-e", script, module)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s%s", err, out, stderr.String())
	}
	var js struct {
		Reconnect []bool
		Ceilings  []int64
	}
	if err := json.Unmarshal(out, &js); err != nil {
		t.Fatalf("node printed %q: %v", out, err)
	}
	if len(js.Reconnect) != 4000 || len(js.Ceilings) != 71 {
		t.Fatalf("node printed %d codes and %d ceilings", len(js.Reconnect), len(js.Ceilings))
	}
	for i, got := range js.Reconnect {
		code := wire.CloseCode(1000 + i)
		if want := wire.Reconnect(code); got != want {
			t.Errorf("close code %d: the JS SDK reconnects %v, the Go SDK %v", code, got, want)
		}
	}
	top := func(n int64) int64 { return n - 1 }
	for n, got := range js.Ceilings {
		want := backoff(n, DefaultMinBackoff, DefaultMaxBackoff, top)
		if time.Duration(got)*time.Millisecond != want {
			t.Errorf("attempt %d: the JS SDK's ceiling is %d ms, the Go SDK's %v", n, got, want)
		}
	}
}
