package multinode

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The settings every node runs with, and the bounds derived from them.
const (
	nodeTTL    = 1500 * time.Millisecond
	leaveGrace = time.Second
	tick       = 50 * time.Millisecond
	typingTTL  = time.Second
	drain      = 500 * time.Millisecond

	// deathBound: a killed node's members leave on the others within
	// node_ttl + node_ttl/3 + leave_grace + 1 s (the bound), + one
	// node_ttl more: on a starved CPU the survivors' rounds can all be
	// late by node_ttl/6 (250 ms), no node runs one for node_ttl/2, and
	// the judgement clock then reaps nobody for one node_ttl
	// (docs/cluster.md, Liveness, step 6: a starved machine is a paused
	// Redis to the script). Seen: 4.015 s against 4 s under load; survivors
	// SIGSTOPped for 900 ms after the kill: 3.7-4.15 s, grace key set.
	deathBound = nodeTTL + nodeTTL/3 + leaveGrace + time.Second + nodeTTL
	// propagation bounds a change made on one node to show on the others
	// (generous: the nodes run with -race on two cores).
	propagation = 2 * time.Second
	// startTimeout bounds a node's start: the "serving" log line, then its
	// lease.
	startTimeout = 15 * time.Second
)

// node is one presenced process. Its listeners keep their ports across
// restarts. Safe for concurrent use.
type node struct {
	t     *testing.T
	name  string   // static: -node
	args  []string // static: the flags, without -addr and -admin-addr
	addr  string   // fixed by the first start: host:port of /ws
	admin string   // fixed by the first start: host:port of the admin listener

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu; nil when not running
	done chan struct{} // guarded by mu; closed once cmd has been waited for
	err  error         // guarded by mu; cmd's Wait result, once done
	log  *logBuffer    // guarded by mu; the current incarnation's stderr
	logs []*logBuffer  // guarded by mu; every incarnation's, for failure reports
}

// nodeArgs are the flags of every test node.
func nodeArgs(name string, redis []string, extra []string) []string {
	args := []string{"-node", name, "-insecure", "-log-level", "info",
		"-tick", tick.String(), "-leave-grace", leaveGrace.String(), "-typing-ttl", typingTTL.String(),
		"-node-ttl", nodeTTL.String(), "-drain", drain.String()}
	args = append(args, redis...)
	return append(args, extra...)
}

// startNode starts a node named name with the redis flags and extra flags
// on free ports, and waits until it serves. It is killed in t's Cleanup;
// if t failed, the end of its logs is printed.
func startNode(t *testing.T, name string, redis []string, extra ...string) *node {
	t.Helper()
	n := &node{t: t, name: name, args: nodeArgs(name, redis, extra)}
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("node %s logs (last lines of each incarnation):\n%s", n.name, n.logTail(40))
		}
	})
	n.start("127.0.0.1:0", "127.0.0.1:0")
	return n
}

var servingLine = regexp.MustCompile(`msg=serving addr=(\S+) admin_addr=(\S+)`)

// start runs the process and waits for its "serving" log line.
func (n *node) start(addr, admin string) {
	n.t.Helper()
	lb := &logBuffer{serving: make(chan struct{})}
	cmd := exec.Command(presencedBin, append([]string{"-addr", addr, "-admin-addr", admin}, n.args...)...)
	cmd.Stdout = io.Discard
	cmd.Stderr = lb
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("node %s: start: %v", n.name, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done, n.err, n.log = cmd, done, nil, lb
	n.logs = append(n.logs, lb)
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(done)
	}()
	select {
	case <-lb.serving:
	case <-done:
		n.t.Fatalf("node %s exited at start: %v\n%s", n.name, n.waitErr(), lb.String())
	case <-time.After(startTimeout):
		n.t.Fatalf("node %s: no 'serving' line within %v\n%s", n.name, startTimeout, lb.String())
	}
	m := servingLine.FindStringSubmatch(lb.String())
	if m == nil {
		n.t.Fatalf("node %s: cannot read its addresses from\n%s", n.name, lb.String())
	}
	n.addr, n.admin = m[1], m[2]
}

// restart starts the node again, on the same ports (it must have ended).
func (n *node) restart() {
	n.t.Helper()
	n.mu.Lock()
	running := n.cmd != nil
	n.mu.Unlock()
	if running {
		n.t.Fatalf("node %s: restart while running", n.name)
	}
	n.start(n.addr, n.admin)
}

func (n *node) url() string { return "ws://" + n.addr + "/ws" }

func (n *node) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// kill sends SIGKILL and waits for the process to end.
func (n *node) kill() {
	n.signal(syscall.SIGKILL)
	n.wait()
}

func (n *node) stop() { n.signal(syscall.SIGSTOP) }
func (n *node) cont() { n.signal(syscall.SIGCONT) }

// term sends SIGTERM (a drain); wait for the end with wait.
func (n *node) term() { n.signal(syscall.SIGTERM) }

// wait waits for the process to end and returns its Wait error.
func (n *node) wait() error {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return nil
	}
	<-done
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cmd = nil
	return n.err
}

func (n *node) waitErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// logText is the current incarnation's stderr.
func (n *node) logText() string {
	n.mu.Lock()
	lb := n.log
	n.mu.Unlock()
	return lb.String()
}

// logTail is the last lines of each incarnation's stderr.
func (n *node) logTail(lines int) string {
	n.mu.Lock()
	logs := append([]*logBuffer(nil), n.logs...)
	n.mu.Unlock()
	var b strings.Builder
	for i, lb := range logs {
		all := strings.Split(strings.TrimRight(lb.String(), "\n"), "\n")
		fmt.Fprintf(&b, "--- %s incarnation %d (%d lines) ---\n", n.name, i+1, len(all))
		for _, l := range all[max(0, len(all)-lines):] {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// get fetches a path of the admin listener.
func (n *node) get(path string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + n.admin + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metric is the value of the sample named exactly name (with its labels,
// as /metrics writes them), or an error.
func (n *node) metric(name string) (float64, error) {
	_, body, err := n.get("/metrics")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("node %s: /metrics has no %s", n.name, name)
}

// metricIs is an eventually condition: the node's metric equals want.
func (n *node) metricIs(name string, want float64) error {
	v, err := n.metric(name)
	if err != nil {
		return err
	}
	if v != want {
		return fmt.Errorf("node %s: %s = %v, want %v", n.name, name, v, want)
	}
	return nil
}

// deaths sums presenced_cluster_node_deaths_total over its labels.
func (n *node) deaths() (float64, error) {
	var sum float64
	for _, how := range []string{"probe", "event", "announce"} {
		v, err := n.metric(`presenced_cluster_node_deaths_total{how="` + how + `"}`)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// logBuffer keeps a process's stderr and closes serving at the first
// "serving" line. Safe for concurrent use.
type logBuffer struct {
	serving chan struct{} // closed once

	mu   sync.Mutex
	buf  bytes.Buffer // guarded by mu
	seen bool         // guarded by mu: serving is closed
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.seen && bytes.Contains(l.buf.Bytes(), []byte("msg=serving ")) {
		// Wait for the whole line: the addresses follow.
		if i := bytes.Index(l.buf.Bytes(), []byte("msg=serving ")); bytes.IndexByte(l.buf.Bytes()[i:], '\n') >= 0 {
			l.seen = true
			close(l.serving)
		}
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
