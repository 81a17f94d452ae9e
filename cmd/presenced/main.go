// Command presenced is the presence server: a WebSocket listener (GET /ws)
// and an admin listener (/healthz, /readyz, /metrics, /debug/pprof/).
//
// Every flag can also be set from the environment as PRESENCED_<NAME>, the
// flag name in upper snake case (-max-conns-per-ip: PRESENCED_MAX_CONNS_PER_IP);
// a flag on the command line wins over the environment. Run
// `presenced -h` for the list. Clients are verified with one JWT key
// (-jwt-secret-file, -jwt-public-key or -jwt-secret); without one,
// -insecure is required (development: hello names its user). With -redis
// the node shares presence with the other nodes using that Redis; without
// it the node is alone and holds everything in memory. The process owns
// the runtime's GC settings: -gc-percent (default 10, see gc.go) instead
// of GOGC's 100, and, while the live heap holds steady, a soft memory
// limit derived from it, so that its RSS follows its live heap. SIGINT or
// SIGTERM drains and stops the server. Exit codes: 0 after a clean stop, 1
// on a runtime error, 2 on a bad flag or environment value.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal kills at once
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err on stderr and returns the process exit code.
func exitCode(err error, stderr io.Writer) int {
	var uerr usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "presenced: %v\nRun 'presenced -h' for usage.\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "presenced: %v\n", err)
		return 1
	}
}

// run is the whole program: it parses args (and the PRESENCED_*
// environment), serves until ctx is done and returns once everything has
// stopped. Logs go to stderr; -h prints the usage on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, os.LookupEnv, stdout)
	if err != nil {
		return err
	}
	if opts.help {
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: opts.logLevel}))
	defer startGCPolicy(ctx, opts, os.LookupEnv)()
	if opts.server.Redis != nil {
		// go-redis logs through a process-wide logger (dial failures
		// during an outage): main owns the process, so it sets it here.
		redis.SetLogger(&redisLog{log: log})
	}

	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register collectors: %w", err)
		}
	}

	cfg := opts.server
	warnInsecure(log, cfg)
	cfg.Logger = log
	cfg.Registry = reg
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// minSecret is the HS256 secret length RFC 7518 (3.2) asks for, in bytes.
const minSecret = 32

// warnInsecure logs the settings that weaken client authentication. It
// never logs a key.
func warnInsecure(log *slog.Logger, cfg server.Config) {
	if cfg.Presence.Insecure {
		log.Warn("insecure: hello is accepted with a user and no token; for development only")
	}
	if n := len(cfg.JWT.HS256Secret); n > 0 && n < minSecret {
		log.Warn("HS256 secret shorter than RFC 7518 asks", "bytes", n, "want", minSecret)
	}
}

// redisLog sends go-redis's own log lines to slog, at most one a second
// (an outage makes it log every failed dial).
type redisLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	last time.Time // guarded by mu
}

func (l *redisLog) Printf(_ context.Context, format string, v ...any) {
	l.mu.Lock()
	now := time.Now()
	quiet := now.Sub(l.last) < time.Second
	if !quiet {
		l.last = now
	}
	l.mu.Unlock()
	if !quiet {
		l.log.Warn("go-redis: " + fmt.Sprintf(format, v...))
	}
}
