package webhook

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/presence"
)

// TestDocVerifyExamples runs the verification examples of
// docs/webhooks.md ("Verifying a request"), as written there, behind their
// own language's HTTP server: a real request of a Sender signed with two
// keys (the receiver holding the second) is accepted, one signed with
// another key refused, and a signature header with a byte ≥ 0x80 refused,
// not thrown on (F2: Node compared string lengths, then timingSafeEqual
// threw on buffers of different byte lengths: a 500, or a dead receiver).
func TestDocVerifyExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/webhooks.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lang  string
		start func(t *testing.T, snippet string) (url string)
	}{
		{"js", startNodeReceiver},
		{"go", startGoReceiver},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			url := tc.start(t, docBlock(t, string(doc), "### Verifying a request", tc.lang))
			key := []byte(docKey)
			if got := sendOne(t, url, []byte("old-key"), key); got != reqOK {
				t.Errorf("a request signed with the old and the new key: %s, want %s", got, reqOK)
			}
			if got := sendOne(t, url, []byte("other-key")); got != reqRejected {
				t.Errorf("a request signed with another key: %s, want %s", got, reqRejected)
			}
			body := []byte(`[{"id":"x","ts":1,"type":"room_vacated","room":"r"}]`)
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			good := Sign(key, ts, body)
			for _, c := range []struct {
				name, sig string
				want      int
			}{
				{"64 chars, 65 bytes", "v1=" + strings.Repeat("a", 63) + "\xe9", http.StatusUnauthorized},
				{"all high bytes", "v1=" + strings.Repeat("\xff", 64), http.StatusUnauthorized},
				{"short, high byte", "v1=\xe9", http.StatusUnauthorized},
				{"high byte, then the right one", "v1=" + strings.Repeat("0", 63) + "\xe9," + good, http.StatusOK},
				{"the right one", good, http.StatusOK},
			} {
				if code, msg := postRaw(t, url, ts, c.sig, body); code != c.want {
					t.Errorf("%s: %d %s, want %d", c.name, code, msg, c.want)
				}
			}
		})
	}
}

// docKey is the receiver's key in TestDocVerifyExamples.
const docKey = "new-key"

// docBlock returns the first ```lang block after heading in doc.
func docBlock(t *testing.T, doc, heading, lang string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/webhooks.md: no %q", heading)
	}
	_, rest, ok = strings.Cut(rest, "\n```"+lang+"\n")
	block, _, ok2 := strings.Cut(rest, "\n```\n")
	if !ok || !ok2 {
		t.Fatalf("docs/webhooks.md: no ```%s block after %q", lang, heading)
	}
	return block + "\n"
}

// nodeHarness serves the doc's verify: 200 if it accepts, 401 if it
// refuses, 500 with the error if it throws.
const nodeHarness = `
const http = require("node:http");
const srv = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let code = 500, msg = "";
    try {
      code = verify(process.env.SECRET, req.headers["x-presenced-timestamp"],
        req.headers["x-presenced-signature"], Buffer.concat(chunks)) ? 200 : 401;
    } catch (e) {
      msg = "verify threw: " + e.code + " " + e.message;
    }
    res.writeHead(code, {"Content-Type": "text/plain"});
    res.end(msg);
  });
});
srv.listen(0, "127.0.0.1", () => console.log(srv.address().port));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
`

func startNodeReceiver(t *testing.T, snippet string) string {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node:", err)
	}
	file := filepath.Join(t.TempDir(), "receiver.js")
	if err := os.WriteFile(file, []byte(snippet+nodeHarness), 0o600); err != nil {
		t.Fatal(err)
	}
	return startReceiver(t, exec.Command(node, file))
}

// goHarness is the doc's Go example's package: its imports, then the
// snippet, then goMain.
const goHarness = `package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)
`

const goMain = `
func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if verify([]byte(os.Getenv("SECRET")), r.Header.Get("X-Presenced-Timestamp"), r.Header.Get("X-Presenced-Signature"), body) {
			w.WriteHeader(200)
		} else {
			w.WriteHeader(401)
		}
	}))
}
`

func startGoReceiver(t *testing.T, snippet string) string {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go:", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(goHarness+snippet+goMain), 0o600); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(goBin, "build", "-o", "receiver", "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the doc's Go example does not build: %v\n%s", err, out)
	}
	return startReceiver(t, exec.Command(filepath.Join(dir, "receiver")))
}

// startReceiver starts cmd (SECRET is docKey), which prints its port,
// and stops it when the test ends (or, should the test binary die, when
// its stdin closes).
func startReceiver(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	cmd.Env = append(os.Environ(), "SECRET="+docKey)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	port := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		port <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case p := <-port:
		if _, err := strconv.Atoi(p); err != nil {
			t.Fatalf("receiver printed %q, not a port; stderr:\n%s", p, stderr.String())
		}
		return "http://127.0.0.1:" + p + "/hook"
	case <-time.After(30 * time.Second):
		t.Fatalf("receiver did not start; stderr:\n%s", stderr.String())
		return ""
	}
}

// sendOne has a Sender signing with keys post one batch (non-ASCII room
// and user) to url, and returns how the request was counted.
func sendOne(t *testing.T, url string, keys ...[]byte) string {
	t.Helper()
	s := newSender(t, url, func(c *Config) { c.Secret, c.OtherSecrets, c.MaxAttempts = keys[0], keys[1:], 1 })
	stop := run(t, s)
	defer stop()
	s.RoomEvents("sälj/ö", []presence.Event{ev(presence.EventRoomOccupied, ""), ev(presence.EventMemberAdded, "zoë")})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range []string{reqOK, reqRejected, reqFailed} {
			if value(s.m.requests.WithLabelValues(r)) > 0 {
				return r
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return "no answer"
}

// postRaw POSTs body with the given headers, on a connection of its own.
func postRaw(t *testing.T, url, ts, sig string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, sig)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(msg)
}
