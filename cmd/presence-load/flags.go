package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// config is the command line, checked and with the scenario's defaults
// filled in. Static once parsed.
type config struct {
	scenario  string
	target    string
	urls      []string
	conns     int
	rooms     int
	rate      float64
	duration  time.Duration
	changers  int
	disrupt   string
	disruptAt time.Duration
	procs     int
	sources   []netip.Addr
	ramp      int
	token     string
	jwtSecret string
	maxErrors int
	progress  time.Duration
	settle    time.Duration
	readyTO   time.Duration // -ready-timeout; 0: wait for ready forever
	quiet     bool
	child     int      // -child: this process is child number child of a parent (-1: not a child)
	args      []string // the command line, for the children

	// disruptFn replaces running -disrupt with sh -c (tests).
	disruptFn func() error
}

// usageError is a bad command line (exit status 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

const scenarioHelp = `Scenarios (conn i is user "u<i>" in room "r<i mod rooms>"; changers are users "c<k>"):
  idle       open -conns connections, each hello + join of its room, and hold them for -duration.
  churn      -rate joins and leaves per second in all, spread round robin over the connections,
             each leaving and re-joining its room; latency = command sent -> ack.
  fanout     -conns listeners in -rooms rooms (default 1); -changers more connections (changer k in
             room k mod rooms) set their status -rate times a second in all, round robin, with the
             scheduled send time in the meta ("ts"); latency = scheduled send -> seen by a listener,
             so a driver that falls behind shows in it; send_lag_p99_ms: how late the driver's writes
             of the changes finished after their scheduled time (p99). Deliveries count only the
             changers' status changes. Ready also waits until every listener has seen every member
             of its room (or a second passes without a join event): servers that push every join to
             every member have then delivered the room's fill, and the measured phase does not count
             it. stale counts the listeners that miss a changer's final status -settle after the
             end. presenced lists no member state for rooms over its -list-limit (default 1000): run
             it with a larger one.
  typing     like fanout, with typing on/off (at most 64 typers; presenced lists 10 at a time);
             deliveries are the typing transitions a listener sees; every typer stops at the end,
             and stale counts the listeners that still see someone typing.
  reconnect  every connection joined; at -disrupt-at runs -disrupt with sh -c (for example
             "kill -TERM <pid>" of one node); lost connections come back with backoff and jitter
             (after bye's retry_ms), resuming their room from their cursor. converge_ms: from the
             disruption (without -disrupt: the first loss) until every connection is back and every
             view equals the truth (-1: not by the end); stale counts the views that are not.
  cluster    fanout over several -url nodes (connection i on url i mod len(urls)); latency counts
             the changes that cross nodes.
  leave      -rate connections a second (default 1) are cut hard (SO_LINGER 0, then close: an RST);
             leave_p50_ms/leave_p99_ms: cut -> every other member of its room has seen it leave.
             presenced keeps a lost member for its -leave-grace (5 s): give -settle more than that.
`

func newFlagSet(cfg *config, urls, sources *string) *flag.FlagSet {
	fs := flag.NewFlagSet("presence-load", flag.ContinueOnError)
	fs.StringVar(&cfg.scenario, "scenario", "idle", "`name`: idle, churn, fanout, typing, reconnect, cluster or leave")
	fs.StringVar(&cfg.target, "target", "presenced", "wire `protocol` of the server: presenced (protocol v1) or centrifugo")
	fs.StringVar(urls, "url", "ws://127.0.0.1:8080/ws", "comma-separated WebSocket `URLs`; connection i uses url i mod their number")
	fs.IntVar(&cfg.conns, "conns", 1000, "`connections` (members, listeners), changers not included")
	fs.IntVar(&cfg.rooms, "rooms", 0, "`rooms`; 0: 1 for fanout, typing and cluster, else conns/15 (at least 1)")
	fs.Float64Var(&cfg.rate, "rate", 0, "`n` changes a second in all (sets, typing, joins and leaves, cuts); 0: 1 for leave, else 100")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long the scenario runs once every connection is ready")
	fs.IntVar(&cfg.changers, "changers", 10, "fanout, typing, cluster: connections that make the changes (extra to -conns)")
	fs.StringVar(&cfg.disrupt, "disrupt", "", "reconnect: shell `command` run at -disrupt-at (sh -c)")
	fs.DurationVar(&cfg.disruptAt, "disrupt-at", 0, "reconnect: when to run -disrupt after the start; 0: duration/3")
	fs.IntVar(&cfg.procs, "procs", 1, "`processes`: the connections are spread over this many children (each has its own open-file limit)")
	fs.StringVar(sources, "source", "", "comma-separated source `addresses`, round robin per connection (127.0.0.10,127.0.0.11); default: the kernel's choice")
	fs.IntVar(&cfg.ramp, "ramp", 0, "`n` connections opened a second in all; 0: as fast as 64 opening at once per process allow")
	fs.StringVar(&cfg.token, "token", "", "`JWT` sent in every hello (all connections are its subject)")
	fs.StringVar(&cfg.jwtSecret, "jwt-secret", "", "mint an HS256 JWT per user with this `secret` (sub=user, exp in 1 h); default: insecure hellos naming the user")
	fs.IntVar(&cfg.maxErrors, "max-errors", 0, "exit with status 1 when the run counts more `errors`")
	fs.DurationVar(&cfg.progress, "progress", time.Second, "period of the progress line on stderr")
	fs.DurationVar(&cfg.settle, "settle", 2*time.Second, "wait after the scenario before the final check (stale, leaves)")
	fs.DurationVar(&cfg.readyTO, "ready-timeout", 2*time.Minute, "stop with the summary and exit status 1 when not every connection has joined after this `time` (0: wait forever)")
	fs.BoolVar(&cfg.quiet, "quiet", false, "no progress lines (ready and errors still go to stderr)")
	fs.IntVar(&cfg.child, "child", -1, "internal: run as child `n` of a -procs parent")
	return fs
}

// parseFlags parses args; it returns nil, nil after printing -h on stdout.
func parseFlags(args []string, stdout io.Writer) (*config, error) {
	cfg := &config{args: args}
	var urls, sources string
	fs := newFlagSet(cfg, &urls, &sources)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, stdout)
			return nil, nil
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected arguments %q", fs.Args())
	}
	for u := range strings.SplitSeq(urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			if _, err := parseWSURL(u); err != nil {
				return nil, usagef("-url: %v", err)
			}
			cfg.urls = append(cfg.urls, u)
		}
	}
	if len(cfg.urls) == 0 {
		return nil, usagef("-url: no URL")
	}
	for s := range strings.SplitSeq(sources, ",") {
		if s = strings.TrimSpace(s); s != "" {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, usagef("-source: %v", err)
			}
			cfg.sources = append(cfg.sources, a)
		}
	}
	if _, err := protocolFor(cfg.target); err != nil {
		return nil, usageError{err}
	}
	switch cfg.scenario {
	case "idle", "churn", "fanout", "typing", "reconnect", "cluster", "leave":
	default:
		return nil, usagef("-scenario %q: want idle, churn, fanout, typing, reconnect, cluster or leave", cfg.scenario)
	}
	switch {
	case cfg.conns < 1:
		return nil, usagef("-conns %d: at least 1", cfg.conns)
	case cfg.rooms < 0 || cfg.rate < 0 || cfg.ramp < 0 || cfg.maxErrors < 0:
		return nil, usagef("-rooms, -rate, -ramp and -max-errors cannot be negative")
	case cfg.procs < 1:
		return nil, usagef("-procs %d: at least 1", cfg.procs)
	case cfg.duration <= 0 || cfg.progress <= 0 || cfg.settle < 0 || cfg.readyTO < 0:
		return nil, usagef("-duration and -progress must be positive, -settle and -ready-timeout not negative")
	case cfg.hasChangers() && cfg.changers < 1:
		return nil, usagef("-changers %d: at least 1", cfg.changers)
	case cfg.scenario == "typing" && cfg.changers > 64:
		return nil, usagef("-changers %d: typing has at most 64 typers", cfg.changers)
	}
	if cfg.rooms == 0 {
		cfg.rooms = max(1, cfg.conns/15)
		if cfg.hasChangers() {
			cfg.rooms = 1
		}
	}
	if cfg.rooms > cfg.conns {
		return nil, usagef("-rooms %d: more rooms than -conns %d", cfg.rooms, cfg.conns)
	}
	if cfg.rate == 0 {
		cfg.rate = 100
		if cfg.scenario == "leave" {
			cfg.rate = 1
		}
	}
	if cfg.disruptAt == 0 {
		cfg.disruptAt = cfg.duration / 3
	}
	if !cfg.hasChangers() {
		cfg.changers = 0
	}
	return cfg, nil
}

// hasChangers reports whether the scenario has changer connections.
func (cfg *config) hasChangers() bool {
	return cfg.scenario == "fanout" || cfg.scenario == "typing" || cfg.scenario == "cluster"
}

func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, `Usage: presence-load -scenario NAME -url ws://HOST:PORT/ws[,ws://...] -conns N -rooms R -rate X -duration D [flags]

Opens the connections (hello, then join of the connection's room), prints "ready conns=N" on stderr
once every one has joined (or failed three times), runs the scenario for -duration, waits -settle,
and prints one JSON summary on stdout. When not every connection has joined -ready-timeout after
the start, it stops, counts each connection that has not joined as an error, prints the summary
and exits with status 1. A progress line goes to stderr every -progress:
  t=12s conns=15000 joins/s=1200 deliveries/s=980000 p50=12.1ms p99=88.0ms errors=0
Deliveries are the presence events connections receive in the measured phase (a member joined,
left, changed status, started or stopped typing; with changers, only the changers' changes). Errors: failed connections, err replies, lost
connections (except in reconnect), unreadable messages. Exit status 1 when errors > -max-errors.

`)
	fmt.Fprint(w, scenarioHelp)
	fmt.Fprintln(w, "\nFlags:")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "child" {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		line := "  -" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
