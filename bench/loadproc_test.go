package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// The load process is this test binary run again with envLoad set: TestMain
// hands it to runLoad before the testing package starts, so the clients
// never share a heap, a scheduler or a file limit with the server measured.
//
// It talks to its parent through stdout (one line) and stdin (EOF means
// stop). Modes:
//
//	idle       open envConns upgraded connections, print "ready N", hold
//	           them until stdin closes or the process is killed.
//	slowloris  open envConns connections that each send part of an upgrade
//	           request, print "ready N", stall the same way.
//	handshake  for envDuration, envWorkers workers each dial, upgrade and
//	           abort (SO_LINGER 0) in a loop; print
//	           "done <count> <errors> <elapsed-ns> <p50-ns> <p99-ns>" and exit.
const (
	envLoad     = "PRESENCED_BENCH_LOAD"     // load mode; empty in the benchmark process
	envAddr     = "PRESENCED_BENCH_ADDR"     // server address, host:port
	envConns    = "PRESENCED_BENCH_CONNS"    // connections to hold; default 15000
	envInflight = "PRESENCED_BENCH_INFLIGHT" // handshakes in flight while opening; default 64
	envWorkers  = "PRESENCED_BENCH_WORKERS"  // handshake workers; default 32
	envDuration = "PRESENCED_BENCH_DURATION" // handshake run length; default 5s
	envSettle   = "PRESENCED_BENCH_SETTLE"   // pause before the second measurement; default 2s
	envHeapProf = "PRESENCED_BENCH_HEAPPROFILE"
)

const (
	modeIdle      = "idle"
	modeSlowloris = "slowloris"
	modeHandshake = "handshake"
)

// slowlorisRequest is the start of a valid upgrade request, without the
// Sec-WebSocket-Key and the blank line that would complete it.
const slowlorisRequest = "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"

// runLoad is the main function of the load process. It returns the exit
// code.
func runLoad(mode string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	addr := getenv(envAddr)
	var err error
	if _, cpu, ok := pinCPUs(getenv); ok {
		if _, err := pinProcess(cpu); err != nil { // for the life of the process
			fmt.Fprintf(stderr, "load process (%s): %v\n", mode, err)
			return 1
		}
	}
	switch mode {
	case modeIdle, modeSlowloris:
		err = loadHold(mode, addr, envInt(getenv, envConns, 15000), envInt(getenv, envInflight, 64), stdin, stdout)
	case modeHandshake:
		d, perr := time.ParseDuration(getenv(envDuration))
		if perr != nil {
			err = fmt.Errorf("%s: %w", envDuration, perr)
			break
		}
		err = loadHandshakes(addr, envInt(getenv, envWorkers, 32), d, stdout, stderr)
	default:
		err = runPresenceLoad(mode, getenv, stdin, stdout) // presence_load_test.go
	}
	if err != nil {
		fmt.Fprintf(stderr, "load process (%s): %v\n", mode, err)
		return 1
	}
	return 0
}

// loadHold opens n connections, inflight at a time, reports readiness and
// holds them until stdin reaches EOF.
func loadHold(mode, addr string, n, inflight int, stdin io.Reader, stdout io.Writer) error {
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	open := dialUpgraded
	if mode == modeSlowloris {
		open = dialStalled
	}
	var (
		next     atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(inflight, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := withRetry(func() (net.Conn, error) { return open(addr) })
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					next.Store(int64(n)) // stop the other workers
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if _, err := fmt.Fprintf(stdout, "ready %d\n", n); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, stdin) // hold until the parent lets go
	return err
}

// withRetry retries transient dial failures (a full accept backlog).
func withRetry(dial func() (net.Conn, error)) (net.Conn, error) {
	var err error
	for attempt := range 3 {
		var c net.Conn
		if c, err = dial(); err == nil {
			return c, nil
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	return nil, err
}

// dialUpgraded opens one WebSocket connection. ws.Dialer fails unless the
// server answers 101 with the right Sec-WebSocket-Accept.
func dialUpgraded(addr string) (net.Conn, error) {
	d := ws.Dialer{Timeout: 10 * time.Second}
	c, br, _, err := d.Dial(context.Background(), "ws://"+addr+"/ws")
	if err != nil {
		return nil, err
	}
	if br != nil { // the server sent something after its 101: unexpected, but harmless
		ws.PutReader(br)
	}
	return c, nil
}

// dialStalled opens a TCP connection and sends an incomplete upgrade
// request.
func dialStalled(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, slowlorisRequest); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// loadHandshakes runs dial+upgrade+abort cycles for d and prints the tally.
// The close is an abort (SO_LINGER 0, so an RST) to leave no TIME_WAIT
// socket behind: a few seconds of handshakes would otherwise exhaust the
// ephemeral ports towards one server address.
func loadHandshakes(addr string, workers int, d time.Duration, stdout, stderr io.Writer) error {
	var (
		wg        sync.WaitGroup
		errs      atomic.Int64
		errOnce   sync.Once
		latencies = make([][]time.Duration, workers)
	)
	start := time.Now()
	end := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1<<14)
			// At least one each, however late a busy machine starts the
			// worker.
			for first := true; first || time.Now().Before(end); first = false {
				t0 := time.Now()
				c, err := dialUpgraded(addr)
				if err != nil {
					errs.Add(1)
					errOnce.Do(func() { fmt.Fprintf(stderr, "load process: first handshake error: %v\n", err) })
					continue
				}
				lat = append(lat, time.Since(t0))
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				c.Close()
			}
			latencies[w] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(latencies...)
	slices.Sort(all)
	_, err := fmt.Fprintf(stdout, "done %d %d %d %d %d\n", len(all), errs.Load(), elapsed.Nanoseconds(), quantile(all, 0.50), quantile(all, 0.99))
	return err
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

func envInt(getenv func(string) string, key string, def int) int {
	if v, err := strconv.Atoi(getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// loadProc is a running load process, seen from the benchmark process.
type loadProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	line  chan lineResult // receives the process's one stdout line
	once  sync.Once
}

type lineResult struct {
	line string
	err  error
}

// startLoad runs the test binary again in mode, with env added to this
// process's environment. Its stderr goes to ours. No goroutine of this
// process outlives the first stdout line, so goroutine counts taken after
// it are not disturbed.
func startLoad(tb testing.TB, mode string, env ...string) *loadProc {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envLoad+"="+mode)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr // an *os.File: exec copies nothing, starts no goroutine
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &loadProc{cmd: cmd, stdin: stdin, line: make(chan lineResult, 1)}
	tb.Cleanup(p.kill)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			p.line <- lineResult{line: sc.Text()}
			return
		}
		err := sc.Err()
		if err == nil {
			err = errors.New("load process exited without reporting")
		}
		p.line <- lineResult{err: err}
	}()
	return p
}

// waitLine returns the process's stdout line, whose first word must be
// want; the other words are returned.
func (p *loadProc) waitLine(want string, timeout time.Duration) ([]string, error) {
	select {
	case r := <-p.line:
		if r.err != nil {
			return nil, r.err
		}
		f := strings.Fields(r.line)
		if len(f) == 0 || f[0] != want {
			return nil, fmt.Errorf("load process said %q, want %q", r.line, want)
		}
		return f[1:], nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("load process silent for %v", timeout)
	}
}

// kill ends the process at once (the kernel closes its sockets) and reaps
// it. Safe to call more than once.
func (p *loadProc) kill() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		p.stdin.Close()
		p.cmd.Wait()
	})
}

// wait reaps a process that exits by itself.
func (p *loadProc) wait(timeout time.Duration) error {
	var err error
	done := make(chan struct{})
	go func() {
		p.once.Do(func() {
			p.stdin.Close()
			err = p.cmd.Wait()
		})
		close(done)
	}()
	select {
	case <-done:
		return err
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-done
		return fmt.Errorf("load process still running after %v: killed", timeout)
	}
}
