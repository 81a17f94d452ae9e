package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// harness holds the settings of one comparison run; static after
// parseFlags and prepare.
type harness struct {
	servers          []string
	curve            []int
	acceptConns      int
	idleTime         time.Duration
	curveIdle        time.Duration
	cpuWindow        time.Duration
	fanoutListeners  []int
	fanoutRate       float64
	fanoutDuration   time.Duration
	changers         int
	baselineRamp     int
	peerFanoutMax    int
	leaveConns       int
	leaveDuration    time.Duration
	quick            bool
	noCentrifugo     bool
	noPin            bool
	out              string
	binDir           string
	loadBin          string
	centrifugoBin    string
	centrifugoConfig string

	pin     bool
	skipped map[string]string // server → why it does not run
	log     io.Writer
}

func parseFlags(args []string, stderr io.Writer) (*harness, error) {
	h := &harness{skipped: map[string]string{}}
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	servers := fs.String("servers", strings.Join(allServers, ","), "comma-separated `servers` to run, in order")
	curve := fs.String("conns-curve", "1000,5000,10000,15000,19000", "idle connection `counts` of the RSS curve")
	fs.IntVar(&h.acceptConns, "accept-conns", 15000, "the idle `point` idled -idle and reported with CPU and connect rate")
	fs.DurationVar(&h.idleTime, "idle", 60*time.Second, "idle period at -accept-conns after ready")
	fs.DurationVar(&h.curveIdle, "curve-idle", 20*time.Second, "idle period at the other points of the curve")
	fs.DurationVar(&h.cpuWindow, "cpu-window", 40*time.Second, "idle CPU is measured over the last `window` of the idle period")
	fanout := fs.String("fanout", "5000,10000", "listener `counts` of the fan-out runs (empty: none)")
	fs.Float64Var(&h.fanoutRate, "fanout-rate", 100, "status `changes` per second in a fan-out run")
	fs.DurationVar(&h.fanoutDuration, "fanout-duration", 20*time.Second, "length of the changes in a fan-out run")
	fs.IntVar(&h.changers, "changers", 10, "members making the fan-out changes, round robin")
	fs.IntVar(&h.baselineRamp, "baseline-ramp", 0, "`connections` a second while the baseline's fan-out room fills (it broadcasts every join to every member: L²/2 frames, and drops a connection with more than its -send-buffer queued); 0: as fast as presence-load goes, like the other servers")
	fs.IntVar(&h.peerFanoutMax, "peer-fanout-max", 5000, "largest fan-out room run for the baseline and Centrifugo: both send every join to every member, so filling a room of L costs L²/2 frames (50 M at 10,000, over 10 minutes here); 0: no limit")
	fs.IntVar(&h.leaveConns, "leave-conns", 1000, "connections of the leave run, 10 per room (0: no leave run)")
	fs.DurationVar(&h.leaveDuration, "leave-duration", 20*time.Second, "length of the leave run (one cut a second)")
	fs.BoolVar(&h.quick, "quick", false, "smoke run: small N, short periods (flags given explicitly win)")
	fs.BoolVar(&h.noCentrifugo, "no-centrifugo", false, "skip Centrifugo")
	fs.BoolVar(&h.noPin, "no-pin", false, "do not pin the server and the load to CPUs with taskset")
	fs.StringVar(&h.out, "out", "", "output `directory` (default .cache/bench-compare/<UTC date-time>)")
	fs.StringVar(&h.binDir, "bin-dir", "bin", "`directory` the servers are built into")
	fs.StringVar(&h.loadBin, "load-bin", "", "presence-load `binary` to use (default: build ./cmd/presence-load into -bin-dir)")
	fs.StringVar(&h.centrifugoBin, "centrifugo-bin", ".cache/tools/centrifugo-v6.9.1/centrifugo", "Centrifugo `binary` (make centrifugo installs it)")
	fs.StringVar(&h.centrifugoConfig, "centrifugo-config", "bench/centrifugo/config.json", "Centrifugo config `file`")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if h.quick {
		quick := map[string]string{
			"conns-curve": "200,1000", "accept-conns": "1000", "idle": "6s", "curve-idle": "3s",
			"fanout": "200,500", "fanout-duration": "5s", "leave-conns": "100", "leave-duration": "6s",
		}
		for name, v := range quick {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, err
				}
			}
		}
	}
	var err error
	if h.curve, err = parseInts(*curve); err != nil {
		return nil, fmt.Errorf("-conns-curve: %w", err)
	}
	if h.fanoutListeners, err = parseInts(*fanout); err != nil {
		return nil, fmt.Errorf("-fanout: %w", err)
	}
	for s := range strings.SplitSeq(*servers, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(allServers, s) {
			return nil, fmt.Errorf("-servers: unknown server %q (known: %s)", s, strings.Join(allServers, ", "))
		}
		h.servers = append(h.servers, s)
	}
	if len(h.servers) == 0 {
		return nil, fmt.Errorf("-servers: none")
	}
	if h.out == "" {
		h.out = filepath.Join(".cache", "bench-compare", time.Now().UTC().Format("20060102T150405Z"))
	}
	return h, nil
}

// parseInts parses "1000,5000"; "" is no numbers.
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func (h *harness) bin(name string) string { return filepath.Join(h.binDir, name) }

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "compare: "+format+"\n", args...)
}

// prepare builds the binaries, finds Centrifugo and decides on pinning.
func (h *harness) prepare(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(h.out, "logs"), 0o755); err != nil {
		return err
	}
	goCmd := cmpOr(os.Getenv("GO"), "go")
	builds := [][2]string{{"presenced", "./cmd/presenced"}, {"baseline", "./bench/baseline"}}
	if h.loadBin == "" {
		builds = append(builds, [2]string{"presence-load", "./cmd/presence-load"})
		h.loadBin = h.bin("presence-load")
	}
	for _, b := range builds {
		h.logf("building %s", h.bin(b[0]))
		cmd := exec.CommandContext(ctx, goCmd, "build", "-o", h.bin(b[0]), b[1])
		cmd.Stdout, cmd.Stderr = h.log, h.log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", b[1], err)
		}
	}
	if slices.Contains(h.servers, centrifugoName) {
		h.findCentrifugo(ctx)
	}
	_, err := exec.LookPath("taskset")
	switch {
	case h.noPin:
		h.logf("pinning: off (-no-pin): server and load share the CPUs")
	case err != nil:
		h.logf("pinning: off: taskset not found: server and load share the CPUs")
	case runtime.NumCPU() < 2:
		h.logf("pinning: off: %d CPU: server and load share it", runtime.NumCPU())
	default:
		h.pin = true
		h.logf("pinning: each server on CPU 0 (taskset -c 0), presence-load on CPU 1 (taskset -c 1)")
	}
	return nil
}

// findCentrifugo installs Centrifugo with make centrifugo when missing,
// and records why it is skipped when it cannot run.
func (h *harness) findCentrifugo(ctx context.Context) {
	if h.noCentrifugo {
		h.skipped[centrifugoName] = "-no-centrifugo"
		h.logf("centrifugo: skipped (-no-centrifugo)")
		return
	}
	if _, err := os.Stat(h.centrifugoBin); err != nil {
		h.logf("centrifugo: %s absent: make centrifugo", h.centrifugoBin)
		cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "centrifugo")
		cmd.Stdout, cmd.Stderr = h.log, h.log
		if err := cmd.Run(); err != nil {
			h.logf("centrifugo: make centrifugo: %v", err)
		}
	}
	if _, err := os.Stat(h.centrifugoBin); err != nil {
		h.skipped[centrifugoName] = "binary " + h.centrifugoBin + " absent (make centrifugo failed)"
	} else if _, err := os.Stat(h.centrifugoConfig); err != nil {
		h.skipped[centrifugoName] = "config " + h.centrifugoConfig + " absent"
	}
	if why := h.skipped[centrifugoName]; why != "" {
		h.logf("centrifugo: SKIPPED: %s", why)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// results is the raw JSON of a run (results.json).
type results struct {
	Started     string            `json:"started"`
	Commit      string            `json:"commit"`
	Go          string            `json:"go"`
	Kernel      string            `json:"kernel"`
	CPUs        int               `json:"cpus"`
	Pinned      bool              `json:"pinned"`
	Quick       bool              `json:"quick"`
	Servers     []string          `json:"servers"`
	Reference   string            `json:"reference"`
	AcceptConns int               `json:"accept_conns"`
	IdleS       float64           `json:"idle_s"`
	CurveIdleS  float64           `json:"curve_idle_s"`
	Skipped     map[string]string `json:"skipped,omitempty"`
	Runs        []measurement     `json:"runs"`
}

func (h *harness) resultsPath() string { return filepath.Join(h.out, "results.json") }

// runAll runs every measurement of every server in turn, writing
// results.json after each.
func (h *harness) runAll(ctx context.Context) (*results, error) {
	res := &results{
		Started: time.Now().UTC().Format(time.RFC3339), Commit: gitCommit(), Go: runtime.Version(),
		Kernel: kernel(), CPUs: runtime.NumCPU(), Pinned: h.pin, Quick: h.quick,
		Reference: presencedEpoll, AcceptConns: h.acceptConns,
		IdleS: h.idleTime.Seconds(), CurveIdleS: h.curveIdle.Seconds(), Skipped: h.skipped,
	}
	for _, s := range h.servers {
		if h.skipped[s] == "" {
			res.Servers = append(res.Servers, s)
		}
	}
	record := func(r measurement) error {
		res.Runs = append(res.Runs, r)
		status := "ok"
		if r.Error != "" {
			status = "ERROR " + r.Error
		}
		h.logf("%s %s %d: %s", r.Server, r.Kind, r.Conns, status)
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(h.resultsPath(), b, 0o644)
	}
	for _, s := range res.Servers {
		for _, n := range h.curve {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			idle := h.curveIdle
			if n == h.acceptConns {
				idle = h.idleTime
			}
			h.logf("%s idle %d conns, %v idle", s, n, idle)
			if err := record(h.idle(ctx, s, n, idle)); err != nil {
				return res, err
			}
		}
		for _, l := range h.fanoutListeners {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if h.peerFanoutMax > 0 && l > h.peerFanoutMax && (s == baselineName || s == centrifugoName) {
				h.logf("%s fanout %d listeners: skipped (-peer-fanout-max %d: filling the room costs %d join frames)", s, l, h.peerFanoutMax, l*l/2)
				continue
			}
			h.logf("%s fanout %d listeners, %g changes/s for %v", s, l, h.fanoutRate, h.fanoutDuration)
			if err := record(h.fanout(ctx, s, l)); err != nil {
				return res, err
			}
		}
		if h.leaveConns > 0 && ctx.Err() == nil {
			h.logf("%s leave %d conns for %v", s, h.leaveConns, h.leaveDuration)
			if err := record(h.leave(ctx, s)); err != nil {
				return res, err
			}
		}
	}
	return res, ctx.Err()
}

func (h *harness) writeTable(tbl string) error {
	return os.WriteFile(filepath.Join(h.out, "table.md"), []byte(tbl), 0o644)
}

// header says what the table is and how it was made.
func (h *harness) header(res *results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "bench-compare %s, commit %s, %s, %d CPUs, kernel %s", res.Started, res.Commit, res.Go, res.CPUs, res.Kernel)
	if res.Quick {
		b.WriteString(", QUICK (smoke run, small N)")
	}
	if res.Pinned {
		b.WriteString("\nserver pinned to CPU 0 (taskset -c 0), presence-load to CPU 1 (taskset -c 1)")
	} else {
		b.WriteString("\nnot pinned: server and load share the CPUs")
	}
	fmt.Fprintf(&b, "\nidle %v at %d conns, %v at the other points; ratios: value / %s's\n", h.idleTime, h.acceptConns, h.curveIdle, presencedEpoll)
	for s, why := range res.Skipped {
		fmt.Fprintf(&b, "%s skipped: %s\n", s, why)
	}
	return b.String()
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
