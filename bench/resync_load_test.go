package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// modeResync is the load side of BenchmarkResyncLoopLatency:
//
//	presence-resync  open envConns connections from envLocalIP as users
//	                 "s<i>" (i counted from envFirst), each joined to envRoom
//	                 with {"status":"online"}, paced at envJoinRate joins a
//	                 second; print "ready N". Every connection reads
//	                 everything it receives (answering pings) and classifies
//	                 it by its first bytes, without decoding the JSON. "go":
//	                 zero the counts and start counting (answer "going");
//	                 "stop": stop counting and answer "result k=v ..." (see
//	                 resyncCounts); the connections are kept until stdin
//	                 closes.
const modeResync = "presence-resync"

// resyncConn is one subscriber of the load process and what it counted.
// The counters are written by its reader goroutine and read by the command
// loop of loadResync.
type resyncConn struct {
	c         *wsClient
	syncs     atomic.Int64 // syncs of the room, while counting
	syncBytes atomic.Int64 // their payload bytes
	diffs     atomic.Int64 // diffs of the room, while counting
	other     atomic.Int64 // anything else but pings, while counting
	errs      atomic.Int64 // err messages and unparsable messages, always
	closed    atomic.Bool  // the server closed the connection
}

// resyncCounts is the result line of a presence-resync process: sums over
// its connections, min and max of syncs per connection.
type resyncCounts struct {
	conns     int
	syncs     int64
	syncBytes int64
	minSyncs  int64
	maxSyncs  int64
	diffs     int64
	other     int64
	errs      int64
	closed    int
}

// loadResync: see modeResync.
func loadResync(cfg fanoutConfig, in *bufio.Scanner, stdout io.Writer) error {
	var counting atomic.Bool
	conns := make([]*resyncConn, cfg.n)
	defer func() {
		for _, rc := range conns {
			if rc != nil {
				rc.c.conn.Close()
			}
		}
	}()
	interval := time.Second / time.Duration(max(cfg.joinRate, 1))
	start := time.Now()
	var started atomic.Int64
	err := openAll(cfg.n, cfg.inflight, func(i int) error {
		// Paced: a burst of joins makes large diffs that every member
		// already in must read (and, over the sync budget, resyncs).
		k := started.Add(1) - 1
		if wait := time.Until(start.Add(time.Duration(k) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		c, err := dialWS(cfg.addr, cfg.local, sockOpts{})
		if err != nil {
			return err
		}
		rc := &resyncConn{c: c}
		conns[i] = rc
		if err := c.hello("s" + strconv.Itoa(cfg.first+i)); err != nil {
			return err
		}
		if _, err := c.join(cfg.room, &wire.State{Status: "online"}); err != nil {
			return err
		}
		go rc.run(&counting) // ends when the connection does
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "ready %d\n", cfg.n); err != nil {
		return err
	}
	for in.Scan() {
		switch in.Text() {
		case "go":
			for _, rc := range conns {
				rc.syncs.Store(0)
				rc.syncBytes.Store(0)
				rc.diffs.Store(0)
				rc.other.Store(0)
			}
			counting.Store(true)
			fmt.Fprintln(stdout, "going")
		case "stop":
			counting.Store(false)
			s := resyncCounts{minSyncs: -1}
			for _, rc := range conns {
				n := rc.syncs.Load()
				s.conns++
				s.syncs += n
				s.syncBytes += rc.syncBytes.Load()
				s.maxSyncs = max(s.maxSyncs, n)
				if s.minSyncs < 0 || n < s.minSyncs {
					s.minSyncs = n
				}
				s.diffs += rc.diffs.Load()
				s.other += rc.other.Load()
				s.errs += rc.errs.Load()
				if rc.closed.Load() {
					s.closed++
				}
			}
			fmt.Fprintf(stdout, "result conns=%d syncs=%d sync_bytes=%d min_syncs=%d max_syncs=%d diffs=%d other=%d errs=%d closed=%d\n",
				s.conns, s.syncs, s.syncBytes, s.minSyncs, s.maxSyncs, s.diffs, s.other, s.errs, s.closed)
		}
	}
	return in.Err()
}

// run reads the connection until it ends.
func (rc *resyncConn) run(counting *atomic.Bool) {
	for {
		p, err := rc.c.read()
		if err != nil {
			if errors.As(err, new(closeError)) {
				rc.closed.Store(true)
			}
			return
		}
		switch {
		case bytes.HasPrefix(p, []byte(`{"t":"sync"`)):
			if counting.Load() {
				rc.syncs.Add(1)
				rc.syncBytes.Add(int64(len(p)))
			}
		case bytes.HasPrefix(p, []byte(`{"t":"diff"`)):
			if counting.Load() {
				rc.diffs.Add(1)
			}
		case bytes.HasPrefix(p, []byte(`{"t":"ping"`)):
			if ts, ok := pingTS(p); ok {
				rc.c.pong(ts)
			}
		case bytes.HasPrefix(p, []byte(`{"t":"err"`)):
			rc.errs.Add(1)
		default:
			if counting.Load() {
				rc.other.Add(1)
			}
		}
	}
}

// parseResyncCounts reads a result line of loadResync.
func parseResyncCounts(words []string) (resyncCounts, error) {
	m := kv(words)
	var c resyncCounts
	for key, dst := range map[string]*int64{
		"syncs": &c.syncs, "sync_bytes": &c.syncBytes, "min_syncs": &c.minSyncs, "max_syncs": &c.maxSyncs,
		"diffs": &c.diffs, "other": &c.other, "errs": &c.errs,
	} {
		v, err := strconv.ParseInt(m[key], 10, 64)
		if err != nil {
			return c, fmt.Errorf("result %q: %s: %w", strings.Join(words, " "), key, err)
		}
		*dst = v
	}
	var err1, err2 error
	c.conns, err1 = strconv.Atoi(m["conns"])
	c.closed, err2 = strconv.Atoi(m["closed"])
	if err := errors.Join(err1, err2); err != nil {
		return c, fmt.Errorf("result %q: %w", strings.Join(words, " "), err)
	}
	return c, nil
}

// add sums o into c (min and max over processes).
func (c *resyncCounts) add(o resyncCounts) {
	if c.conns == 0 || o.minSyncs < c.minSyncs {
		c.minSyncs = o.minSyncs
	}
	c.conns += o.conns
	c.syncs += o.syncs
	c.syncBytes += o.syncBytes
	c.maxSyncs = max(c.maxSyncs, o.maxSyncs)
	c.diffs += o.diffs
	c.other += o.other
	c.errs += o.errs
	c.closed += o.closed
}

// resyncLoadConfig is the environment of a presence-resync process.
func resyncLoadConfig(getenv func(string) string, addr string, local netip.Addr) fanoutConfig {
	return fanoutConfig{
		addr:     addr,
		local:    local,
		first:    envInt(getenv, envFirst, 0),
		n:        envInt(getenv, envConns, 5000),
		room:     getenv(envRoom),
		joinRate: envInt(getenv, envJoinRate, 1000),
		inflight: envInt(getenv, envInflight, 64),
	}
}
