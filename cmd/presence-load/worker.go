package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// worker runs one process's share of the connections: global indices g
// with g % procs == index (members and listeners first, then changers).
type worker struct {
	cfg     *config // static
	index   int     // static
	urls    []wsURL // static
	clients []*client
	sc      *scenario
	stderr  io.Writer

	inflight chan struct{} // -ramp 0: at most maxInflight sessions opening
	rampNext atomic.Int64  // -ramp: the next opening's slot, unix ns

	settled  atomic.Int64
	ready    chan struct{} // closed once every client joined or gave up
	measure  atomic.Bool   // the measured phase began (t0 is set)
	stop     atomic.Bool
	t0       int64 // unix ns; written before measure is set
	errShown atomic.Int64

	live        liveCounters
	latency     hist
	sendLag     hist         // changers' changes: write done − scheduled time
	joinEvents  atomic.Int64 // join events received (any phase): a quiet room has filled
	firstDial   atomic.Int64 // unix ns
	lastConnect atomic.Int64 // unix ns: the last first-time welcome
}

const (
	maxInflight = 64 // sessions opening at once per process
	maxErrShown = 5  // errors printed per process; the rest are counted
)

func newWorker(cfg *config, index int, stderr io.Writer) (*worker, error) {
	mk, err := protocolFor(cfg.target)
	if err != nil {
		return nil, err
	}
	w := &worker{cfg: cfg, index: index, stderr: stderr, ready: make(chan struct{}),
		inflight: make(chan struct{}, maxInflight)}
	for _, u := range cfg.urls {
		wu, err := parseWSURL(u)
		if err != nil {
			return nil, err
		}
		w.urls = append(w.urls, wu)
	}
	w.sc = newScenario(w)
	total := cfg.conns + w.sc.changers
	for g := index; g < total; g += cfg.procs {
		c := &client{w: w, g: g, user: userName(cfg, g), status: "online", url: g % len(w.urls), proto: mk()}
		if g < cfg.conns {
			c.room = "r" + strconv.Itoa(g%cfg.rooms)
		} else {
			c.room = "r" + strconv.Itoa((g-cfg.conns)%cfg.rooms)
		}
		c.onEv = c.onEvent
		c.inRoom.Store(true)
		w.sc.initView(c)
		w.clients = append(w.clients, c)
	}
	if len(w.clients) == 0 {
		close(w.ready)
	}
	return w, nil
}

// owned returns the client of global index g when this process runs it.
func (w *worker) owned(g int) *client {
	if g%w.cfg.procs != w.index {
		return nil
	}
	return w.clients[g/w.cfg.procs]
}

func (w *worker) measuring() bool { return w.measure.Load() }
func (w *worker) stopping() bool  { return w.stop.Load() }

// admit waits for the right to open a session: a slot among maxInflight,
// and with -ramp the next slot of this process's share of the rate.
func (w *worker) admit(ctx context.Context) bool {
	if ramp := w.cfg.ramp; ramp > 0 {
		period := int64(time.Second) * int64(w.cfg.procs) / int64(ramp)
		now := time.Now().UnixNano()
		var at int64
		for {
			next := w.rampNext.Load()
			at = max(next, now)
			if w.rampNext.CompareAndSwap(next, at+period) {
				break
			}
		}
		if !sleepCtx(ctx, time.Duration(at-now)) {
			return false
		}
	}
	select {
	case w.inflight <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (w *worker) release() { <-w.inflight }

// settle records that a client joined for the first time or gave up.
func (w *worker) settle() {
	if w.settled.Add(1) == int64(len(w.clients)) {
		close(w.ready)
	}
}

// fail counts an error and prints the first few.
func (w *worker) fail(c *client, what string, err error) {
	w.live.errors.Add(1)
	if w.errShown.Add(1) <= maxErrShown {
		hint := ""
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			hint = " (out of local ports toward this server: add -source addresses)"
		}
		fmt.Fprintf(w.stderr, "presence-load: %s: %s: %v%s\n", c.user, what, err, hint)
	}
}

// source is the source address of connection g (invalid: any).
func (w *worker) source(g int) netip.Addr {
	if len(w.cfg.sources) == 0 {
		return netip.Addr{}
	}
	return w.cfg.sources[g%len(w.cfg.sources)]
}

// token is the hello's token for user: -token, or an HS256 JWT minted with
// -jwt-secret (sub user, exp in an hour), or none.
func (w *worker) token(user string) (string, error) {
	switch {
	case w.cfg.token != "":
		return w.cfg.token, nil
	case w.cfg.jwtSecret == "":
		return "", nil
	}
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body := enc.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"exp":%d}`, user, time.Now().Add(time.Hour).Unix()))
	mac := hmac.New(sha256.New, []byte(w.cfg.jwtSecret))
	mac.Write([]byte(head + "." + body))
	return head + "." + body + "." + enc.EncodeToString(mac.Sum(nil)), nil
}

// run opens every connection, reports ready, waits for the start time on
// start (closed: stop), runs the scenario until t0+duration and the
// settle time, and reports the final counts. emit is called from run and
// from its progress goroutine, never at once.
func (w *worker) run(ctx context.Context, start <-chan int64, emit func(report)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var emitMu sync.Mutex
	send := func(r report) {
		emitMu.Lock()
		defer emitMu.Unlock()
		r.Proc = w.index
		emit(r)
	}
	var clients, progress sync.WaitGroup
	for _, c := range w.clients {
		clients.Go(func() { c.run(ctx) })
	}
	progressCtx, stopProgress := context.WithCancel(ctx)
	progress.Go(func() { w.progress(progressCtx, send) })

	select {
	case <-w.ready:
		w.sc.awaitViews(ctx)
		send(report{Type: "ready", counters: w.live.load()})
	case <-ctx.Done():
	}
	select {
	case t0, ok := <-start:
		if ok {
			w.t0 = t0
			if sleepCtx(ctx, time.Until(time.Unix(0, t0))) {
				w.measure.Store(true)
				w.sc.drive(ctx)
				sleepCtx(ctx, time.Until(time.Unix(0, t0).Add(w.cfg.duration+w.cfg.settle)))
			}
		}
	case <-ctx.Done():
	}
	stopProgress()
	progress.Wait()
	w.stop.Store(true)
	for _, c := range w.clients {
		// An RST, not a FIN: a socket closed first by this side would sit
		// in TIME_WAIT for a minute, holding a local port the next run
		// needs.
		c.closeWS(true)
	}
	cancel()
	clients.Wait()
	send(w.final())
}

// progress reports the counters twice every -progress, so that the
// parent's progress line is at most half a period old.
func (w *worker) progress(ctx context.Context, send func(report)) {
	var prev [histBuckets]uint64
	t := time.NewTicker(w.cfg.progress / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			send(report{Type: "progress", counters: w.live.load(), Hist: w.latency.snapshot(&prev)})
		case <-ctx.Done():
			return
		}
	}
}

// final is the last report: everything since the start.
func (w *worker) final() report {
	r := report{
		Type:          "final",
		counters:      w.live.load(),
		Hist:          w.latency.snapshot(nil),
		SendLag:       w.sendLag.snapshot(nil),
		Stale:         w.sc.stale(),
		FirstDialNs:   w.firstDial.Load(),
		LastConnectNs: w.lastConnect.Load(),
		FirstLossNs:   w.sc.firstLoss.Load(),
		ConvergedNs:   w.sc.converged.Load(),
	}
	if w.sc.disturbed.Load() && w.sc.viewsTrue.Load() != int64(len(w.clients)) {
		r.ConvergedNs = -1 // not converged at the end
	}
	for j := range w.sc.nCuts {
		r.Cuts = append(r.Cuts, cutReport{CutNs: w.sc.cutAt[j].Load(), SeenNs: w.sc.seenMax[j].Load(), SeenN: w.sc.seenN[j].Load()})
	}
	return r
}
