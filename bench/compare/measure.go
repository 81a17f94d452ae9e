package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Measurement kinds.
const (
	kindIdle   = "idle"
	kindFanout = "fanout"
	kindLeave  = "leave"
)

// measurement is one measurement: a fresh server process, one presence-load run,
// the server's figures read from /proc. Fields a kind does not measure
// are 0.
type measurement struct {
	Server string `json:"server"`
	Kind   string `json:"kind"`
	Conns  int    `json:"conns"` // idle and leave: connections; fanout: listeners
	Rooms  int    `json:"rooms"`
	Error  string `json:"error,omitempty"` // why the figures are missing or doubtful

	// idle
	IdleS          float64 `json:"idle_s,omitempty"`
	RSSBefore      int64   `json:"rss_before,omitempty"` // bytes, the fresh server
	RSSAfter       int64   `json:"rss_after,omitempty"`  // bytes, at the end of the idle period
	RSSPerConn     float64 `json:"rss_per_conn,omitempty"`
	CPUWindowS     float64 `json:"cpu_window_s,omitempty"`
	CPUS           float64 `json:"cpu_s,omitempty"` // server CPU seconds in the window
	IdleCPUUsConnS float64 `json:"idle_cpu_us_per_conn_s,omitempty"`
	ConnectPerS    float64 `json:"connect_per_s,omitempty"`

	// fanout
	Rate              float64 `json:"rate,omitempty"` // changes per second
	Ramp              int     `json:"ramp,omitempty"` // connections per second while the room filled (0: unlimited)
	DurationS         float64 `json:"duration_s,omitempty"`
	CPUUsPerChangeL   float64 `json:"cpu_us_per_change_listener,omitempty"`
	DeliveriesPerCPUS float64 `json:"deliveries_per_cpu_s,omitempty"`
	P50Ms             float64 `json:"p50_ms,omitempty"`
	P99Ms             float64 `json:"p99_ms,omitempty"`
	SendLagP99Ms      float64 `json:"send_lag_p99_ms,omitempty"` // the load's lateness sending the changes
	Stale             int64   `json:"stale,omitempty"`
	Errors            int64   `json:"errors,omitempty"`
	Sent              int64   `json:"sent,omitempty"` // changes sent (nominal: rate × duration)

	// leave
	LeaveP50Ms float64 `json:"leave_p50_ms,omitempty"`
	LeaveP99Ms float64 `json:"leave_p99_ms,omitempty"`

	Summary json.RawMessage `json:"summary,omitempty"` // presence-load's, as printed
}

// summary is what the harness reads of presence-load's summary.
type summary struct {
	Errors      int64   `json:"errors"`
	Connected   int     `json:"connected"`
	ConnectPerS float64 `json:"connect_per_s"`
	Deliveries  int64   `json:"deliveries"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Stale       int64   `json:"stale"`
	LeaveP50Ms  float64 `json:"leave_p50_ms"`
	LeaveP99Ms  float64 `json:"leave_p99_ms"`
	Sent        int64   `json:"sent"` // fanout: changes sent
	SendLagP99  float64 `json:"send_lag_p99_ms"`
}

// readyMargin is how much longer than the harness presence-load waits
// for ready (-ready-timeout): the harness's timeout decides.
const readyMargin = 30 * time.Second

// loadArgs are the arguments every presence-load run gets for server s;
// ready is how long the harness waits for ready.
func (h *harness) loadArgs(s *server, scenario string, conns, rooms int, ready time.Duration) []string {
	args := []string{"-scenario", scenario, "-url", s.url, "-conns", strconv.Itoa(conns), "-rooms", strconv.Itoa(rooms),
		"-progress", "1s", "-ready-timeout", (ready + readyMargin).String()}
	if s.name == centrifugoName {
		args = append(args, "-target", "centrifugo", "-jwt-secret", jwtSecret)
	}
	if conns > 15000 { // past one process's 20,000 open files with margin, and one address's ports
		args = append(args, "-procs", "2", "-source", "127.0.0.10,127.0.0.11")
	}
	return args
}

// readyTimeout allows 50 connections a second plus a minute.
func readyTimeout(conns int) time.Duration {
	return time.Minute + time.Duration(conns)*20*time.Millisecond
}

// readyErrors is how many errors before ready fail a measurement early.
func readyErrors(conns int) int64 { return int64(max(100, conns/10)) }

// idle measures the memory and CPU of n idle joined connections, 15 per
// room, held for idle after ready.
func (h *harness) idle(ctx context.Context, name string, n int, idle time.Duration) (r measurement) {
	r = measurement{Server: name, Kind: kindIdle, Conns: n, Rooms: max(1, n/15), IdleS: idle.Seconds()}
	label := fmt.Sprintf("%s-idle-%d", name, n)
	s, err := h.startServer(name, label, 0)
	if err != nil {
		return r.fail(err)
	}
	defer s.stop()
	sleep(ctx, time.Second)
	if r.RSSBefore, err = readRSS(s.pid()); err != nil {
		return r.fail(err)
	}
	// -duration counts from ready: the load outlives the measurement by 10 s.
	args := append(h.loadArgs(s, "idle", n, r.Rooms, readyTimeout(n)), "-duration", (idle + 10*time.Second).String())
	l, err := h.startLoad(label, args...)
	if err != nil {
		return r.fail(err)
	}
	if err := l.waitReady(ctx, readyTimeout(n), readyErrors(n)); err != nil {
		r.fail(err)
	} else {
		window := min(idle, h.cpuWindow)
		sleep(ctx, idle-window)
		cpu0, err0 := readCPU(s.pid())
		sleep(ctx, window)
		cpu1, err1 := readCPU(s.pid())
		rss, err2 := readRSS(s.pid())
		if err := firstErr(err0, err1, err2, s.alive(), l.running(), ctx.Err()); err != nil {
			r.fail(err)
		} else {
			r.RSSAfter = rss
			r.RSSPerConn = float64(rss-r.RSSBefore) / float64(n)
			r.CPUWindowS = window.Seconds()
			r.CPUS = (cpu1 - cpu0).Seconds()
			r.IdleCPUUsConnS = r.CPUS * 1e6 / float64(n) / window.Seconds()
		}
	}
	r.takeSummary(l.finish(h.finishWait(ctx, time.Minute)))
	return r
}

// finishWait is how long to let a load end on its own: wait, or nothing
// once ctx is done (compare is stopping).
func (h *harness) finishWait(ctx context.Context, wait time.Duration) time.Duration {
	if ctx.Err() != nil {
		return 0
	}
	return wait
}

// fanout measures listeners in one room receiving rate changes a second
// made by h.changers members, for h.fanoutDuration. The server's CPU is
// read at ready and at ready + duration + settle (2 s): what it spent to
// deliver them.
func (h *harness) fanout(ctx context.Context, name string, listeners int) (r measurement) {
	d := h.fanoutDuration
	r = measurement{Server: name, Kind: kindFanout, Conns: listeners, Rooms: 1, Rate: h.fanoutRate, DurationS: d.Seconds()}
	label := fmt.Sprintf("%s-fanout-%d", name, listeners)
	// presenced sends member state in diffs only below -list-limit.
	s, err := h.startServer(name, label, 2*listeners+100)
	if err != nil {
		return r.fail(err)
	}
	defer s.stop()
	args, timeout := h.fanoutArgs(s, listeners)
	if name == baselineName {
		r.Ramp = h.baselineRamp
	}
	l, err := h.startLoad(label, args...)
	if err != nil {
		return r.fail(err)
	}
	if err := l.waitReady(ctx, timeout, readyErrors(listeners)); err != nil {
		r.fail(err)
		_, _ = l.finish(0)
		return r
	}
	cpu0, err0 := readCPU(s.pid())
	sleep(ctx, d+2*time.Second)
	cpu1, err1 := readCPU(s.pid())
	if err := firstErr(err0, err1, s.alive(), ctx.Err()); err != nil {
		r.fail(err)
	} else {
		r.CPUS = (cpu1 - cpu0).Seconds()
		r.CPUWindowS = (d + 2*time.Second).Seconds()
	}
	r.takeSummary(l.finish(h.finishWait(ctx, time.Minute)))
	return r
}

// fanoutArgs are presence-load's arguments for a fan-out run of listeners
// against s, and how long to wait for ready.
func (h *harness) fanoutArgs(s *server, listeners int) ([]string, time.Duration) {
	timeout := readyTimeout(listeners)
	if s.name == baselineName || s.name == centrifugoName {
		// L²/2 join frames to fill the room, at some 50,000 a second.
		timeout += time.Duration(listeners*listeners/2/50000) * time.Second
	}
	ramp := s.name == baselineName && h.baselineRamp > 0
	if ramp {
		// Each join is a frame to every member: the room costs L²/2 frames to fill.
		timeout = 2*time.Minute + time.Duration(listeners)*time.Second/time.Duration(h.baselineRamp)
	}
	args := append(h.loadArgs(s, "fanout", listeners, 1, timeout),
		"-rate", strconv.FormatFloat(h.fanoutRate, 'f', -1, 64), "-changers", strconv.Itoa(h.changers),
		"-duration", h.fanoutDuration.String(), "-settle", "2s", "-max-errors", strconv.Itoa(listeners))
	if ramp {
		args = append(args, "-ramp", strconv.Itoa(h.baselineRamp))
	}
	return args, timeout
}

// leave measures how long the members of a room take to learn that a
// member whose connection was cut has gone.
func (h *harness) leave(ctx context.Context, name string) (r measurement) {
	r = measurement{Server: name, Kind: kindLeave, Conns: h.leaveConns, Rooms: max(1, h.leaveConns/10), DurationS: h.leaveDuration.Seconds()}
	label := name + "-leave"
	s, err := h.startServer(name, label, 0)
	if err != nil {
		return r.fail(err)
	}
	defer s.stop()
	// The settle outlasts the servers' leave grace (5 s) and the last cut's leave.
	args := append(h.loadArgs(s, "leave", r.Conns, r.Rooms, readyTimeout(r.Conns)), "-duration", h.leaveDuration.String(), "-settle", "8s")
	l, err := h.startLoad(label, args...)
	if err != nil {
		return r.fail(err)
	}
	if err := l.waitReady(ctx, readyTimeout(r.Conns), readyErrors(r.Conns)); err != nil {
		r.fail(err)
	}
	r.takeSummary(l.finish(h.finishWait(ctx, h.leaveDuration+time.Minute)))
	return r
}

// minSentShare is the share of the nominal changes (rate × duration) a
// fan-out run must send to count.
const minSentShare = 0.9

// takeSummary records presence-load's summary and the figures read from it.
func (r *measurement) takeSummary(raw json.RawMessage, err error) {
	if err != nil {
		r.fail(err)
	}
	if raw == nil {
		return
	}
	r.Summary = raw
	var s summary
	if err := json.Unmarshal(raw, &s); err != nil {
		r.fail(fmt.Errorf("summary: %w", err))
		return
	}
	r.Errors, r.ConnectPerS = s.Errors, s.ConnectPerS
	switch r.Kind {
	case kindFanout:
		r.P50Ms, r.P99Ms, r.Stale, r.Sent, r.SendLagP99Ms = s.P50Ms, s.P99Ms, s.Stale, s.Sent, s.SendLagP99
		if r.CPUS > 0 {
			r.DeliveriesPerCPUS = float64(s.Deliveries) / r.CPUS
		}
		// CPU per change per listener counts the changes actually sent.
		if r.CPUS > 0 && s.Sent > 0 {
			r.CPUUsPerChangeL = r.CPUS * 1e6 / float64(s.Sent) / float64(r.Conns)
		}
		if nominal := r.Rate * r.DurationS; float64(s.Sent) < minSentShare*nominal {
			r.fail(fmt.Errorf("presence-load sent %d changes of %.0f (under %.0f%%): the driver fell behind or changers had no session",
				s.Sent, nominal, minSentShare*100))
		}
	case kindLeave:
		r.LeaveP50Ms, r.LeaveP99Ms = s.LeaveP50Ms, s.LeaveP99Ms
	}
	if s.Errors > 0 {
		r.fail(fmt.Errorf("presence-load counted %d errors", s.Errors))
	}
}

// fail records err (after any earlier one) and returns r.
func (r *measurement) fail(err error) measurement {
	if r.Error == "" {
		r.Error = err.Error()
	} else {
		r.Error += "; " + err.Error()
	}
	return *r
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// sleep waits for d or ctx.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
