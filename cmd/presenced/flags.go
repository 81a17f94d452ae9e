package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
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
	server        server.Config
	logLevel      slog.Level
	jwtSecret     string // -jwt-secret
	jwtSecretFile string // -jwt-secret-file
	jwtPublicKey  string // -jwt-public-key: a file name
	help          bool   // -h was given: the usage is printed, nothing runs
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

	pc := &cfg.Presence
	fs.StringVar(&pc.Node, "node", "", "node `id` sent in welcome (default: random)")
	durationFlag(fs, &pc.HeartbeatInterval, "hb-interval", 25*time.Second, "interval of server pings (hb)")
	durationFlag(fs, &pc.HeartbeatTimeout, "hb-timeout", 10*time.Second, "a client silent for hb + this is closed with 4001")
	durationFlag(fs, &pc.HelloTimeout, "hello-timeout", 10*time.Second, "time allowed to send hello; then close 4004")
	durationFlag(fs, &pc.Tick, "tick", 100*time.Millisecond, "coalescing window: at most one diff per room per tick")
	durationFlag(fs, &pc.LeaveGrace, "leave-grace", 5*time.Second, "how long a member whose connection was lost stays")
	durationFlag(fs, &pc.TypingTTL, "typing-ttl", 6*time.Second, "typing ends this long after the last typing on")
	fs.IntVar(&pc.ListLimit, "list-limit", 1000, "rooms with more members are sent partially")
	fs.IntVar(&pc.MaxRooms, "max-rooms", 64, "most rooms one connection joins")
	durationFlag(fs, &pc.SlowTimeout, "slow-timeout", 10*time.Second, "a connection whose outbox stays full this long is closed with 4002")
	durationFlag(fs, &pc.AuthGrace, "auth-grace", 30*time.Second, "time to renew an expired token before close 4003")
	durationFlag(fs, &cfg.Drain, "drain", 10*time.Second, "on SIGTERM, clients are told to reconnect spread over this window")
	fs.BoolVar(&pc.Insecure, "insecure", false, "accept hello with a user and no token (development only)")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "HS256 `secret` for client tokens (prefer -jwt-secret-file)")
	fs.StringVar(&o.jwtSecretFile, "jwt-secret-file", "", "`file` holding the HS256 secret (surrounding whitespace trimmed)")
	fs.StringVar(&o.jwtPublicKey, "jwt-public-key", "", "PEM `file` with the RSA (RS256) or P-256 (ES256) public key of client tokens")
	fs.StringVar(&cfg.JWT.Issuer, "jwt-issuer", "", "required iss of client tokens (empty: not checked)")
	fs.StringVar(&cfg.JWT.Audience, "jwt-audience", "", "required aud of client tokens (empty: not checked)")

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
	if err := validate(o); err != nil {
		return o, err
	}
	return o, loadKeys(&o)
}

// loadKeys reads the JWT key flags into the server config.
func loadKeys(o *options) error {
	set := 0
	for _, v := range []string{o.jwtSecret, o.jwtSecretFile, o.jwtPublicKey} {
		if v != "" {
			set++
		}
	}
	switch {
	case set > 1:
		return usageErrorf("give only one of -jwt-secret, -jwt-secret-file and -jwt-public-key")
	case set == 0 && !o.server.Presence.Insecure:
		return usageErrorf("no way to verify clients: give -jwt-secret-file (HS256), -jwt-public-key (RS256/ES256) or -jwt-secret, or -insecure for development")
	case o.jwtSecret != "":
		o.server.JWT.HS256Secret = []byte(o.jwtSecret)
	case o.jwtSecretFile != "":
		b, err := os.ReadFile(o.jwtSecretFile)
		if err != nil {
			return usageErrorf("-jwt-secret-file: %v", err)
		}
		if b = bytes.TrimSpace(b); len(b) == 0 {
			return usageErrorf("-jwt-secret-file %s is empty", o.jwtSecretFile)
		}
		o.server.JWT.HS256Secret = b
	case o.jwtPublicKey != "":
		b, err := os.ReadFile(o.jwtPublicKey)
		if err != nil {
			return usageErrorf("-jwt-public-key: %v", err)
		}
		o.server.JWT.PublicKeyPEM = b
	}
	return nil
}

// durationValue is a flag taking a Go duration ("25s") or a number of
// milliseconds ("25000"), as the protocol's settings are given.
type durationValue struct{ d *time.Duration }

func durationFlag(fs *flag.FlagSet, d *time.Duration, name string, def time.Duration, usage string) {
	*d = def
	fs.Var(durationValue{d}, name, usage+" (`duration` like 25s, or milliseconds)")
}

func (v durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		*v.d = time.Duration(ms) * time.Millisecond
	} else if *v.d, err = time.ParseDuration(s); err != nil {
		return errors.New("want a duration like 25s or 1m30s, or a number of milliseconds")
	}
	if *v.d <= 0 {
		return errors.New("must be positive")
	}
	return nil
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
	case c.Presence.ListLimit <= 0:
		return usageErrorf("-list-limit %d: must be positive", c.Presence.ListLimit)
	case c.Presence.MaxRooms <= 0:
		return usageErrorf("-max-rooms %d: must be positive", c.Presence.MaxRooms)
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
