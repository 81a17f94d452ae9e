package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os/exec"
	"slices"
	"sync"
	"time"
)

// summary is the JSON object printed on stdout at the end. Fields a
// scenario does not measure are 0.
type summary struct {
	Scenario       string   `json:"scenario"`
	Target         string   `json:"target"`
	URLs           []string `json:"urls"`
	Conns          int      `json:"conns"`
	Rooms          int      `json:"rooms"`
	Changers       int      `json:"changers"`
	Rate           float64  `json:"rate"`
	DurationS      float64  `json:"duration_s"`
	Procs          int      `json:"procs"`
	Errors         int64    `json:"errors"`
	Connected      int64    `json:"connected"`     // connections that said hello
	Joined         int64    `json:"joined"`        // connections that joined their room
	ConnectPerS    float64  `json:"connect_per_s"` // connected / (last first welcome - first dial)
	Joins          int64    `json:"joins"`         // joins completed (resumes and churn included)
	Deliveries     int64    `json:"deliveries"`    // presence events received in the measured phase
	DeliveriesPerS float64  `json:"deliveries_per_s"`
	Messages       int64    `json:"messages"` // messages received in the measured phase
	Sent           int64    `json:"sent"`     // scenario commands sent (sets, typing, joins, leaves)
	Latencies      uint64   `json:"latencies"`
	P50MS          float64  `json:"p50_ms"`
	P99MS          float64  `json:"p99_ms"`
	MaxMS          float64  `json:"max_ms"`
	SendLagP99MS   float64  `json:"send_lag_p99_ms"` // changers' changes: write done − scheduled time, p99
	Stale          int64    `json:"stale"`
	Partial        int64    `json:"partial"` // partial syncs: the room is over the server's list limit
	Cuts           int      `json:"cuts"`    // leave: cuts whose leave every other member saw
	LeaveP50MS     float64  `json:"leave_p50_ms"`
	LeaveP99MS     float64  `json:"leave_p99_ms"`
	ConvergeMS     float64  `json:"converge_ms"`
	Reconnects     int64    `json:"reconnects"`
	Resumes        int64    `json:"resumes"`
}

func writeSummary(w io.Writer, s summary) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// runParent runs the workers, prints the ready and progress lines, runs
// -disrupt, and merges the final reports into the summary. It returns the
// summary with errNotReady when -ready-timeout passed before ready.
func runParent(ctx context.Context, cfg *config, stderr io.Writer) (summary, error) {
	reports := make(chan report, 16)
	procs, wait, err := startProcs(ctx, cfg, reports, stderr)
	if err != nil {
		return summary{}, err
	}
	a := aggregator{cfg: cfg, stderr: stderr, latest: make([]counters, len(procs)),
		finals: make([]*report, len(procs)), interval: histData{}, begin: time.Now()}
	a.prevAt = a.begin
	tick := time.NewTicker(cfg.progress)
	defer tick.Stop()
	var readyC <-chan time.Time
	if cfg.readyTO > 0 {
		readyTimer := time.NewTimer(cfg.readyTO)
		defer readyTimer.Stop()
		readyC = readyTimer.C
	}
	var (
		disruptC  <-chan time.Time
		disrupted = make(chan error, 1)
		disruptWG sync.WaitGroup
		stopped   bool
		stop      = func() {
			if !stopped {
				stopped = true
				for _, p := range procs {
					p.stop()
				}
			}
		}
		done     int
		errCount int64
		notReady bool // -ready-timeout passed first
	)
	for done < len(procs) {
		select {
		case r := <-reports:
			switch r.Type {
			case "progress":
				a.latest[r.Proc] = r.counters
				a.interval.merge(r.Hist)
			case "ready":
				a.latest[r.Proc] = r.counters
				if a.ready++; a.ready == len(procs) && !stopped {
					var joined int64
					for _, c := range a.latest {
						joined += c.Joined
					}
					fmt.Fprintf(stderr, "ready conns=%d\n", joined)
					a.t0 = time.Now().Add(100 * time.Millisecond).UnixNano()
					for _, p := range procs {
						p.start(a.t0)
					}
					if cfg.scenario == "reconnect" && (cfg.disrupt != "" || cfg.disruptFn != nil) {
						disruptC = time.After(time.Until(time.Unix(0, a.t0).Add(cfg.disruptAt)))
					}
				}
			case "final":
				a.finals[r.Proc] = &r
				done++
			case "exit":
				fmt.Fprintf(stderr, "presence-load: %s\n", r.Err)
				errCount++
				done++
			}
		case <-readyC:
			readyC = nil
			if a.ready < len(procs) && !stopped {
				notReady = true
				stop()
			}
		case <-tick.C:
			if !cfg.quiet {
				a.progressLine()
			}
		case <-disruptC:
			disruptC = nil
			a.disruptNs = time.Now().UnixNano()
			disruptWG.Go(func() { disrupted <- runDisrupt(ctx, cfg, stderr) })
		case err := <-disrupted:
			if err != nil {
				fmt.Fprintf(stderr, "presence-load: -disrupt: %v\n", err)
				errCount++
			}
		case <-ctx.Done():
			stop()
			ctx = context.Background() // keep collecting the finals
		}
	}
	stop()
	wait()
	disruptWG.Wait()
	select {
	case err := <-disrupted:
		if err != nil {
			fmt.Fprintf(stderr, "presence-load: -disrupt: %v\n", err)
			errCount++
		}
	default:
	}
	s := a.summary()
	s.Errors += errCount
	if notReady { // each connection that has not joined is an error
		total := int64(cfg.conns + cfg.changers)
		fmt.Fprintf(stderr, "presence-load: not ready after -ready-timeout %v: %d of %d connections have not joined\n",
			cfg.readyTO, total-s.Joined, total)
		s.Errors += total - s.Joined
		return s, errNotReady
	}
	return s, nil
}

// runDisrupt runs -disrupt with sh -c.
func runDisrupt(ctx context.Context, cfg *config, stderr io.Writer) error {
	if cfg.disruptFn != nil {
		return cfg.disruptFn()
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", cfg.disrupt)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	return cmd.Run()
}

// aggregator merges the workers' reports. Owned by runParent.
type aggregator struct {
	cfg       *config
	stderr    io.Writer
	latest    []counters // per worker, its last report
	finals    []*report  // per worker
	interval  histData   // latencies since the last progress line
	ready     int
	begin     time.Time
	t0        int64
	disruptNs int64
	prev      counters
	prevAt    time.Time
}

func (a *aggregator) progressLine() {
	var sum counters
	for _, c := range a.latest {
		sum.add(c)
	}
	now := time.Now()
	dt := now.Sub(a.prevAt).Seconds()
	fmt.Fprintf(a.stderr, "t=%.0fs conns=%d joins/s=%.0f deliveries/s=%.0f p50=%.1fms p99=%.1fms errors=%d\n",
		now.Sub(a.begin).Seconds(), sum.Open, float64(sum.Joins-a.prev.Joins)/dt,
		float64(sum.Deliveries-a.prev.Deliveries)/dt, a.interval.quantile(0.50), a.interval.quantile(0.99), sum.Errors)
	a.prev, a.prevAt = sum, now
	a.interval = histData{}
}

// summary merges the final reports.
func (a *aggregator) summary() summary {
	cfg := a.cfg
	s := summary{
		Scenario: cfg.scenario, Target: cfg.target, URLs: cfg.urls, Conns: cfg.conns, Rooms: cfg.rooms,
		Changers: cfg.changers, Rate: cfg.rate, DurationS: cfg.duration.Seconds(), Procs: cfg.procs,
	}
	var (
		sum                  counters
		h, lag               = histData{}, histData{}
		firstDial, lastConn  int64
		firstLoss, converged int64
		notConverged         bool
		cuts                 []cutReport
	)
	for _, r := range a.finals {
		if r == nil {
			continue
		}
		sum.add(r.counters)
		h.merge(r.Hist)
		lag.merge(r.SendLag)
		s.Stale += r.Stale
		if r.FirstDialNs != 0 && (firstDial == 0 || r.FirstDialNs < firstDial) {
			firstDial = r.FirstDialNs
		}
		lastConn = max(lastConn, r.LastConnectNs)
		if r.FirstLossNs != 0 && (firstLoss == 0 || r.FirstLossNs < firstLoss) {
			firstLoss = r.FirstLossNs
		}
		if r.ConvergedNs < 0 {
			notConverged = true
		}
		converged = max(converged, r.ConvergedNs)
		for j, c := range r.Cuts {
			if j >= len(cuts) {
				cuts = append(cuts, cutReport{})
			}
			cuts[j].CutNs = max(cuts[j].CutNs, c.CutNs)
			cuts[j].SeenNs = max(cuts[j].SeenNs, c.SeenNs)
			cuts[j].SeenN += c.SeenN
		}
	}
	s.Errors, s.Connected, s.Joined, s.Joins = sum.Errors, sum.Connected, sum.Joined, sum.Joins
	s.Deliveries, s.Messages, s.Sent = sum.Deliveries, sum.Messages, sum.Sent
	s.Reconnects, s.Resumes, s.Partial = sum.Reconnects, sum.Resumes, sum.Partial
	s.DeliveriesPerS = round(float64(sum.Deliveries) / cfg.duration.Seconds())
	if lastConn > firstDial && firstDial > 0 {
		s.ConnectPerS = round(float64(sum.Connected) / (float64(lastConn-firstDial) / 1e9))
	}
	s.Latencies = h.count()
	s.P50MS, s.P99MS, s.MaxMS = round(h.quantile(0.50)), round(h.quantile(0.99)), round(h.max())
	s.SendLagP99MS = round(lag.quantile(0.99))

	if cfg.scenario == "reconnect" && (a.disruptNs != 0 || firstLoss != 0) {
		from := a.disruptNs
		if from == 0 {
			from = firstLoss
		}
		switch {
		case notConverged:
			s.ConvergeMS = -1
		case converged > from:
			s.ConvergeMS = round(float64(converged-from) / 1e6)
		}
	}
	if cfg.scenario == "leave" {
		var lat []float64
		for j, c := range cuts {
			want := leaveObservers(cfg, j, len(cuts))
			switch {
			case want == 0 || c.CutNs == 0:
			case c.SeenN >= want:
				lat = append(lat, float64(c.SeenNs-c.CutNs)/1e6)
			default:
				s.Stale++
			}
		}
		slices.Sort(lat)
		s.Cuts = len(lat)
		s.LeaveP50MS, s.LeaveP99MS = round(quantileOf(lat, 0.50)), round(quantileOf(lat, 0.99))
	}
	return s
}

// leaveObservers is how many connections must see cut j: the members of
// its room that are never cut.
func leaveObservers(cfg *config, j, nCuts int) int64 {
	r := j % cfg.rooms
	var n int64
	for g := r; g < cfg.conns; g += cfg.rooms {
		if g >= nCuts {
			n++
		}
	}
	return n
}

// quantileOf returns the q quantile of sorted xs (nearest rank).
func quantileOf(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[max(0, int(math.Ceil(q*float64(len(xs))))-1)]
}

// round keeps three decimals.
func round(x float64) float64 { return math.Round(x*1000) / 1000 }
