// Package redistest starts real redis-server processes for tests: a
// standalone server, a Redis Cluster of N masters, and a Sentinel setup
// (master, replica, one sentinel). Every process listens on a free
// 127.0.0.1 port, persists nothing, and is killed by PID (SIGKILL, then
// reaped) in the test's Cleanup. Only _test files import this package.
//
// Failures call t.Fatal with the tail of redis-server's log. A Server's
// methods are safe for concurrent use.
//
//	s := redistest.Start(t)
//	c := s.Client(t)
//	s.Kill(); s.Restart() // the same port, empty
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds the wait for a started redis-server to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	dir  string                  // static: the process's working directory (logs, cluster/sentinel files)
	argv func(port int) []string // static: the command line for a port

	mu   sync.Mutex
	port int           // guarded by mu; fixed after the first start
	cmd  *exec.Cmd     // guarded by mu; nil when not running
	done chan struct{} // guarded by mu; closed when cmd has been waited for
	gen  int           // guarded by mu; starts so far (names the log files)
}

// Start starts a redis-server on a free 127.0.0.1 port with
// --save "" --appendonly no and args appended, and waits until it answers
// PING. It is killed in t's Cleanup.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s := newServer(t, func(s *Server, port int) []string {
		a := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", s.dir,
			"--logfile", s.logPathLocked(), "--daemonize", "no"}
		return append(a, args...)
	}, 0)
	return s
}

// newServer builds a Server whose command line is argv and starts it on a
// free port (with room for port+extra when extra > 0: the cluster bus).
func newServer(t testing.TB, argv func(s *Server, port int) []string, extra int) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redistest: redis-server not on PATH (make deps installs it): %v", err)
	}
	s := &Server{t: t, dir: t.TempDir()}
	s.argv = func(port int) []string { return argv(s, port) }
	t.Cleanup(s.kill)
	var err error
	for try := 0; try < 5; try++ {
		var port int
		port, err = freePort(extra)
		if err != nil {
			continue
		}
		if err = s.start(port); err == nil {
			return s
		}
		if !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	t.Fatalf("redistest: %v", err)
	return nil
}

// freePort returns a port that was free on 127.0.0.1 a moment ago (and
// port+extra too, when extra > 0).
func freePort(extra int) (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if extra == 0 {
			_ = l.Close()
			return port, nil
		}
		if port+extra > 65535 {
			_ = l.Close()
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+extra))
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = l2.Close()
		return port, nil
	}
	return 0, errors.New("no free port pair")
}

func (s *Server) logPathLocked() string {
	return filepath.Join(s.dir, "redis-"+strconv.Itoa(s.gen)+".log")
}

// start runs the process on port and waits for PING.
func (s *Server) start(port int) error {
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		return errors.New("already running")
	}
	s.gen++
	s.port = port
	cmd := exec.Command("redis-server", s.argv(port)...)
	cmd.Dir = s.dir
	var out bytes.Buffer // startup errors before the log file is open
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	logPath := s.logPathLocked()
	s.mu.Unlock()

	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			s.mu.Lock()
			if s.cmd == cmd {
				s.cmd, s.done = nil, nil
			}
			s.mu.Unlock()
			return fmt.Errorf("redis-server on %s exited at start: %s\n%s", addr,
				strings.TrimSpace(out.String()), logTail(logPath))
		default:
		}
		if ping(addr) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on %s did not answer PING within %v\n%s", addr, startTimeout, logTail(logPath))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends a raw PING (no go-redis: nothing left running).
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: %q", strings.TrimSpace(line))
	}
	return nil
}

// logTail is the last lines of a redis-server log, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "redis-server log " + path + ":\n" + strings.Join(lines, "\n")
}

// LogTail returns the last lines of the current process's log.
func (s *Server) LogTail() string {
	s.mu.Lock()
	p := s.logPathLocked()
	s.mu.Unlock()
	return logTail(p)
}

// Addr is "127.0.0.1:PORT".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "127.0.0.1:" + strconv.Itoa(s.port)
}

// URL is "redis://127.0.0.1:PORT".
func (s *Server) URL() string { return "redis://" + s.Addr() }

// PID is the running process's id, 0 when not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Client returns a go-redis client of the server (context deadlines
// bound its commands), closed in t's Cleanup.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill sends SIGKILL and waits for the process to end. No-op when not running.
func (s *Server) Kill() { s.kill() }

func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts the server again on the same port, empty (it must have
// been killed first; Restart kills it when it still runs).
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	var err error
	for try := 0; try < 50; try++ { // the port may linger a moment
		if err = s.start(port); err == nil || !strings.Contains(err.Error(), "in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

// Stop sends SIGSTOP (the process freezes; sockets stay open).
func (s *Server) Stop() { s.signal(syscall.SIGSTOP) }

// Cont sends SIGCONT.
func (s *Server) Cont() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// do runs one command on a short-lived client.
func do(addr string, args ...any) (any, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Do(ctx, args...).Result()
}

// eventually polls f every 50 ms until it returns nil or timeout passes,
// and returns f's last error.
func eventually(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
