package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/webhook"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// envPrefix starts the environment variable of every flag.
const envPrefix = "PRESENCED_"

// Floors of the size flags. Below them the server starts but cannot serve
// the contract, so they are usage errors.
const (
	// minMaxMessage fits the largest join or set within the contract's
	// field limits (128-byte room, 32-byte status even fully escaped,
	// 512-byte meta): about 900 bytes.
	minMaxMessage = 1024
	// minOutbox is the server's (see server.MinOutbox): room for the
	// answers to one message and as much again for room frames.
	minOutbox = server.MinOutbox
	// minNodeTTL: a lease is renewed every third of -node-ttl with
	// timeouts of a sixth of it; below this, loopback jitter or a short
	// Redis stall would cost a node its lease.
	minNodeTTL = 500 * time.Millisecond
)

// usageError is a bad flag or environment value: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// options is what the command line and the environment configure.
type options struct {
	server         server.Config
	logLevel       slog.Level
	allowedOrigins string          // -allowed-origins, split into server.AllowedOrigins
	jwtSecret      string          // -jwt-secret
	jwtSecretFile  string          // -jwt-secret-file
	jwtPublicKey   string          // -jwt-public-key: a file name
	adminTokenFile string          // -admin-token-file
	redisURL       string          // -redis, parsed into server.Redis.Redis
	redisCluster   bool            // -redis-cluster
	redisMaster    string          // -redis-sentinel-master
	redisPassFile  string          // -redis-password-file
	sentinelPass   string          // -redis-sentinel-password-file
	redis          redisbus.Config // -redis-prefix, -node-ttl, -redis-no-keyspace-events; server.Redis with -redis
	webhookURL     string          // -webhook-url
	webhookSecret  string          // -webhook-secret-file
	gcPercent      int             // -gc-percent
	setGC          bool            // apply gcPercent: -gc-percent was given, or GOGC is not in the environment
	help           bool            // -h was given: the usage is printed, nothing runs
}

// envName is the environment variable of a flag: "max-conns" gives
// PRESENCED_MAX_CONNS.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// newFlagSet defines every flag of presenced, bound to o, with its default:
// the one of the package that owns the setting (poller, presence, auth or
// server), never a literal of its own, so that the binary and a server.New
// with a zero Config agree.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("presenced", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, the usage printed on request
	cfg := &o.server
	fs.StringVar(&cfg.Addr, "addr", poller.DefaultAddr, "public WebSocket `address`; clients connect to ws://ADDR/ws")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", server.DefaultAdminAddr, "admin HTTP `address`: /healthz, /readyz, /metrics, /debug/pprof/ and the admin API /api/ (keep it private)")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "`file` holding the bearer token of the admin API /api/ (surrounding whitespace trimmed); without it the API answers 403, except with -insecure and -admin-addr on loopback")
	fs.StringVar(&cfg.Engine, "engine", poller.DefaultEngine, "I/O `engine`: epoll or netpoll")
	fs.StringVar(&o.allowedOrigins, "allowed-origins", "", "comma-separated `origins` allowed to upgrade (https://app.example.com); empty allows all")
	fs.IntVar(&cfg.MaxMessage, "max-message", poller.DefaultMaxMessage, fmt.Sprintf("largest client message in `bytes`, after reassembly; larger closes with 1009 (at least %d)", minMaxMessage))
	fs.IntVar(&cfg.MaxConns, "max-conns", 0, "most connections held at once; beyond, upgrades get 503 (0 = no cap)")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", 0, "most connections from one IP (0 = no cap)")
	fs.IntVar(&cfg.Outbox, "outbox", poller.DefaultOutbox, fmt.Sprintf("outbound buffer per connection in `bytes`; a sync is at most half of it (%d to %d)", minOutbox, poller.MaxOutbox))
	durationFlag(fs, &cfg.HandshakeTimeout, "handshake-timeout", poller.DefaultHandshakeTimeout, "time allowed to complete the HTTP upgrade")
	fs.BoolVar(&cfg.Demo, "demo", false, "serve the demo page at /demo on the public listener (http://ADDR/demo)")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.IntVar(&o.gcPercent, "gc-percent", defaultGCPercent, "the heap may grow this `percent` over the live heap before a garbage collection (the runtime's GOGC, which applies instead when set in the environment and this flag is not); lower: less memory, more GC CPU. With it, unless GOMEMLIMIT is set, a soft memory limit follows the live heap while it holds steady, so that freed pages return to the OS")

	pc := &cfg.Presence
	fs.StringVar(&pc.Node, "node", "", "node `id` sent in welcome, 1-128 bytes of [A-Za-z0-9._:@/-] (default: random)")
	durationFlag(fs, &pc.HeartbeatInterval, "hb-interval", presence.DefaultHeartbeatInterval, "interval of server pings (hb)")
	durationFlag(fs, &pc.HeartbeatTimeout, "hb-timeout", presence.DefaultHeartbeatTimeout, "a client silent for hb + this is closed with 4001")
	durationFlag(fs, &pc.HelloTimeout, "hello-timeout", presence.DefaultHelloTimeout, "time allowed to send hello; then close 4004")
	durationFlag(fs, &pc.Tick, "tick", presence.DefaultTick, "coalescing window: at most one diff per room per tick")
	durationFlag(fs, &pc.LeaveGrace, "leave-grace", presence.DefaultLeaveGrace, "how long a member whose connection was lost stays")
	durationFlag(fs, &pc.TypingTTL, "typing-ttl", presence.DefaultTypingTTL, "typing ends this long after the last typing on")
	fs.IntVar(&pc.ListLimit, "list-limit", presence.DefaultListLimit, "rooms with more `members` are sent partially")
	fs.IntVar(&pc.MaxRooms, "max-rooms", presence.DefaultMaxRooms, "most `rooms` one connection joins")
	durationFlag(fs, &pc.SlowTimeout, "slow-timeout", presence.DefaultSlowTimeout, "a connection owed a room's sync this long (its outbox could not take it) is closed with 4002")
	durationFlag(fs, &pc.AuthGrace, "auth-grace", presence.DefaultAuthGrace, "time to renew an expired token before close 4003")
	durationFlag(fs, &cfg.Drain, "drain", server.DefaultDrain, "on SIGTERM, clients are told to reconnect spread over this window")
	fs.BoolVar(&pc.Insecure, "insecure", false, "accept hello with a user and no token (development only)")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "HS256 `secret` of client tokens; visible in the process list: prefer -jwt-secret-file")
	fs.StringVar(&o.jwtSecretFile, "jwt-secret-file", "", "`file` holding the HS256 secret of client tokens (surrounding whitespace trimmed)")
	fs.StringVar(&o.jwtPublicKey, "jwt-public-key", "", "PEM `file` with the RSA (RS256) or P-256 (ES256) public key of client tokens")
	fs.StringVar(&cfg.JWT.Issuer, "jwt-issuer", "", "required iss of client tokens (empty: not checked)")
	fs.StringVar(&cfg.JWT.Audience, "jwt-audience", "", "required aud of client tokens (empty: not checked)")
	durationFlag(fs, &cfg.JWT.Leeway, "jwt-leeway", auth.DefaultLeeway, "clock skew allowed between the token issuer and this server on exp, nbf and iat")

	rc := &o.redis
	fs.StringVar(&o.redisURL, "redis", "", "Redis `URL` shared by the nodes: redis://[user:pass@]host:port[,host:port...][/db], rediss:// for TLS (empty: a single node, all in memory)")
	fs.BoolVar(&o.redisCluster, "redis-cluster", false, "the hosts of -redis are seeds of a Redis Cluster")
	fs.StringVar(&o.redisMaster, "redis-sentinel-master", "", "the hosts of -redis are Sentinels, and this is the `name` of their master")
	fs.StringVar(&o.redisPassFile, "redis-password-file", "", "`file` holding the Redis password (surrounding whitespace trimmed), instead of one in the -redis URL, which the process list shows")
	fs.StringVar(&o.sentinelPass, "redis-sentinel-password-file", "", "`file` holding the password of the Sentinels (surrounding whitespace trimmed)")
	fs.StringVar(&rc.Prefix, "redis-prefix", redisbus.DefaultPrefix, "`prefix` of every Redis key and channel of presenced (no { or })")
	durationFlag(fs, &rc.NodeTTL, "node-ttl", redisbus.DefaultNodeTTL, fmt.Sprintf("a node's lease in Redis, renewed every third of it: the others find a dead node within this plus a third of it (at least %v)", minNodeTTL))
	fs.BoolVar(&rc.NoKeyspaceEvents, "redis-no-keyspace-events", false, "do not enable expired keyspace events (CONFIG SET notify-keyspace-events Ex): find dead nodes by probing only")
	fs.BoolVar(&cfg.ReadyNeedsRedis, "ready-needs-redis", false, "/readyz answers 503 while the node does not hold its Redis lease")
	fs.StringVar(&o.webhookURL, "webhook-url", "", "`URL` that receives webhooks: room occupied and vacated, member added and removed, batched per tick, signed (docs/webhooks.md) (empty: none)")
	fs.StringVar(&o.webhookSecret, "webhook-secret-file", "", "`file` holding the HMAC-SHA256 keys that sign webhooks, one per line (each trimmed, blank lines skipped), the current first: each request is signed with every one (rotation, docs/webhooks.md); required with -webhook-url")
	return fs
}

// redisFlags are the flags that mean nothing without -redis.
var redisFlags = []string{"redis-cluster", "redis-sentinel-master", "redis-password-file", "redis-sentinel-password-file", "redis-prefix", "node-ttl", "redis-no-keyspace-events", "ready-needs-redis"}

// parseFlags reads the environment through lookupEnv, then args, which win.
// With -h it prints the usage on stdout and returns options.help set.
func parseFlags(args []string, lookupEnv func(string) (string, bool), stdout io.Writer) (options, error) {
	var o options
	fs := newFlagSet(&o)

	// The environment first, so that the command line overrides it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v, ok := lookupEnv(name); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = usageErrorf("invalid value %q for %s (-%s): %v", v, name, f.Name, err)
			}
		}
	})
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) { // even with a bad environment
		printUsage(fs, stdout)
		o.help = true
		return o, nil
	}
	switch {
	case envErr != nil:
		return o, envErr
	case err != nil:
		return o, usageError{err}
	case fs.NArg() > 0:
		return o, usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	o.server.AllowedOrigins = splitList(o.allowedOrigins)
	if o.gcPercent < 1 {
		return o, usageErrorf("-gc-percent %d: must be at least 1 (GOGC=off in the environment turns the collector off)", o.gcPercent)
	}
	_, gogc := lookupEnv(gcPercentEnv)
	o.setGC = !gogc
	fs.Visit(func(f *flag.Flag) { o.setGC = o.setGC || f.Name == "gc-percent" })
	if err := validate(o.server); err != nil {
		return o, err
	}
	if err := redisConfig(&o, fs); err != nil {
		return o, err
	}
	if err := webhookConfig(&o); err != nil {
		return o, err
	}
	if err := loadKeys(&o); err != nil {
		return o, err
	}
	if o.adminTokenFile != "" {
		tok, err := readSecretFile("-admin-token-file", o.adminTokenFile)
		if err != nil {
			return o, err
		}
		o.server.AdminToken = []byte(tok)
	}
	return o, nil
}

// redisConfig checks the Redis flags and, with -redis, gives the server
// its bus config. Set in the environment or on the command line, the other
// Redis flags need -redis: without it they would be ignored silently.
func redisConfig(o *options, fs *flag.FlagSet) error {
	if o.redisURL == "" {
		var set []string
		fs.Visit(func(f *flag.Flag) {
			if slices.Contains(redisFlags, f.Name) {
				set = append(set, "-"+f.Name)
			}
		})
		if len(set) > 0 {
			return usageErrorf("%s: needs -redis (without it the node is alone and holds everything in memory)", strings.Join(set, " and "))
		}
		return nil
	}
	rc := o.redis
	switch {
	case o.redisCluster && o.redisMaster != "":
		return usageErrorf("-redis-cluster and -redis-sentinel-master: give one: the hosts of -redis are either Cluster seeds or Sentinels")
	case rc.Prefix == "":
		return usageErrorf("-redis-prefix: must not be empty")
	case strings.ContainsAny(rc.Prefix, "{}"):
		return usageErrorf("-redis-prefix %q: must not contain { or }: presenced puts its own hash tags after it", rc.Prefix)
	case rc.NodeTTL < minNodeTTL:
		return usageErrorf("-node-ttl %v: must be at least %v", rc.NodeTTL, minNodeTTL)
	}
	opts, err := redisbus.ParseURL(o.redisURL, o.redisCluster, o.redisMaster)
	if err != nil {
		return usageErrorf("-redis: %s", redact(err.Error(), o.redisURL))
	}
	if o.redisPassFile != "" {
		if opts.Password, err = readSecretFile("-redis-password-file", o.redisPassFile); err != nil {
			return err
		}
	}
	if o.sentinelPass != "" {
		if o.redisMaster == "" {
			return usageErrorf("-redis-sentinel-password-file: needs -redis-sentinel-master")
		}
		if opts.SentinelPassword, err = readSecretFile("-redis-sentinel-password-file", o.sentinelPass); err != nil {
			return err
		}
	}
	rc.Redis = opts
	o.server.Redis = &rc
	return nil
}

// webhookConfig checks the webhook flags and, with -webhook-url, gives the
// server its sender config.
func webhookConfig(o *options) error {
	switch {
	case o.webhookURL == "" && o.webhookSecret != "":
		return usageErrorf("-webhook-secret-file: needs -webhook-url")
	case o.webhookURL == "":
		return nil
	case o.webhookSecret == "":
		return usageErrorf("-webhook-url: needs -webhook-secret-file: webhooks are always signed")
	}
	u, err := url.Parse(o.webhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("-webhook-url %q: want an http:// or https:// URL", o.webhookURL)
	}
	secret, err := readSecretFile("-webhook-secret-file", o.webhookSecret)
	if err != nil {
		return err
	}
	var keys [][]byte
	for line := range strings.Lines(secret) {
		if k := strings.TrimSpace(line); k != "" {
			keys = append(keys, []byte(k))
		}
	}
	o.server.Webhook = &webhook.Config{URL: o.webhookURL, Secret: keys[0], OtherSecrets: keys[1:]}
	return nil
}

// readSecretFile reads a secret file given to flag, trimmed of
// surrounding whitespace; it must not be empty.
func readSecretFile(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErrorf("%s: %v", flag, err)
	}
	if b = bytes.TrimSpace(b); len(b) == 0 {
		return "", usageErrorf("%s %s is empty", flag, path)
	}
	return string(b), nil
}

// redact removes the password of rawURL, if it has one, from msg: errors
// about -redis must not show it.
func redact(msg, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		// An unparsable URL may still hold a password: drop the userinfo by hand.
		if at := strings.LastIndex(rawURL, "@"); at >= 0 {
			if scheme := strings.Index(rawURL, "://"); scheme >= 0 && scheme < at {
				msg = strings.ReplaceAll(msg, rawURL[scheme+3:at], "xxxxx")
			}
		}
		return msg
	}
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "xxxxx")
	}
	return msg
}

// loadKeys reads the JWT key flags into the server config and checks the
// key, so that a bad one is a usage error.
func loadKeys(o *options) error {
	var given []string
	for _, f := range []struct{ name, value string }{
		{"-jwt-secret", o.jwtSecret},
		{"-jwt-secret-file", o.jwtSecretFile},
		{"-jwt-public-key", o.jwtPublicKey},
	} {
		if f.value != "" {
			given = append(given, f.name)
		}
	}
	jc := &o.server.JWT
	switch {
	case len(given) > 1:
		return usageErrorf("%s: give only one of -jwt-secret, -jwt-secret-file and -jwt-public-key", strings.Join(given, " and "))
	case len(given) == 0 && !o.server.Presence.Insecure:
		return usageErrorf("no way to verify clients: give -jwt-secret-file (HS256), -jwt-public-key (RS256/ES256) or -jwt-secret, or -insecure for development")
	case len(given) == 0:
		return nil
	case o.jwtSecret != "":
		jc.HS256Secret = []byte(o.jwtSecret)
	case o.jwtSecretFile != "":
		secret, err := readSecretFile("-jwt-secret-file", o.jwtSecretFile)
		if err != nil {
			return err
		}
		jc.HS256Secret = []byte(secret)
	case o.jwtPublicKey != "":
		b, err := os.ReadFile(o.jwtPublicKey)
		if err != nil {
			return usageErrorf("-jwt-public-key: %v", err)
		}
		jc.PublicKeyPEM = b
	}
	if _, err := auth.New(*jc); err != nil {
		// The error names the key's fault, never the key.
		return usageErrorf("%s: %v", given[0], err)
	}
	return nil
}

// durationValue is a flag taking a Go duration ("25s") or a whole number
// of milliseconds ("25000"), as the contract gives its settings.
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
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

// parseDuration parses a flag's duration: at least 1 ms, since the
// contract counts in milliseconds (welcome's hb).
func parseDuration(s string) (time.Duration, error) {
	var d time.Duration
	ms, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err == nil && (ms > math.MaxInt64/int64(time.Millisecond) || ms < math.MinInt64/int64(time.Millisecond)),
		errors.Is(err, strconv.ErrRange):
		return 0, errors.New("out of range")
	case err == nil:
		d = time.Duration(ms) * time.Millisecond
	default:
		if d, err = time.ParseDuration(s); err != nil {
			return 0, errors.New("want a Go duration like 25s or 1m30s, or a whole number of milliseconds")
		}
	}
	if d < time.Millisecond {
		return 0, errors.New("must be at least 1ms")
	}
	return d, nil
}

// validate checks what the flag types do not.
func validate(c server.Config) error {
	for _, a := range []struct{ flag, addr string }{{"addr", c.Addr}, {"admin-addr", c.AdminAddr}} {
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return usageErrorf("-%s %q: want host:port, like 127.0.0.1:8080", a.flag, a.addr)
		}
	}
	switch pc := c.Presence; {
	case c.Engine != poller.EngineEpoll && c.Engine != poller.EngineNetpoll:
		return usageErrorf("-engine %q: want %s or %s", c.Engine, poller.EngineEpoll, poller.EngineNetpoll)
	case c.MaxMessage < minMaxMessage:
		return usageErrorf("-max-message %d: must be at least %d, to fit every command within the contract's limits", c.MaxMessage, minMaxMessage)
	case c.MaxConns < 0:
		return usageErrorf("-max-conns %d: must be 0 (no cap) or positive", c.MaxConns)
	case c.MaxConnsPerIP < 0:
		return usageErrorf("-max-conns-per-ip %d: must be 0 (no cap) or positive", c.MaxConnsPerIP)
	case c.Outbox < minOutbox:
		return usageErrorf("-outbox %d: must be at least %d, to fit a sync", c.Outbox, minOutbox)
	case c.Outbox > poller.MaxOutbox:
		return usageErrorf("-outbox %d: must be at most %d", c.Outbox, poller.MaxOutbox)
	case pc.ListLimit <= 0:
		return usageErrorf("-list-limit %d: must be positive", pc.ListLimit)
	case pc.MaxRooms <= 0:
		return usageErrorf("-max-rooms %d: must be positive", pc.MaxRooms)
	case pc.Node != "" && !wire.ValidID(pc.Node):
		return usageErrorf("-node %q: want 1-128 bytes of [A-Za-z0-9._:@/-]", pc.Node)
	}
	for _, origin := range c.AllowedOrigins {
		if err := validOrigin(origin); err != nil {
			return usageErrorf("-allowed-origins %q: %v", origin, err)
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

// printUsage prints the usage of every flag of fs, with its default and
// its environment variable, on w.
func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: presenced [flags]\n\n"+
		"Serves WebSocket presence on -addr (GET /ws) and admin endpoints on -admin-addr.\n"+
		"Each flag can also be set as the environment variable shown in brackets;\n"+
		"the command line wins over the environment. Durations take a Go duration\n"+
		"(25s, 1m30s) or a whole number of milliseconds. One of -jwt-secret-file,\n"+
		"-jwt-public-key, -jwt-secret or -insecure is required.\n\n")
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  -%s", f.Name)
		if typ != "" {
			fmt.Fprintf(w, " %s", typ)
		}
		fmt.Fprintf(w, "\n    \t%s", usage)
		switch def := f.DefValue; {
		case def == "" || def == "0" || def == "false":
		case isString(f.Value):
			fmt.Fprintf(w, " (default %q)", def)
		default:
			fmt.Fprintf(w, " (default %s)", def)
		}
		fmt.Fprintf(w, " [$%s]\n", envName(f.Name))
	})
}

// isString reports whether v is a string flag, whose default is quoted.
func isString(v flag.Value) bool {
	g, ok := v.(flag.Getter)
	if !ok {
		return false
	}
	_, ok = g.Get().(string)
	return ok
}
