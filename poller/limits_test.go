package poller

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// TestMaxConns: over the cap an upgrade gets 503 (RejectCapacity); once a
// connection closes, a new one is accepted again.
func TestMaxConns(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		srv, rec := startRecorded(t, engine, Config{MaxConns: 2})
		a := dialRaw(t, srv.Addr())
		a.upgrade()
		b := dialRaw(t, srv.Addr())
		b.upgrade()

		over := dialRaw(t, srv.Addr())
		resp, err := over.request(upgradeRequest("/ws", testKey))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("over the cap: status %d, want 503", resp.StatusCode)
		}
		over.expectEOF()
		rec.waitReject(t, RejectCapacity, 1)

		a.closeHandshake(1000, "")
		rec.closeInfo(t, a.localAddr())
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		echoRoundTrip(t, c, "room again")
		if n := srv.Conns(); n != 2 {
			t.Errorf("Conns() = %d, want 2", n)
		}
		if got := rec.rejected(); len(got) != 1 {
			t.Errorf("OnReject: %v, want one capacity", got)
		}
		rec.check(t)
	})
}

// TestMaxConnsPerIP: a second connection from 127.0.0.1 gets 503
// (RejectPerIP) while 127.0.0.2 can still connect.
func TestMaxConnsPerIP(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		srv, rec := startRecorded(t, engine, Config{MaxConnsPerIP: 1})
		local1, local2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
		a := dialRawFrom(t, local1, srv.Addr())
		a.upgrade()

		again := dialRawFrom(t, local1, srv.Addr())
		resp, err := again.request(upgradeRequest("/ws", testKey))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("second from 127.0.0.1: status %d, want 503", resp.StatusCode)
		}
		again.expectEOF()
		rec.waitReject(t, RejectPerIP, 1)

		other := dialRawFrom(t, local2, srv.Addr())
		other.upgrade()
		echoRoundTrip(t, other, "other ip")
		if got := other.localAddr().Addr(); got != local2 {
			t.Fatalf("dialed from %v, want 127.0.0.2", got)
		}

		a.closeHandshake(1000, "")
		rec.closeInfo(t, a.localAddr())
		back := dialRawFrom(t, local1, srv.Addr())
		back.upgrade()
		echoRoundTrip(t, back, "back")
		if got := rec.rejected(); len(got) != 1 {
			t.Errorf("OnReject: %v, want one per_ip", got)
		}
		rec.check(t)
	})
}

// TestHandshakeTimeout: a connection that never completes its request is
// closed after HandshakeTimeout with RejectTimeout, and not much before.
func TestHandshakeTimeout(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		const timeout = 300 * time.Millisecond
		srv, rec := startRecorded(t, engine, Config{HandshakeTimeout: timeout, Tick: 20 * time.Millisecond})
		start := time.Now()
		silent := dialRaw(t, srv.Addr())
		partial := dialRaw(t, srv.Addr())
		partial.mustWrite([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n"))
		silent.expectEOF()
		partial.expectEOF()
		if d := time.Since(start); d < timeout-50*time.Millisecond {
			t.Errorf("closed after %v, before HandshakeTimeout %v", d, timeout)
		}
		rec.waitReject(t, RejectTimeout, 2)
		eventually(t, ioTimeout, func() error {
			if n := srv.Conns(); n != 0 {
				return fmt.Errorf("Conns() = %d", n)
			}
			return nil
		})
	})
}

// TestDeadline: SetDeadline fires OnDeadline once, within about Tick of
// the deadline and never before it; a new deadline replaces the old one
// and the zero time clears it.
func TestDeadline(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		const tick = 20 * time.Millisecond
		srv, rec := startRecorded(t, engine, Config{Tick: tick})
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		sc := rec.conn(t, c.localAddr())

		sc.SetDeadline(time.Now().Add(50 * time.Millisecond))
		sc.SetDeadline(time.Time{}) // cleared: must never fire
		want := time.Now().Add(200 * time.Millisecond)
		sc.SetDeadline(want.Add(-150 * time.Millisecond))
		sc.SetDeadline(want) // replaces the one above
		eventually(t, ioTimeout, func() error {
			if len(rec.deadlines(c.localAddr())) == 0 {
				return errors.New("no OnDeadline yet")
			}
			return nil
		})
		fired := rec.deadlines(c.localAddr())
		if len(fired) != 1 {
			t.Fatalf("OnDeadline called %d times, want 1", len(fired))
		}
		if late := fired[0].Sub(want); late < 0 || late > 2*time.Second {
			t.Errorf("OnDeadline %v after the deadline (Tick %v)", late, tick)
		}
		echoRoundTrip(t, c, "still open")

		// A second deadline fires too.
		sc.SetDeadline(time.Now().Add(tick))
		eventually(t, ioTimeout, func() error {
			if n := len(rec.deadlines(c.localAddr())); n != 2 {
				return fmt.Errorf("%d OnDeadline calls, want 2", n)
			}
			return nil
		})
		c.closeHandshake(1000, "")
		rec.check(t)
	})
}

// TestDeadlineFromCallback: a handler that re-arms its deadline in
// OnDeadline (a heartbeat) gets called repeatedly.
func TestDeadlineFromCallback(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		rec := newRecorder()
		rec.onOpenHook = func(c *Conn) { c.SetDeadline(time.Now().Add(30 * time.Millisecond)) }
		rec.onDeadHook = func(c *Conn) { c.SetDeadline(time.Now().Add(30 * time.Millisecond)) }
		srv := startServer(t, engine, Config{Tick: 10 * time.Millisecond, OnReject: rec.onReject}, rec)
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		eventually(t, ioTimeout, func() error {
			if n := len(rec.deadlines(c.localAddr())); n < 3 {
				return fmt.Errorf("%d OnDeadline calls, want 3", n)
			}
			return nil
		})
		c.closeHandshake(1000, "")
		rec.check(t)
	})
}

// TestCloseTimeout: a close handshake the peer never answers ends after
// CloseTimeout with CloseTimeout, keeping the code that was sent.
func TestCloseTimeout(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		const closeTimeout = 300 * time.Millisecond
		srv, rec := startRecorded(t, engine, Config{CloseTimeout: closeTimeout, Tick: 20 * time.Millisecond})

		// Closed by the server.
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		start := time.Now()
		rec.conn(t, c.localAddr()).Close(4001, "x")
		if code, _, _, err := c.readClose(); err != nil || code != 4001 {
			t.Fatalf("close: %d %v", code, err)
		}
		c.expectEOF() // without answering
		if d := time.Since(start); d < closeTimeout-50*time.Millisecond {
			t.Errorf("socket closed after %v, before CloseTimeout %v", d, closeTimeout)
		}
		info := rec.closeInfo(t, c.localAddr())
		if info.Reason != CloseTimeout || info.Code != 4001 {
			t.Errorf("OnClose %v/%d, want timeout/4001", info.Reason, info.Code)
		}

		// Closed after a protocol error.
		p := dialRaw(t, srv.Addr())
		p.upgrade()
		p.mustWrite(rawFrame{fin: true, op: ws.OpText, payload: []byte("unmasked")}.bytes()[:2])
		if code, _, _, err := p.readClose(); err != nil || code != ws.StatusProtocolError {
			t.Fatalf("close: %d %v", code, err)
		}
		p.expectEOF()
		info = rec.closeInfo(t, p.localAddr())
		if info.Reason != CloseTimeout || info.Code != ws.StatusProtocolError {
			t.Errorf("OnClose %v/%d, want timeout/1002", info.Reason, info.Code)
		}
		rec.check(t)
	})
}

// TestSlowReader: a peer that stops reading while the server sends 10 MB
// in 1 KB frames makes Send report ErrFull; the outbox never grows past
// Config.Outbox; the loop keeps serving another connection; and the server
// can still close the slow one.
func TestSlowReader(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		const outbox = 64 << 10
		srv, rec := startRecorded(t, engine, Config{
			Loops: 1, Outbox: outbox, CloseTimeout: 300 * time.Millisecond, Tick: 20 * time.Millisecond,
		})
		slow := dialRaw(t, srv.Addr())
		slow.conn.SetReadBuffer(4 << 10) // a small window fills sooner
		slow.upgrade()
		sc := rec.conn(t, slow.localAddr())
		fast := dialRaw(t, srv.Addr())
		fast.upgrade()

		frame := AppendFrame(nil, ws.OpBinary, make([]byte, 1024))
		var sent, full int
		for sent < 10<<20 {
			err := sc.Send(frame)
			if n := sc.OutboxLen(); n > outbox {
				t.Fatalf("OutboxLen %d > Outbox %d", n, outbox)
			}
			switch err {
			case nil:
				sent += len(frame)
			case ErrFull:
				full++
			default:
				t.Fatalf("Send: %v", err)
			}
			if full > 0 {
				break
			}
		}
		if full == 0 {
			t.Fatalf("sent %d bytes to a peer that reads nothing without ErrFull", sent)
		}
		t.Logf("ErrFull after %d bytes", sent)

		// The loop still serves the other connection.
		for i := range 20 {
			echoRoundTrip(t, fast, fmt.Sprintf("meanwhile %d", i))
			if err := sc.Send(frame); err != ErrFull {
				t.Fatalf("Send to the stalled peer: %v, want ErrFull", err)
			}
			if n := sc.OutboxLen(); n > outbox {
				t.Fatalf("OutboxLen %d > Outbox %d", n, outbox)
			}
		}

		// The server can close it; the peer never reads, so it times out.
		sc.Close(ws.StatusPolicyViolation, "too slow")
		if err := sc.Send(frame); err != ErrClosed {
			t.Fatalf("Send after Close: %v, want ErrClosed", err)
		}
		info := rec.closeInfo(t, slow.localAddr())
		if info.Reason != CloseTimeout || info.Code != ws.StatusPolicyViolation {
			t.Errorf("OnClose %v/%d, want timeout/1008", info.Reason, info.Code)
		}
		if n := sc.OutboxLen(); n != 0 {
			t.Errorf("OutboxLen %d after close", n)
		}
		echoRoundTrip(t, fast, "after")
		fast.closeHandshake(1000, "")
		rec.check(t)
	})
}

// TestSlowloris: 2,000 connections trickling partial requests cost no
// goroutine, do not delay a normal client's upgrade, and are all closed
// after HandshakeTimeout. (The 10,000-connection figure is for the
// benchmark; 2,000 keeps CI fast.) The slow clients are raw blocking
// sockets: they cost the test no goroutine and dial fast.
func TestSlowloris(t *testing.T) {
	// Not parallel: it counts goroutines.
	const (
		n       = 2000
		timeout = 500 * time.Millisecond
	)
	forEachEngine(t, func(t *testing.T, engine string) {
		srv, rec := startRecorded(t, engine, Config{HandshakeTimeout: timeout, Tick: 20 * time.Millisecond})
		before := runtime.NumGoroutine()
		start := time.Now()
		fds := make([]int, 0, n)
		t.Cleanup(func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		})
		to := &unix.SockaddrInet4{Port: int(srv.Addr().Port()), Addr: srv.Addr().Addr().As4()}
		for range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			fds = append(fds, fd)
			tv := unix.NsecToTimeval(int64(ioTimeout))
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			if err := unix.Connect(fd, to); err != nil {
				t.Fatalf("connect %d: %v", len(fds), err)
			}
			if _, err := unix.Write(fd, []byte("GET /ws HTTP/1.1\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%d slow clients connected in %v", n, time.Since(start))

		// A normal client upgrades at once among them.
		t0 := time.Now()
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		echoRoundTrip(t, c, "not starved")
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("normal upgrade took %v among %d slow clients", d, n)
		}
		held := srv.Conns()
		// netpoll runs OnRequest on pool workers that exit once the burst is
		// handled: stalled clients must hold none, so wait for the burst to
		// end (while the clients are still held) before judging.
		got := runtime.NumGoroutine()
		for got > before+10 && time.Since(start) < timeout/2 {
			time.Sleep(5 * time.Millisecond)
			got = runtime.NumGoroutine()
		}
		if got > before+10 {
			t.Errorf("goroutines grew from %d to %d with %d slow clients", before, got, held)
		}
		switch {
		case time.Since(start) > timeout/2:
			t.Logf("slow box: the slow clients may have timed out before the normal upgrade")
		case held < n:
			t.Errorf("Conns() = %d before HandshakeTimeout, want at least %d", held, n)
		}

		// Trickle one more header line: progress does not extend the deadline.
		for _, fd := range fds {
			unix.Write(fd, []byte("Host: x\r\n"))
		}
		var buf [64]byte
		for i, fd := range fds {
			n, err := unix.Read(fd, buf[:])
			for err == unix.EINTR {
				n, err = unix.Read(fd, buf[:])
			}
			// A reset (Read returns -1) when the server closes with the
			// trickled line unread.
			if (err == nil && n != 0) || (err != nil && err != unix.ECONNRESET) {
				t.Fatalf("slow client %d: read %d bytes, %v; want the server to close", i, n, err)
			}
		}
		if all := time.Since(start); all < timeout {
			t.Errorf("slow clients closed %v after the first dial, before HandshakeTimeout %v", all, timeout)
		}
		rec.waitReject(t, RejectTimeout, n)
		eventually(t, ioTimeout, func() error {
			if got := srv.Conns(); got != 1 {
				return fmt.Errorf("Conns() = %d, want 1", got)
			}
			return nil
		})
		echoRoundTrip(t, c, "still here")
		c.closeHandshake(1000, "")
	})
}

// TestEMFILE runs a server in a child process whose open-file limit is
// 64. Dialing past the limit must not make it spin, and once connections
// close it accepts and upgrades the waiting ones.
func TestEMFILE(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=emfile", "POLLER_TEST_ENGINE="+engine)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr := new(lockedBuffer)
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			stdin.Close() // the child stops when its stdin closes
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("child: %v; stderr:\n%s", err, stderr)
				}
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Errorf("child did not exit; stderr:\n%s", stderr)
			}
		})
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			t.Fatalf("child: %v; stderr:\n%s", err, stderr)
		}
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "skip: "); ok {
			t.Skip(rest)
		}
		addr, err := netip.ParseAddrPort(line)
		if err != nil {
			t.Fatalf("child printed %q; stderr:\n%s", line, stderr)
		}
		pid := cmd.Process.Pid

		// Dial well past the limit; each client sends its request at once
		// and waits for the answer in its own goroutine.
		const dials = 100
		type result struct {
			i    int
			conn net.Conn
			err  error
		}
		results := make(chan result, dials)
		var wg sync.WaitGroup
		conns := make([]net.Conn, dials)
		t.Cleanup(func() {
			for _, c := range conns {
				if c != nil {
					c.Close() // ends the clients still waiting
				}
			}
			wg.Wait()
		})
		for i := range dials {
			c, err := net.DialTimeout("tcp", addr.String(), ioTimeout)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			conns[i] = c
			wg.Go(func() {
				results <- result{i, c, upgradeOn(c, 30*time.Second)}
			})
		}

		// Wait until the child is at its limit: some upgraded, the rest
		// waiting in the backlog.
		var upgraded []int
		collect := func() error {
			for {
				select {
				case r := <-results:
					if r.err != nil {
						return fmt.Errorf("client %d: %v", r.i, r.err)
					}
					upgraded = append(upgraded, r.i)
				default:
					return nil
				}
			}
		}
		eventually(t, ioTimeout, func() error {
			if err := collect(); err != nil {
				t.Fatal(err)
			}
			if n := openFiles(pid); n < 60 {
				return fmt.Errorf("child has %d open files, want the limit (64)", n)
			}
			if len(upgraded) < 20 {
				return fmt.Errorf("%d upgraded", len(upgraded))
			}
			return nil
		})
		atLimit := len(upgraded)
		if atLimit >= dials {
			t.Fatalf("all %d connections upgraded: the limit was not reached", dials)
		}

		// At the limit, the child must not spin on accept.
		cpu0 := cpuTicks(t, pid)
		time.Sleep(time.Second) // the measurement window
		cpu := cpuTicks(t, pid) - cpu0
		if err := collect(); err != nil {
			t.Fatal(err)
		}
		t.Logf("at the limit: %d upgraded, %d waiting; child used %d clock ticks in 1s", len(upgraded), dials-len(upgraded), cpu)
		if cpu > 10 { // 100 ticks = a full core; idle is 0 or 1
			t.Errorf("child used %d clock ticks of CPU in 1s at the file limit: spinning", cpu)
		}

		// Free 10 files: waiting connections are accepted and upgraded.
		for _, i := range upgraded[:10] {
			conns[i].Close()
		}
		want := len(upgraded) + 5
		eventually(t, 20*time.Second, func() error {
			if err := collect(); err != nil {
				t.Fatal(err)
			}
			if len(upgraded) < want {
				return fmt.Errorf("%d upgraded, want %d", len(upgraded), want)
			}
			return nil
		})
	})
}

// lockedBuffer collects a child's stderr while the test may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// upgradeOn sends an upgrade request on c and waits for 101 and an echo.
func upgradeOn(c net.Conn, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, upgradeRequest("/ws", testKey)); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// openFiles counts the open file descriptors of process pid.
func openFiles(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// cpuTicks is the user+system CPU time of process pid in clock ticks.
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("the child has exited: %v", err)
	}
	// The command name may hold spaces: fields start after its ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err1 := strconv.Atoi(fields[11]) // field 14 of stat(5)
	stime, err2 := strconv.Atoi(fields[12]) // field 15
	if err1 != nil || err2 != nil {
		t.Fatalf("parse %s: %v %v", s, err1, err2)
	}
	return utime + stime
}

// emfileHelper is the child of TestEMFILE: it lowers its own soft limit on
// open files to 64, serves on 127.0.0.1:0, prints the address, and stops
// when its stdin closes.
func emfileHelper() int {
	// The runtime creates its own epoll instance with the first timer; at
	// the file limit that would be fatal, so take it now.
	time.Sleep(time.Millisecond)
	lim := unix.Rlimit{Cur: 64, Max: 64}
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lim.Max = cur.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 1
	}
	srv, err := New(Config{
		Addr: "127.0.0.1:0", Engine: os.Getenv("POLLER_TEST_ENGINE"), Loops: 1,
		HandshakeTimeout: time.Minute,
	}, newRecorder())
	if err != nil {
		if err.Error() == errNotBuilt {
			fmt.Println("skip:", err)
			return 0
		}
		fmt.Fprintln(os.Stderr, "New:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Println(srv.Addr())
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Run:", err)
		return 1
	}
	return 0
}
