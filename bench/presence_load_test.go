package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/presenced/presenced/internal/wire"
)

// Presence load modes: the load process speaks protocol v1 (insecure
// hello) to an internal/server started by the benchmark process. Each
// process talks to its parent through stdin (one command a line) and
// stdout (one answer a line):
//
//	presence-idle     open envConns connections from envLocalIP; connection
//	                  i (counted from envFirst) says hello as user "u<i>" and
//	                  joins room "r<i mod envRooms>" with a small state; once
//	                  every one has its ack and sync, print "ready N" and hold
//	                  them (answering pings) until stdin closes.
//	presence-fanout   open envConns connections as users "l<i>", each joined
//	                  to envRoom, paced at envJoinRate joins a second; print
//	                  "ready N". Every connection reads everything: it checks
//	                  the cursor chain (each diff's from is the previous cur)
//	                  and takes the state of the user envChanger from each
//	                  diff. "go": start counting (answer "going");
//	                  "stop <status>": answer "result k=v ..." (see
//	                  fanoutCounts) and keep the connections until stdin
//	                  closes.
//	presence-changer  one connection, user envChanger, joined to envRoom;
//	                  print "ready 1". "go <duration>": set its state
//	                  envRate times a second for duration, the status "s<k>"
//	                  and the meta {"n":k,"ts":<unix ns of the send>,"p":<pad>}
//	                  (envPad bytes of padding), then answer "done k=v ...".
//	presence-slow     prints "started"; on "join", opens one connection, user
//	                  "slow", whose socket has a small SO_RCVBUF (envRcvBuf)
//	                  and announces an Ethernet-sized MSS (envMSS: on
//	                  loopback the 64 KiB MSS would let the server's kernel
//	                  buffer megabytes), joins envRoom, reads its ack and
//	                  sync, prints "ready 1 rcvbuf=R mss=M" and reads nothing
//	                  more until "read <timeout>": then it reads until the
//	                  close frame, an error or the timeout and answers
//	                  "result frames=F bytes=B close=C err=E".
const (
	modeIdlePresence = "presence-idle"
	modeFanout       = "presence-fanout"
	modeChanger      = "presence-changer"
	modeSlow         = "presence-slow"
)

const (
	envLocalIP  = "PRESENCED_BENCH_LOCAL_IP"  // source address of the process's connections (127.0.0.x)
	envFirst    = "PRESENCED_BENCH_FIRST"     // index of the process's first connection
	envRooms    = "PRESENCED_BENCH_ROOMS"     // presence-idle: number of rooms
	envRoom     = "PRESENCED_BENCH_ROOM"      // the room of fanout, changer and slow
	envChanger  = "PRESENCED_BENCH_CHANGER"   // user id of the changer
	envRate     = "PRESENCED_BENCH_RATE"      // changer: sets per second
	envPad      = "PRESENCED_BENCH_META_PAD"  // changer: bytes of padding in its meta
	envRcvBuf   = "PRESENCED_BENCH_RCVBUF"    // slow: SO_RCVBUF of its socket
	envMSS      = "PRESENCED_BENCH_MSS"       // slow: TCP_MAXSEG of its socket (the MSS it announces)
	envJoinRate = "PRESENCED_BENCH_JOIN_RATE" // fanout: joins a second, this process
	envPeriod   = "PRESENCED_BENCH_PERIOD"    // fanout: the changer's period, for the first-change latency
)

// errUnknownMode is runPresenceLoad's answer to a mode it does not know.
var errUnknownMode = errors.New("unknown load mode")

// runPresenceLoad is the main function of the presence load modes.
func runPresenceLoad(mode string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	addr := getenv(envAddr)
	local, err := netip.ParseAddr(getenv(envLocalIP))
	if err != nil {
		local = netip.Addr{} // any source address
	}
	in := bufio.NewScanner(stdin)
	switch mode {
	case modeIdlePresence:
		return loadIdlePresence(addr, local, envInt(getenv, envFirst, 0), envInt(getenv, envConns, 5000),
			envInt(getenv, envRooms, 1000), envInt(getenv, envInflight, 64), stdin, stdout)
	case modeFanout:
		return loadFanout(fanoutConfig{
			addr:     addr,
			local:    local,
			first:    envInt(getenv, envFirst, 0),
			n:        envInt(getenv, envConns, 5000),
			room:     getenv(envRoom),
			changer:  getenv(envChanger),
			joinRate: envInt(getenv, envJoinRate, 1000),
			inflight: envInt(getenv, envInflight, 64),
			period:   envDurationFrom(getenv, envPeriod, 10*time.Millisecond),
		}, in, stdout)
	case modeChanger:
		return loadChanger(addr, local, getenv(envRoom), getenv(envChanger), envInt(getenv, envRate, 100),
			envInt(getenv, envPad, 0), in, stdout)
	case modeResync:
		return loadResync(resyncLoadConfig(getenv, addr, local), in, stdout) // resync_load_test.go
	case modeSlow:
		return loadSlow(addr, local, getenv(envRoom), envInt(getenv, envRcvBuf, 2048), envInt(getenv, envMSS, 1460), in, stdout)
	}
	return fmt.Errorf("%w %q", errUnknownMode, mode)
}

func envDurationFrom(getenv func(string) string, key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(getenv(key)); err == nil && d > 0 {
		return d
	}
	return def
}

// wsClient is a minimal protocol v1 client connection: masked text frames
// out, unfragmented frames in. Reads happen on one goroutine; writes are
// serialized by wmu.
type wsClient struct {
	conn net.Conn
	br   *bufio.Reader
	rbuf []byte // payload buffer, reused for messages up to maxKeptPayload

	wmu  sync.Mutex
	wbuf []byte // guarded by wmu
}

// maxKeptPayload: larger payloads (big syncs) get a buffer of their own,
// so 10,000 connections do not each keep 32 KiB.
const maxKeptPayload = 1024

// sockOpts are socket options set before connecting; zero leaves the
// kernel's default.
type sockOpts struct {
	rcvbuf int // SO_RCVBUF: the window this side announces stays small
	mss    int // TCP_MAXSEG: the MSS announced in the SYN, which bounds the peer's
}

// dialWS opens a WebSocket connection to addr from local (any address if
// invalid).
func dialWS(addr string, local netip.Addr, opts sockOpts) (*wsClient, error) {
	nd := net.Dialer{Timeout: 10 * time.Second}
	if local.IsValid() {
		nd.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	if opts != (sockOpts{}) {
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				if opts.rcvbuf > 0 && serr == nil {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, opts.rcvbuf)
				}
				if opts.mss > 0 && serr == nil {
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, opts.mss)
				}
			}); err != nil {
				return err
			}
			return serr
		}
	}
	d := ws.Dialer{
		Timeout: 10 * time.Second,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, network, addr)
		},
	}
	var (
		conn net.Conn
		br   *bufio.Reader
		err  error
	)
	for attempt := range 3 { // a full accept backlog fails a dial now and then
		if conn, br, _, err = d.Dial(context.Background(), "ws://"+addr+"/ws"); err == nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 1024)
	}
	return &wsClient{conn: conn, br: br}, nil
}

// writeText sends p as one masked text frame.
func (c *wsClient) writeText(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], 0x80|byte(ws.OpText))
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	mask := [4]byte{0x5a, 0xc3, 0x19, 0x7e}
	b = append(b, mask[:]...)
	for i, x := range p {
		b = append(b, x^mask[i&3])
	}
	c.wbuf = b
	_, err := c.conn.Write(b)
	return err
}

// closeError is a close frame from the server.
type closeError struct{ code int }

func (e closeError) Error() string { return fmt.Sprintf("closed by the server with %d", e.code) }

// read returns the next data message. Close frames end with a closeError;
// ping frames are answered. The payload is valid until the next read.
func (c *wsClient) read() ([]byte, error) {
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		if !h.Fin {
			return nil, errors.New("fragmented server message: not expected from presenced")
		}
		if h.Length > 1<<20 {
			return nil, fmt.Errorf("server frame of %d bytes", h.Length)
		}
		n := int(h.Length)
		var p []byte
		if n <= maxKeptPayload {
			if c.rbuf == nil {
				c.rbuf = make([]byte, maxKeptPayload)
			}
			p = c.rbuf[:n]
		} else {
			p = make([]byte, n)
		}
		if _, err := io.ReadFull(c.br, p); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpText:
			return p, nil
		case ws.OpClose:
			code := 1005
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			return nil, closeError{code}
		case ws.OpPing:
			// Not sent by presenced (its pings are JSON), but harmless.
		default:
			return nil, fmt.Errorf("unexpected opcode %v", h.OpCode)
		}
	}
}

// pingTS returns the ts of a JSON ping, or ok false.
func pingTS(p []byte) (ts int64, ok bool) {
	if !bytes.HasPrefix(p, []byte(`{"t":"ping"`)) {
		return 0, false
	}
	var e wire.Event
	if wire.DecodeEvent(p, &e) != nil {
		return 0, false
	}
	return e.TS, true
}

// pong answers a JSON ping.
func (c *wsClient) pong(ts int64) error {
	return c.writeText(wire.AppendPong(nil, ts))
}

// hello says hello as user and waits for welcome.
func (c *wsClient) hello(user string) error {
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.conn.SetDeadline(time.Time{})
	h, err := wire.MarshalHello(wire.Hello{User: user})
	if err != nil {
		return err
	}
	if err := c.writeText(h); err != nil {
		return err
	}
	p, err := c.read()
	if err != nil {
		return fmt.Errorf("hello %s: %w", user, err)
	}
	var e wire.Event
	if err := wire.DecodeEvent(p, &e); err != nil || e.T != wire.TWelcome || e.User != user {
		return fmt.Errorf("hello %s: got %q, want welcome", user, p)
	}
	return nil
}

// join joins room with st (may be nil) as command id 1 and waits for its
// ack and the room's sync, which it returns.
func (c *wsClient) join(room string, st *wire.State) (wire.Event, error) {
	c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	defer c.conn.SetDeadline(time.Time{})
	if err := c.writeText(wire.AppendJoin(nil, 1, room, st)); err != nil {
		return wire.Event{}, err
	}
	acked := false
	for {
		p, err := c.read()
		if err != nil {
			return wire.Event{}, fmt.Errorf("join %s: %w", room, err)
		}
		var e wire.Event
		if err := wire.DecodeEvent(p, &e); err != nil {
			return wire.Event{}, fmt.Errorf("join %s: %w", room, err)
		}
		switch {
		case e.T == wire.TPing:
			if err := c.pong(e.TS); err != nil {
				return wire.Event{}, err
			}
		case e.T == wire.TAck && e.ID == 1:
			acked = true
		case e.T == wire.TSync && e.Room == room:
			if !acked {
				return wire.Event{}, fmt.Errorf("join %s: sync before ack", room)
			}
			return e, nil
		default:
			return wire.Event{}, fmt.Errorf("join %s: unexpected %q before the sync", room, p)
		}
	}
}

// openAll runs open(i) for i in [0, n), inflight at a time, and returns the
// first error.
func openAll(n, inflight int, open func(i int) error) error {
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
				if err := open(i); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// idleState is the small state each idle connection joins with.
func idleState(i int) *wire.State {
	return &wire.State{Status: "online", Meta: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`)}
}

// loadIdlePresence: see modeIdlePresence.
func loadIdlePresence(addr string, local netip.Addr, first, n, rooms, inflight int, stdin io.Reader, stdout io.Writer) error {
	conns := make([]*wsClient, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}()
	err := openAll(n, inflight, func(i int) error {
		g := first + i
		c, err := dialWS(addr, local, sockOpts{})
		if err != nil {
			return err
		}
		conns[i] = c
		if err := c.hello("u" + strconv.Itoa(g)); err != nil {
			return err
		}
		if _, err := c.join("r"+strconv.Itoa(g%rooms), idleState(g)); err != nil {
			return err
		}
		go c.drain() // the diffs of later joiners, and pings
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "ready %d\n", n); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, stdin)
	return err
}

// drain reads and discards everything, answering pings, until the
// connection ends.
func (c *wsClient) drain() {
	for {
		p, err := c.read()
		if err != nil {
			return
		}
		if ts, ok := pingTS(p); ok {
			c.pong(ts)
		}
	}
}

// latencyHist counts latencies in latencyBucket-wide buckets.
type latencyHist [latencyBuckets]atomic.Uint64

const (
	latencyBucket  = 100 * time.Microsecond
	latencyBuckets = 50000 // up to 5 s; the last bucket holds everything above
)

func (h *latencyHist) add(d time.Duration) {
	i := int(d / latencyBucket)
	if i < 0 {
		i = 0
	}
	h[min(i, latencyBuckets-1)].Add(1)
}

// encode writes the non-empty buckets as "i:count,i:count".
func (h *latencyHist) encode() string {
	var b strings.Builder
	for i := range h {
		if v := h[i].Load(); v > 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d:%d", i, v)
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// fanoutConfig configures a presence-fanout process.
type fanoutConfig struct {
	addr     string
	local    netip.Addr
	first, n int
	room     string
	changer  string
	joinRate int           // joins a second
	inflight int           // handshakes in flight
	period   time.Duration // the changer's period between sets
}

// fanoutConn is one listening connection and what it saw.
type fanoutConn struct {
	c *wsClient

	mu     sync.Mutex
	cur    string // the room's cursor as this connection knows it
	prevN  int64  // the changer's set number last seen
	status string // the changer's status last seen
	fanoutCounts
}

// fanoutCounts is what a fanout process reports, summed (max/min: over
// connections) in its result line.
type fanoutCounts struct {
	conns    int // connections
	diffs    int // diffs received while counting
	cdiffs   int // of which carried a change of the changer
	maxDiffs int // most diffs on one connection
	minDiffs int // fewest diffs on one connection
	breaks   int // diffs whose from was not the previous cur
	syncs    int // syncs received while counting (after a dropped diff)
	finalOK  int // connections whose last changer status is the final one
	finalBad int
	errs     int // err messages, unparsable messages
	closed   int // connections the server closed
}

// loadFanout: see modeFanout.
func loadFanout(cfg fanoutConfig, in *bufio.Scanner, stdout io.Writer) error {
	var (
		counting atomic.Bool
		first    latencyHist // from the first set a diff carries (estimated), to receipt
		last     latencyHist // from the set a diff shows, to receipt
	)
	conns := make([]*fanoutConn, cfg.n)
	defer func() {
		for _, fc := range conns {
			if fc != nil {
				fc.c.conn.Close()
			}
		}
	}()
	changerKey := []byte(`{"u":` + string(wire.AppendString(nil, cfg.changer)) + `,"s":"`)
	interval := time.Second / time.Duration(max(cfg.joinRate, 1))
	start := time.Now()
	var started atomic.Int64
	err := openAll(cfg.n, cfg.inflight, func(i int) error {
		// Pace the joins: a burst of joins makes one huge diff per tick
		// that every member already in the room must read.
		k := started.Add(1) - 1
		if wait := time.Until(start.Add(time.Duration(k) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		c, err := dialWS(cfg.addr, cfg.local, sockOpts{})
		if err != nil {
			return err
		}
		fc := &fanoutConn{c: c}
		conns[i] = fc
		if err := c.hello("l" + strconv.Itoa(cfg.first+i)); err != nil {
			return err
		}
		st, err := c.join(cfg.room, &wire.State{Status: "online"})
		if err != nil {
			return err
		}
		fc.cur = st.Cur
		fc.takeSync(&st, cfg.changer)
		go fc.run(changerKey, cfg.changer, cfg.period, &counting, &first, &last)
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "ready %d\n", cfg.n); err != nil {
		return err
	}
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "go":
			for _, fc := range conns {
				fc.mu.Lock()
				fc.prevN = 0 // the changer's sets are numbered from 1
				fc.mu.Unlock()
			}
			counting.Store(true)
			fmt.Fprintln(stdout, "going")
		case "stop":
			counting.Store(false)
			var sum fanoutCounts
			sum.minDiffs = -1
			for _, fc := range conns {
				fc.mu.Lock()
				c := fc.fanoutCounts
				if fc.status == arg {
					c.finalOK = 1
				} else {
					c.finalBad = 1
				}
				fc.mu.Unlock()
				sum.add(c)
			}
			fmt.Fprintf(stdout, "result conns=%d diffs=%d cdiffs=%d maxd=%d mind=%d breaks=%d syncs=%d final_ok=%d final_bad=%d errs=%d closed=%d first=%s last=%s\n",
				sum.conns, sum.diffs, sum.cdiffs, sum.maxDiffs, sum.minDiffs, sum.breaks, sum.syncs,
				sum.finalOK, sum.finalBad, sum.errs, sum.closed, first.encode(), last.encode())
		}
	}
	return in.Err()
}

func (s *fanoutCounts) add(c fanoutCounts) {
	s.conns++
	s.diffs += c.diffs
	s.cdiffs += c.cdiffs
	s.maxDiffs = max(s.maxDiffs, c.diffs)
	if s.minDiffs < 0 || c.diffs < s.minDiffs {
		s.minDiffs = c.diffs
	}
	s.breaks += c.breaks
	s.syncs += c.syncs
	s.finalOK += c.finalOK
	s.finalBad += c.finalBad
	s.errs += c.errs
	s.closed += c.closed
}

// takeSync records the changer's state from a sync, if it lists it (a
// sync cut by the sync budget may not).
func (fc *fanoutConn) takeSync(e *wire.Event, changer string) {
	for _, m := range e.Members {
		if m.U != changer {
			continue
		}
		fc.status = m.S
		var meta struct{ N int64 }
		if json.Unmarshal(m.M, &meta) == nil {
			fc.prevN = meta.N
		}
	}
}

// run reads the connection until it ends.
func (fc *fanoutConn) run(changerKey []byte, changer string, period time.Duration, counting *atomic.Bool, first, last *latencyHist) {
	for {
		p, err := fc.c.read()
		now := time.Now()
		if err != nil {
			if errors.As(err, new(closeError)) {
				fc.mu.Lock()
				fc.closed++
				fc.mu.Unlock()
			}
			return
		}
		if d, ok := parseDiff(p, changerKey); ok {
			fc.onDiff(&d, now, period, counting.Load(), first, last)
			continue
		}
		var e wire.Event
		if wire.DecodeEvent(p, &e) != nil {
			fc.mu.Lock()
			fc.errs++
			fc.mu.Unlock()
			continue
		}
		switch e.T {
		case wire.TPing:
			fc.c.pong(e.TS)
		case wire.TSync:
			fc.mu.Lock()
			fc.cur = e.Cur
			fc.takeSync(&e, changer)
			if counting.Load() {
				fc.syncs++
			}
			fc.mu.Unlock()
		case wire.TErr:
			fc.mu.Lock()
			fc.errs++
			fc.mu.Unlock()
		}
	}
}

func (fc *fanoutConn) onDiff(d *diffInfo, now time.Time, period time.Duration, counting bool, first, last *latencyHist) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if string(d.from) != fc.cur {
		fc.breaks++
	}
	fc.cur = string(d.cur)
	if d.status == nil {
		if counting {
			fc.diffs++
		}
		return
	}
	fc.status = string(d.status)
	prev := fc.prevN
	fc.prevN = d.n
	if !counting {
		return
	}
	fc.diffs++
	if d.n <= 0 {
		return
	}
	fc.cdiffs++
	age := now.Sub(time.Unix(0, d.ts))
	last.add(age)
	// The diff coalesces sets prev+1 .. n; the first of them was sent about
	// (n-prev-1) periods before set n (the changer sends on a fixed
	// schedule; if it ran late, this overstates the latency).
	if skipped := d.n - prev - 1; skipped >= 0 {
		first.add(age + time.Duration(skipped)*period)
	}
}

// diffInfo is what parseDiff extracts from a diff: slices of the message.
type diffInfo struct {
	from, cur []byte
	status    []byte // the changer's new status; nil when the diff has no change of it
	n, ts     int64  // from the changer's meta {"n":..,"ts":..}
}

// parseDiff extracts from, cur and the changer's state from a diff
// without decoding the JSON (the listeners of BenchmarkFanout read 100,000
// diffs a second on the same two cores as the server). It relies on the
// layout the server writes (wire.AppendDiffStart, wire.AppendMember);
// TestParseDiff checks it against wire.DecodeEvent. changerKey is
// `{"u":"<changer>","s":"`.
func parseDiff(p, changerKey []byte) (d diffInfo, ok bool) {
	if !bytes.HasPrefix(p, []byte(`{"t":"diff"`)) {
		return d, false
	}
	if d.from, ok = stringField(p, `"from":"`); !ok {
		return d, false
	}
	if d.cur, ok = stringField(p, `"cur":"`); !ok {
		return d, false
	}
	i := bytes.Index(p, changerKey)
	if i < 0 {
		return d, true
	}
	rest := p[i+len(changerKey):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return d, false
	}
	d.status = rest[:end]
	rest = rest[end:]
	m := bytes.Index(rest, []byte(`"m":{`))
	if m < 0 {
		return d, false
	}
	rest = rest[m:]
	d.n, _ = intField(rest, `"n":`)
	d.ts, _ = intField(rest, `"ts":`)
	return d, true
}

func stringField(p []byte, key string) ([]byte, bool) {
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return nil, false
	}
	v := p[i+len(key):]
	end := bytes.IndexByte(v, '"')
	if end < 0 {
		return nil, false
	}
	return v[:end], true
}

func intField(p []byte, key string) (int64, bool) {
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return 0, false
	}
	v := p[i+len(key):]
	end := 0
	for end < len(v) && (v[end] >= '0' && v[end] <= '9' || end == 0 && v[end] == '-') {
		end++
	}
	n, err := strconv.ParseInt(string(v[:end]), 10, 64)
	return n, err == nil
}

// changerState is the changer's k-th state.
func changerState(k int64, ts int64, pad string) *wire.State {
	meta := `{"n":` + strconv.FormatInt(k, 10) + `,"ts":` + strconv.FormatInt(ts, 10)
	if pad != "" {
		meta += `,"p":"` + pad + `"`
	}
	return &wire.State{Status: "s" + strconv.FormatInt(k, 10), Meta: json.RawMessage(meta + "}")}
}

// loadChanger: see modeChanger.
func loadChanger(addr string, local netip.Addr, room, user string, rate, pad int, in *bufio.Scanner, stdout io.Writer) error {
	c, err := dialWS(addr, local, sockOpts{})
	if err != nil {
		return err
	}
	defer c.conn.Close()
	if err := c.hello(user); err != nil {
		return err
	}
	padding := strings.Repeat("x", pad)
	if _, err := c.join(room, changerState(0, 0, padding)); err != nil {
		return err
	}
	var acked, errs atomic.Int64
	var lastErr atomic.Pointer[string]
	go func() {
		for {
			p, err := c.read()
			if err != nil {
				return
			}
			if ts, ok := pingTS(p); ok {
				c.pong(ts)
				continue
			}
			switch {
			case bytes.HasPrefix(p, []byte(`{"t":"ack"`)):
				acked.Add(1)
			case bytes.HasPrefix(p, []byte(`{"t":"err"`)):
				errs.Add(1)
				s := string(p)
				lastErr.Store(&s)
			}
		}
	}()
	if _, err := fmt.Fprintln(stdout, "ready 1"); err != nil {
		return err
	}
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		if cmd != "go" {
			continue
		}
		d, err := time.ParseDuration(arg)
		if err != nil {
			return err
		}
		period := time.Second / time.Duration(rate)
		var (
			k      int64
			maxLag time.Duration
			buf    []byte
		)
		t0 := time.Now()
		for {
			next := t0.Add(time.Duration(k+1) * period)
			if next.Sub(t0) > d {
				break
			}
			time.Sleep(time.Until(next))
			k++
			now := time.Now()
			maxLag = max(maxLag, now.Sub(next))
			buf = wire.AppendSet(buf[:0], k+1, room, *changerState(k, now.UnixNano(), padding)) // ids from 2: the join was 1
			if err := c.writeText(buf); err != nil {
				return err
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for acked.Load()+errs.Load() < k && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		le := "-"
		if p := lastErr.Load(); p != nil {
			le = strings.ReplaceAll(*p, " ", "_")
		}
		fmt.Fprintf(stdout, "done sent=%d acked=%d errs=%d final=s%d maxlag_us=%d last_err=%s\n",
			k, acked.Load(), errs.Load(), k, maxLag.Microseconds(), le)
	}
	return in.Err()
}

// loadSlow: see modeSlow.
func loadSlow(addr string, local netip.Addr, room string, rcvbuf, mss int, in *bufio.Scanner, stdout io.Writer) error {
	if _, err := fmt.Fprintln(stdout, "started"); err != nil {
		return err
	}
	var c *wsClient
	defer func() {
		if c != nil {
			c.conn.Close()
		}
	}()
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "join":
			var err error
			if c, err = dialWS(addr, local, sockOpts{rcvbuf: rcvbuf, mss: mss}); err != nil {
				return err
			}
			if err := c.hello("slow"); err != nil {
				return err
			}
			if _, err := c.join(room, &wire.State{Status: "online"}); err != nil {
				return err
			}
			gotBuf, gotMSS := -1, -1
			if sc, err := c.conn.(*net.TCPConn).SyscallConn(); err == nil {
				sc.Control(func(fd uintptr) {
					gotBuf, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
					gotMSS, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG)
				})
			}
			if _, err := fmt.Fprintf(stdout, "ready 1 rcvbuf=%d mss=%d\n", gotBuf, gotMSS); err != nil {
				return err
			}
		case "read":
			// Count what the connection still delivers: the bytes the
			// kernel and the server's outbox held, then (if the server got
			// that far) the close frame.
			timeout, err := time.ParseDuration(arg)
			if err != nil || c == nil {
				return fmt.Errorf("read %q before join, or without a timeout", arg)
			}
			c.conn.SetReadDeadline(time.Now().Add(timeout))
			frames, code, errText := 0, 0, "-"
			var nbytes int64
			for {
				p, err := c.read()
				if err != nil {
					var ce closeError
					if errors.As(err, &ce) {
						code = ce.code
					} else {
						errText = strings.ReplaceAll(err.Error(), " ", "_")
					}
					break
				}
				frames++
				nbytes += int64(len(p))
			}
			fmt.Fprintf(stdout, "result frames=%d bytes=%d close=%d err=%s\n", frames, nbytes, code, errText)
		}
	}
	return in.Err()
}
