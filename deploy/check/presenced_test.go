package check

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// presencedBinary is $PRESENCED_BIN (make deploy-check builds bin/presenced),
// or one built here once.
func presencedBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PRESENCED_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploy-check")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "presenced")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/presenced")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/presenced: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// TestMain also writes the proxies' test certificate (proxyrun_test.go)
// and makes this process trust it: SSL_CERT_FILE is read once, at the
// first TLS verification, so it is set before any test runs.
func TestMain(m *testing.M) {
	var err error
	if certDir, err = os.MkdirTemp("", "deploy-check-tls"); err == nil {
		err = testCert(certDir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy/check: test certificate:", err)
		os.Exit(1)
	}
	os.Setenv("SSL_CERT_FILE", filepath.Join(certDir, "tls.crt"))
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.RemoveAll(certDir)
	os.Exit(code)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs a process until the test ends (SIGTERM, then SIGKILL after
// 10 s); its output goes to the test log if the test fails. Done closes
// when it exits.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), p.out.String())
		}
	})
	return p
}

// proc is a process started by start. out is safe to read once done is
// closed.
type proc struct {
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
}

// syncBuffer is a bytes.Buffer that a process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startPresenced runs a node with extra flags and returns its admin
// base URL once /readyz answers 200.
func startPresenced(t *testing.T, flags ...string) string {
	t.Helper()
	return runPresenced(t, flags...).adminBase
}

// node is a presenced started by runPresenced: its public listener
// (host:port), admin base URL and process.
type node struct {
	addr, adminPort, adminBase string
	proc                       *proc
}

// runPresenced runs a node (-insecure, loopback listeners) with extra
// flags, once its /readyz answers 200.
func runPresenced(t *testing.T, flags ...string) node {
	t.Helper()
	adminPort := fmt.Sprint(freePort(t))
	n := node{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), adminPort: adminPort, adminBase: "http://127.0.0.1:" + adminPort}
	args := append([]string{"-insecure", "-addr", n.addr, "-admin-addr", "127.0.0.1:" + adminPort}, flags...)
	n.proc = start(t, presencedBinary(t), args...)
	waitFor(t, 15*time.Second, "presenced /readyz 200", func() bool {
		resp, err := http.Get(n.adminBase + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return n
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, limit)
		}
	}
}

// scrape returns the samples of /metrics: name{labels} → value text.
func scrape(t *testing.T, base string) map[string]string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	samples := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad /metrics line %q", line)
		}
		samples[line[:i]] = line[i+1:]
	}
	return samples
}

// metricNames is the set of metric names among samples (histograms
// appear as their _bucket, _sum and _count series).
func metricNames(samples map[string]string) map[string]bool {
	names := map[string]bool{}
	for s := range samples {
		if i := strings.IndexByte(s, '{'); i >= 0 {
			s = s[:i]
		}
		names[s] = true
	}
	return names
}

// startRedis runs a redis-server of its own (no persistence) on a free
// loopback port until the test ends; it returns its URL and a stop that
// kills it (at most once). redis-server missing fails the test: make deps
// installs it.
func startRedis(t *testing.T) (url string, stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found (make deps installs it)")
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cmd.Process.Kill(); <-done }) }
	t.Cleanup(stop)
	url = fmt.Sprintf("redis://127.0.0.1:%d", port)
	waitFor(t, 10*time.Second, "redis-server answering on "+url, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return url, stop
}
