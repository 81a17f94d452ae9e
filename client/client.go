package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/presenced/presenced/internal/wire"
)

// Defaults of Config.
const (
	DefaultMinBackoff       = 500 * time.Millisecond
	DefaultMaxBackoff       = 30 * time.Second
	DefaultHeartbeatTimeout = 10 * time.Second
	DefaultDialTimeout      = 10 * time.Second
	DefaultEventBuffer      = 256
)

const (
	// stableAfter is how long a welcomed connection must have lived for
	// its loss to reset the reconnect backoff.
	stableAfter = 30 * time.Second
	// closeWait bounds how long Close waits for the server's close frame
	// before it closes the TCP connection.
	closeWait = time.Second
	// maxMessage bounds one server message after reassembly. The server's
	// largest messages are syncs of up to list_limit members.
	maxMessage = 8 << 20
)

// Constant log attribute keys.
const (
	logKeyURL   = "url"
	logKeyCode  = "code"
	logKeyErr   = "err"
	logKeyDelay = "delay"
	logKeyRoom  = "room"
	logKeyType  = "t"
	logKeyID    = "id"
)

// Config configures a Client. The zero value of every field but URL and
// one of Token, TokenFunc or User is usable.
type Config struct {
	// URL is the server's WebSocket endpoint, e.g. "ws://127.0.0.1:8080/ws"
	// (ws or wss). Required.
	URL string

	// Token is a static JWT sent in every hello.
	Token string

	// TokenFunc returns the token for each connection and for each token
	// refresh the server asks for. It wins over Token. It must return when
	// ctx is done. A TokenFunc is what lets the client recover from close
	// codes 4003 (token expired) and 4101 (unauthorized).
	TokenFunc func(ctx context.Context) (string, error)

	// User is sent instead of a token; only servers running with -insecure
	// accept it. Ignored when Token or TokenFunc is set.
	User string

	// Header holds extra HTTP headers of the upgrade request (Origin, ...).
	// Default none.
	Header http.Header

	// MinBackoff is the reconnect backoff base: attempt n sleeps a random
	// duration in [0, min(MaxBackoff, MinBackoff·2ⁿ)]. Default 500ms.
	MinBackoff time.Duration

	// MaxBackoff caps the reconnect backoff. Default 30s.
	MaxBackoff time.Duration

	// HeartbeatTimeout is added to the heartbeat interval the server
	// announces in welcome: a server silent for that long is considered
	// gone and the client reconnects. It also bounds every write. Default
	// 10s.
	HeartbeatTimeout time.Duration

	// DialTimeout bounds one connection attempt: TCP connect, upgrade,
	// hello and welcome. It also bounds a token refresh. Default 10s.
	DialTimeout time.Duration

	// EventBuffer is the capacity of the channel returned by Events. When
	// it is full the oldest event is dropped (Stats.DroppedEvents counts
	// them). Negative disables events: Events returns nil. Default 256.
	EventBuffer int

	// Logger receives the client's logs. Default: discard.
	Logger *slog.Logger
}

// withDefaults returns a copy of cfg with defaults filled in, or an error
// for an unusable configuration.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.URL == "" {
		return cfg, errors.New("client: Config.URL is required")
	}
	if cfg.Token == "" && cfg.TokenFunc == nil && cfg.User == "" {
		return cfg, errors.New("client: one of Config.Token, Config.TokenFunc or Config.User is required")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return cfg, fmt.Errorf("client: Config.MaxBackoff %v is below Config.MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.EventBuffer == 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// ConnState is where a Client is in its connection lifecycle.
type ConnState uint8

// Connection states.
const (
	StateConnecting   ConnState = iota // Dial has not seen a welcome yet
	StateConnected                     // a welcomed connection is up
	StateReconnecting                  // the connection was lost; waiting or dialing again
	StateClosed                        // Close was called or a terminal close code stopped the client
)

func (s ConnState) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// Client is one logical presence connection that survives reconnects. All
// its methods are safe for concurrent use.
type Client struct {
	// Static after Dial.
	cfg    Config
	log    *slog.Logger
	rnd    func(n int64) int64 // [0, n), for backoff jitter
	ctx    context.Context     // done on Close or a terminal stop
	cancel context.CancelFunc
	done   chan struct{} // closed when the run goroutine has finished
	stats  counters

	// events is nil when events are disabled. evMu serializes emit (whose
	// drop-oldest step is a receive) with the final close of the channel.
	evMu      sync.Mutex
	events    chan Event
	evClosed  bool // guarded by evMu
	closeOnce sync.Once
	// wg tracks the token refresh goroutines; refreshing allows one at a
	// time.
	wg         sync.WaitGroup
	refreshing atomic.Bool

	mu      sync.Mutex
	state   ConnState             // guarded by mu
	sess    *session              // guarded by mu: the welcomed connection, nil while reconnecting
	rooms   map[string]*roomState // guarded by mu: the joined rooms (the resume set)
	pending map[int64]*pending    // guarded by mu: commands waiting for ack or err
	lastID  int64                 // guarded by mu: the last command id used
	welcome wire.Event            // guarded by mu: the last welcome
	closing bool                  // guarded by mu: Close was called
	err     error                 // guarded by mu: why the client stopped (nil while running)
	final   bool                  // guarded by mu: a terminal Disconnected event was emitted
}

// Dial connects to cfg.URL, sends hello and returns once the server's
// welcome arrives. ctx bounds only this first connection; the Client then
// runs until Close or a terminal close code. A first attempt refused with
// 4003 or 4101 is retried once with a fresh token from TokenFunc (for 4101
// only when the token differs); other failures are returned as they are: a
// *CloseError when the server closed the connection, the dial error
// otherwise. Dial does not retry with backoff.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := newClient(cfg)
	s, tok, err := c.connect(ctx, "")
	if ce, ok := errors.AsType[*CloseError](err); ok && cfg.TokenFunc != nil &&
		(ce.Code == CloseTokenExpired || ce.Code == CloseUnauthorized) {
		var fresh string
		fresh, err = cfg.TokenFunc(ctx)
		switch {
		case err != nil:
			err = fmt.Errorf("%w (new token: %w)", ce, err)
		case ce.Code == CloseUnauthorized && fresh == tok:
			err = ce
		default:
			s, _, err = c.connect(ctx, fresh)
		}
	}
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.adopt(s)
	go c.run(s)
	return c, nil
}

func newClient(cfg Config) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		rnd:     rand.Int64N,
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		rooms:   make(map[string]*roomState),
		pending: make(map[int64]*pending),
	}
	if cfg.EventBuffer > 0 {
		c.events = make(chan Event, cfg.EventBuffer)
	}
	return c
}

// Events returns the channel events are delivered on, in order, or nil when
// Config.EventBuffer is negative. The channel is closed once the client has
// stopped; its last event is a Disconnected event with Terminal set. When
// the application does not keep up, the oldest buffered event is dropped.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed once the client has stopped: after Close, or after a
// close code that forbids reconnecting.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err reports why the client stopped: nil while it runs, ErrClosed after
// Close, or the terminal error (a *CloseError, usually).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// ConnState reports the connection state.
func (c *Client) ConnState() ConnState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Conn returns the node, connection id and user of the last welcome.
func (c *Client) Conn() (node, conn, user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome.Node, c.welcome.Conn, c.welcome.User
}

// Close sends a close frame 1000 on the current connection, waits briefly
// for the server's answer, stops every goroutine of the client and closes
// the Events channel. Commands still waiting return ErrClosed. Close is
// idempotent and always returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		s := c.sess
		c.mu.Unlock()
		c.cancel()
		if s == nil {
			return
		}
		s.sendClose(ws.StatusNormalClosure)
		t := time.NewTimer(closeWait)
		defer t.Stop()
		select {
		case <-c.done:
		case <-t.C:
			s.conn.Close()
		}
	})
	<-c.done
	return nil
}

// emit delivers ev on the events channel, dropping the oldest buffered
// event when it is full.
func (c *Client) emit(ev Event) {
	if c.events == nil {
		return
	}
	c.evMu.Lock()
	defer c.evMu.Unlock()
	if c.evClosed {
		return
	}
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case <-c.events:
			c.stats.droppedEvents.Add(1)
		default:
		}
	}
}

// stoppedLocked returns the error commands fail with once the client is
// stopping, nil while it runs.
func (c *Client) stoppedLocked() error {
	switch {
	case c.closing:
		return ErrClosed
	case c.err == nil && c.state != StateClosed:
		return nil
	case c.err == nil, errors.Is(c.err, ErrClosed):
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, c.err)
}

// Stats is a snapshot of a client's counters, for load generators and
// metrics. Every counter only grows.
type Stats struct {
	Dials         uint64 // connection attempts
	Connects      uint64 // welcomes received
	Reconnects    uint64 // welcomes after the first
	Disconnects   uint64 // welcomed connections lost, and failed attempts
	Syncs         uint64 // sync messages applied
	Diffs         uint64 // diffs applied
	Gaps          uint64 // diffs ignored because their from was not the room's cursor
	Pings         uint64 // server pings answered
	Refreshes     uint64 // tokens renewed with auth
	Commands      uint64 // Join, Leave, Set and Sync calls sent
	CommandErrors uint64 // err answers
	DroppedEvents uint64 // events dropped because the Events channel was full
}

type counters struct {
	dials, connects, reconnects, disconnects atomic.Uint64
	syncs, diffs, gaps, pings, refreshes     atomic.Uint64
	commands, commandErrors, droppedEvents   atomic.Uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Dials:         s.dials.Load(),
		Connects:      s.connects.Load(),
		Reconnects:    s.reconnects.Load(),
		Disconnects:   s.disconnects.Load(),
		Syncs:         s.syncs.Load(),
		Diffs:         s.diffs.Load(),
		Gaps:          s.gaps.Load(),
		Pings:         s.pings.Load(),
		Refreshes:     s.refreshes.Load(),
		Commands:      s.commands.Load(),
		CommandErrors: s.commandErrors.Load(),
		DroppedEvents: s.droppedEvents.Load(),
	}
}
