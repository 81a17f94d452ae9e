package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/poller"
)

// envPrefix starts the environment variable of every flag.
const envPrefix = "PRESENCED_"

// usageError is a bad flag or environment value: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// options is what the command line and the environment configure.
type options struct {
	server   server.Config
	logLevel slog.Level
	help     bool // -h was given: the usage is printed, nothing runs
}

// envName is the environment variable of a flag: "max-conns" gives
// PRESENCED_MAX_CONNS.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags reads the environment through lookupEnv, then args, which win.
// With -h it prints the usage on stdout and returns options.help set.
func parseFlags(args []string, lookupEnv func(string) (string, bool), stdout io.Writer) (options, error) {
	var (
		o       options
		origins string
	)
	fs := flag.NewFlagSet("presenced", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, the usage printed on request
	cfg := &o.server
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "public WebSocket `address`; clients connect to ws://ADDR/ws")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:9090", "admin HTTP `address`: /healthz, /readyz, /metrics, /debug/pprof/ (keep it private)")
	fs.StringVar(&cfg.Engine, "engine", poller.EngineEpoll, "I/O `engine`: epoll or netpoll")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated `origins` allowed to upgrade (https://app.example.com); empty allows all")
	fs.IntVar(&cfg.MaxMessage, "max-message", 4096, "largest client message in `bytes`, after reassembly; larger closes with 1009")
	fs.IntVar(&cfg.MaxConns, "max-conns", 0, "most connections held at once; beyond, upgrades get 503 (0 = no cap)")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", 0, "most connections from one IP (0 = no cap)")
	fs.IntVar(&cfg.Outbox, "outbox", 64<<10, "outbound buffer per connection in `bytes`")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 5*time.Second, "time allowed to complete the HTTP upgrade")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")

	// The environment first, so that the command line overrides it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v, ok := lookupEnv(name); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = usageErrorf("invalid value %q for %s: %v", v, name, err)
			}
		}
	})
	if envErr != nil {
		return o, envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, stdout)
			o.help = true
			return o, nil
		}
		return o, usageError{err}
	}
	if fs.NArg() > 0 {
		return o, usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	cfg.AllowedOrigins = splitList(origins)
	return o, validate(o)
}

func validate(o options) error {
	c := o.server
	for _, a := range []struct{ flag, addr string }{{"addr", c.Addr}, {"admin-addr", c.AdminAddr}} {
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return usageErrorf("-%s %q: want host:port, like 127.0.0.1:8080", a.flag, a.addr)
		}
	}
	switch {
	case c.Engine != poller.EngineEpoll && c.Engine != poller.EngineNetpoll:
		return usageErrorf("-engine %q: want %s or %s", c.Engine, poller.EngineEpoll, poller.EngineNetpoll)
	case c.MaxMessage <= 0:
		return usageErrorf("-max-message %d: must be positive", c.MaxMessage)
	case c.MaxConns < 0:
		return usageErrorf("-max-conns %d: must be 0 (no cap) or positive", c.MaxConns)
	case c.MaxConnsPerIP < 0:
		return usageErrorf("-max-conns-per-ip %d: must be 0 (no cap) or positive", c.MaxConnsPerIP)
	case c.Outbox <= 0:
		return usageErrorf("-outbox %d: must be positive", c.Outbox)
	case c.HandshakeTimeout <= 0:
		return usageErrorf("-handshake-timeout %v: must be positive", c.HandshakeTimeout)
	}
	for _, o := range c.AllowedOrigins {
		if err := validOrigin(o); err != nil {
			return usageErrorf("-allowed-origins %q: %v", o, err)
		}
	}
	return nil
}

// validOrigin accepts what a browser sends in Origin: scheme://host[:port],
// with no path, or "null".
func validOrigin(o string) error {
	if o == "null" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil {
		return err
	}
	if u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("want scheme://host[:port], like https://app.example.com")
	}
	return nil
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, strings.TrimSuffix(p, "/"))
		}
	}
	return out
}

func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: presenced [flags]\n\n"+
		"Serves WebSocket presence on -addr (GET /ws) and admin endpoints on -admin-addr.\n"+
		"Each flag can also be set as an environment variable, shown in brackets;\n"+
		"the command line wins over the environment.\n\n")
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " [$" + envName(f.Name) + "]" })
	fs.SetOutput(w)
	fs.PrintDefaults()
}
