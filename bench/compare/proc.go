package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Server names, in the order of a full run.
const (
	presencedEpoll   = "presenced-epoll"
	presencedNetpoll = "presenced-netpoll"
	baselineName     = "baseline"
	centrifugoName   = "centrifugo"
)

var allServers = []string{presencedEpoll, presencedNetpoll, baselineName, centrifugoName}

// jwtSecret signs the load's tokens for Centrifugo (given to it by
// environment, over whatever its config file says).
const jwtSecret = "bench-compare-hs256-secret"

// server is one running server process.
type server struct {
	name string
	url  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	err  error         // cmd.Wait's, once done
}

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// pinned prefixes argv with taskset -c cpu when the harness pins. The
// child gets a process group of its own (stop and kill end the group: a
// presence-load's -procs children with it) and SIGKILL when compare's
// thread that started it dies (Pdeathsig survives taskset's exec), so
// that a killed compare leaves no server holding thousands of sockets.
func (h *harness) pinned(cpu string, argv ...string) *exec.Cmd {
	if h.pin {
		argv = append([]string{"taskset", "-c", cpu}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// killGroup kills cmd's process group (see pinned).
func killGroup(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		_ = cmd.Process.Kill()
	}
}

// startServer starts a fresh server process and waits until it accepts
// TCP connections. listLimit, when positive, is presenced's -list-limit.
func (h *harness) startServer(name, label string, listLimit int) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &server{name: name, url: "ws://" + addr + "/ws", done: make(chan struct{})}
	switch name {
	case presencedEpoll, presencedNetpoll:
		admin, err := freePort()
		if err != nil {
			return nil, err
		}
		argv := []string{h.bin("presenced"), "-addr", addr, "-admin-addr", "127.0.0.1:" + strconv.Itoa(admin),
			"-insecure", "-engine", strings.TrimPrefix(name, "presenced-")}
		if listLimit > 0 {
			argv = append(argv, "-list-limit", strconv.Itoa(listLimit))
		}
		s.cmd = h.pinned("0", argv...)
	case baselineName:
		s.cmd = h.pinned("0", h.bin("baseline"), "-addr", addr)
	case centrifugoName:
		s.url = "ws://" + addr + "/connection/websocket"
		s.cmd = h.pinned("0", h.centrifugoBin, "--config", h.centrifugoConfig,
			"--http_server.address", "127.0.0.1", "--http_server.port", strconv.Itoa(port))
		s.cmd.Env = append(os.Environ(), "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY="+jwtSecret)
	default:
		return nil, fmt.Errorf("unknown server %q", name)
	}
	logf, err := os.Create(filepath.Join(h.out, "logs", label+".server.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited at start: %v (see %s)", name, s.err, logf.Name())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s does not accept connections on %s after 30 s", name, addr)
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop kills the server and its process group (no drain: the
// measurement is over) and waits.
func (s *server) stop() {
	killGroup(s.cmd)
	<-s.done
}

// alive reports an error when the server has exited.
func (s *server) alive() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited: %v", s.name, s.err)
	default:
		return nil
	}
}

// load is one running presence-load process.
type load struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	ready  chan struct{} // closed at the line "ready conns=N"
	done   chan struct{} // closed when cmd has been waited for
	err    error         // cmd.Wait's, once done
	last   string        // its last stderr line, once done
	errors atomic.Int64  // errors= of its last progress line
}

// exitErr describes the load's exit with its last words; after done.
func (l *load) exitErr() string {
	if l.last == "" {
		return fmt.Sprint(l.err)
	}
	return fmt.Sprintf("%v: %s", l.err, truncate(l.last, 300))
}

// running reports an error when the load has exited (its connections with it).
func (l *load) running() error {
	select {
	case <-l.done:
		return fmt.Errorf("presence-load ended during the measurement: %s", l.exitErr())
	default:
		return nil
	}
}

// startLoad starts presence-load with args, its stderr copied to a log.
func (h *harness) startLoad(label string, args ...string) (*load, error) {
	l := &load{ready: make(chan struct{}), done: make(chan struct{})}
	l.cmd = h.pinned("1", append([]string{h.loadBin}, args...)...)
	l.cmd.Stdout = &l.stdout
	stderr, err := l.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(h.out, "logs", label+".load.log"))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "%s\n", strings.Join(l.cmd.Args, " "))
	if err := l.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			l.last = line
			if m := progressErrors.FindStringSubmatch(line); m != nil {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				l.errors.Store(n)
			}
			if !once && strings.HasPrefix(line, "ready ") {
				once = true
				close(l.ready)
			}
		}
		_, _ = io.Copy(logf, stderr)
	}()
	go func() {
		<-copied
		l.err = l.cmd.Wait()
		close(l.done)
	}()
	return l, nil
}

// progressErrors finds the error count of a progress line.
var progressErrors = regexp.MustCompile(`^t=\S+ .* errors=(\d+)`)

// waitReady waits for the ready line, the load's exit, timeout, or more
// than maxErrors errors in a progress line (a server that drops
// connections while they join never gets them all ready).
func (l *load) waitReady(ctx context.Context, timeout time.Duration, maxErrors int64) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-l.ready:
			return nil
		case <-l.done:
			return fmt.Errorf("presence-load exited before ready: %s", l.exitErr())
		case <-deadline:
			return fmt.Errorf("presence-load not ready after %v (%d errors)", timeout, l.errors.Load())
		case <-tick.C:
			if n := l.errors.Load(); n > maxErrors {
				killGroup(l.cmd)
				return fmt.Errorf("%d errors before ready: the server drops connections while they join", n)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finish waits up to wait (0 when compare is stopping) for the load to
// end on its own, then interrupts it (it prints its summary on SIGINT), then kills it after
// 30 s more. It returns the summary it printed.
func (l *load) finish(wait time.Duration) (json.RawMessage, error) {
	select {
	case <-l.done:
	case <-time.After(wait):
		_ = l.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-l.done:
		case <-time.After(30 * time.Second):
			killGroup(l.cmd)
			<-l.done
		}
	}
	out := bytes.TrimSpace(l.stdout.Bytes())
	if i := bytes.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:] // the summary is the last line
	}
	if !json.Valid(out) || len(out) == 0 {
		return nil, fmt.Errorf("presence-load (%s) printed no JSON summary", l.exitErr())
	}
	var exitErr *exec.ExitError
	if l.err != nil && !errors.As(l.err, &exitErr) {
		return json.RawMessage(out), l.err
	}
	return json.RawMessage(out), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
