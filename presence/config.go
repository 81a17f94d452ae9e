package presence

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"runtime"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// Sink is the connection a Session sends to. *poller.Conn satisfies it
// through a thin adapter in internal/server. Every method must be safe for
// concurrent use and must never block.
type Sink interface {
	// Send queues a copy of one frame (as built by Config.Frame): the
	// caller reuses frame's bytes once Send returns, so replies cost no
	// allocation. An error means the frame was not queued (the outbox is
	// full, or the connection is closing). Presence Sends replies and
	// session frames (welcome, ack, err, pong, ping, refresh, bye).
	Send(frame []byte) error
	// Offer queues a room frame (a diff or a sync) without copying it: the
	// sink keeps a reference, the same bytes go to every subscriber and
	// are never modified afterwards. Room frames may be dropped and made
	// up for with a sync: Offer must leave the room the transport keeps
	// for a message's replies, so fan-outs never crowd them out.
	Offer(frame []byte) error
	// Close starts closing the connection with code. It reports whether it
	// did: false when the connection was already closing (the client or
	// the transport started the end).
	Close(code wire.CloseCode, reason string) (started bool)
	// SetDeadline asks for one HandleDeadline call once t passes; the zero t
	// clears it. A new deadline replaces the previous one.
	SetDeadline(t time.Time)
	// Buffered is the number of bytes queued and not yet written.
	Buffered() int
}

// Identity is who a connection speaks for, from its token.
type Identity struct {
	User    string
	Expires time.Time   // zero: never
	Rooms   RoomMatcher // nil: every room
}

// RoomMatcher says which rooms an identity may join. Allows must not keep
// room past the call: it may alias the client's message.
type RoomMatcher interface {
	Allows(room string) bool
}

// Authenticator verifies the token of a hello or an auth command. An error
// wrapping ErrUnauthorized refuses the token (close 4101); any other error is
// an internal failure (err internal). The token is the Authenticator's to
// keep (a cache may hold it): the session passes a copy.
type Authenticator interface {
	Authenticate(token string) (Identity, error)
}

// ErrUnauthorized is what an Authenticator wraps when it refuses a token.
var ErrUnauthorized = errors.New("presence: unauthorized")

// Counter is the part of a Prometheus counter presence uses.
type Counter interface{ Add(float64) }

// Observer is the part of a Prometheus histogram presence uses.
type Observer interface{ Observe(float64) }

// LabeledCounter counts events by a label value (a CounterVec adapter).
type LabeledCounter interface{ Inc(label string) }

// CloseCounter counts ended connections by reason. An adapter typically
// holds one counter per CloseReasons value, created up front, indexed by
// the reason.
type CloseCounter interface{ Inc(CloseReason) }

// Metrics receives presence's measurements. Nil fields are not recorded.
// Gauges (rooms, members, sessions) are read with Hub.Stats.
type Metrics struct {
	HelloFailures   LabeledCounter // by reason: timeout, bad_request, unauthorized, version, internal
	Closes          CloseCounter   // connections ended (HandleClose), by CloseReason
	Joins           Counter        // members that joined a room (users, not connections)
	Leaves          Counter        // members that left a room
	Updates         Counter        // member state changes
	TypingEvents    Counter        // typing commands applied
	Diffs           Counter        // room diffs published (encoded once each); a version sent to the whole room as a sync is not one
	FramesSent      Counter        // frames handed to connections
	SendFailures    Counter        // frames a connection did not take (outbox full, or closing)
	BytesSent       Counter        // bytes of those frames
	Coalesced       Counter        // changes merged into a later one within a tick
	DroppedDiffs    Counter        // diffs not delivered to a full connection
	SlowCloses      Counter        // connections closed with 4002 (the first close of the session)
	ResumeAttempts  Counter        // rooms a hello asked to resume
	ResumeSuccesses Counter        // rooms resumed with a diff rather than a sync
	Refreshes       Counter        // auth commands that renewed a token
	RefreshFailures Counter        // auth commands refused
	RateLimited     Counter        // commands refused or coalesced by the rate limit
	ConnLifetime    Observer       // seconds from open to close
	HeartbeatRTT    Observer       // seconds, from the pongs of server pings
	FanoutLatency   Observer       // seconds from a room's first change in a tick to its diff handed to every subscriber
	OutboxDepth     Observer       // bytes queued for a connection, sampled at each server ping
}

// Defaults of Config: what a zero field means (Node defaults to 8 random
// hex digits, Workers to runtime.GOMAXPROCS(0)). They are the contract's
// settings (docs/protocol.md) and are defined here only: the flags of
// cmd/presenced use them.
const (
	DefaultHeartbeatInterval = 25 * time.Second
	DefaultHeartbeatTimeout  = 10 * time.Second
	DefaultHelloTimeout      = 10 * time.Second
	DefaultTick              = 100 * time.Millisecond
	DefaultLeaveGrace        = 5 * time.Second
	DefaultTypingTTL         = 6 * time.Second
	DefaultListLimit         = 1000
	DefaultMaxRooms          = 64
	DefaultSlowTimeout       = 10 * time.Second
	DefaultAuthGrace         = 30 * time.Second
	DefaultRefreshBefore     = 60 * time.Second
	DefaultRate              = 20 // commands per second
	DefaultBurst             = 40
	DefaultFloodSeconds      = 3
	DefaultHistory           = 256
	DefaultHistoryAge        = 60 * time.Second
	DefaultWatchTimeout      = 500 * time.Millisecond
)

// Config configures a Hub. The zero value works: each field states its
// default. Durations and limits are the contract's settings.
type Config struct {
	// Node names this node in welcome. Default: 8 random hex digits.
	Node string
	// HeartbeatInterval (hb) is the period of server pings. Default 25 s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout: a connection silent for hb + this is closed with
	// 4001. Default 10 s.
	HeartbeatTimeout time.Duration
	// HelloTimeout: a connection without hello this long is closed with 4004.
	// Default 10 s.
	HelloTimeout time.Duration
	// Tick is the coalescing window: each room sends at most one diff per
	// tick. Default 100 ms.
	Tick time.Duration
	// LeaveGrace keeps a member whose connection was lost (not left) this
	// long. Default 5 s.
	LeaveGrace time.Duration
	// TypingTTL: a typing user stops typing after this without another
	// typing on. Default 6 s.
	TypingTTL time.Duration
	// ListLimit: rooms with more members are sent partially. Default 1000.
	ListLimit int
	// MaxRooms a connection may join. Default 64.
	MaxRooms int
	// MaxMessage is the transport's limit on a client message, in bytes,
	// announced in welcome; presence does not enforce it, the transport
	// does, so it has no default of its own: give the transport's value
	// (internal/server passes the one it gives the poller). Default 0:
	// welcome says max 0, "not stated".
	MaxMessage int
	// SlowTimeout closes with 4002 a connection one of whose subscriptions
	// has been owed a sync (its outbox could not take a room frame) this
	// long without the sync getting through. Default 10 s.
	SlowTimeout time.Duration
	// AuthGrace: a connection whose token expired and was not renewed within
	// this is closed with 4003. Default 30 s.
	AuthGrace time.Duration
	// RefreshBefore is how long before a token's exp the server sends
	// refresh. Default 60 s.
	RefreshBefore time.Duration
	// Rate is the sustained commands per second of one connection. Default 20.
	Rate float64
	// Burst is the commands a connection may send at once. Default 40.
	Burst int
	// FloodSeconds: a connection that sends more than twice Rate for this
	// many consecutive seconds is closed with 4029. Default 3.
	FloodSeconds int
	// History is the number of room versions kept for resume. Default 256.
	History int
	// HistoryAge drops versions older than this: when the room changes,
	// and, in an idle room, by the hub's history sweep (every HistoryAge/8,
	// at least Tick), so a version is gone at most that period after it
	// expired. Default 60 s.
	HistoryAge time.Duration
	// SyncBudget bounds the payload of one sync: members beyond it are left
	// out and the sync is partial, so that a sync fits the Sink's outbox.
	// It depends on that outbox, which presence does not know, so it has no
	// default of its own: internal/server sets it to half its Outbox.
	// Default 0: no bound in bytes (ListLimit still applies).
	SyncBudget int
	// Insecure lets hello name its user without a token (development).
	Insecure bool
	// Auth verifies tokens. Nil: only insecure hellos are accepted.
	Auth Authenticator
	// Frame wraps an encoded message for the transport (a WebSocket text
	// frame), appending to dst. Default: the payload itself.
	Frame func(dst, payload []byte) []byte
	// Workers is the number of goroutines that flush rooms. Default
	// runtime.GOMAXPROCS(0).
	Workers int
	// Logger receives rare diagnostics. Default: discard.
	Logger *slog.Logger
	// Metrics receives measurements. Default: none.
	Metrics Metrics
	// Bus shares presence with other nodes (internal/redisbus). Default:
	// nil, a single node, all in memory.
	Bus Bus
	// Events receives the rooms' membership transitions (webhooks), on a
	// single node only (see Events). Default: nil, none.
	Events Events
	// WatchTimeout bounds how long the first local subscribers of a room
	// wait for the other nodes' members (Bus.Watch until Hub.Loaded)
	// before their sync goes with what this node knows; the rest follows
	// as diffs. Only with a Bus. Default 500 ms.
	WatchTimeout time.Duration
}

// RandomNode is the default Config.Node: 8 random hex digits. (A caller
// that needs the node's name before the Hub exists, for a Bus, draws it
// with this.)
func RandomNode() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (cfg Config) withDefaults() (Config, error) {
	dur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	num := func(n *int, def int) {
		if *n <= 0 {
			*n = def
		}
	}
	if cfg.Node == "" {
		cfg.Node = RandomNode()
	}
	if !wire.ValidID(cfg.Node) {
		return cfg, errors.New("presence: Node must be 1-128 bytes of [A-Za-z0-9._:@/-]")
	}
	dur(&cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	dur(&cfg.HeartbeatTimeout, DefaultHeartbeatTimeout)
	dur(&cfg.HelloTimeout, DefaultHelloTimeout)
	dur(&cfg.Tick, DefaultTick)
	dur(&cfg.LeaveGrace, DefaultLeaveGrace)
	dur(&cfg.TypingTTL, DefaultTypingTTL)
	dur(&cfg.SlowTimeout, DefaultSlowTimeout)
	dur(&cfg.AuthGrace, DefaultAuthGrace)
	dur(&cfg.RefreshBefore, DefaultRefreshBefore)
	dur(&cfg.HistoryAge, DefaultHistoryAge)
	dur(&cfg.WatchTimeout, DefaultWatchTimeout)
	num(&cfg.ListLimit, DefaultListLimit)
	num(&cfg.MaxRooms, DefaultMaxRooms)
	num(&cfg.Burst, DefaultBurst)
	num(&cfg.FloodSeconds, DefaultFloodSeconds)
	num(&cfg.History, DefaultHistory)
	num(&cfg.SyncBudget, math.MaxInt) // no bound
	num(&cfg.Workers, runtime.GOMAXPROCS(0))
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.MaxMessage < 0 {
		return cfg, errors.New("presence: negative MaxMessage")
	}
	if cfg.Frame == nil {
		cfg.Frame = func(dst, payload []byte) []byte { return append(dst, payload...) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Auth == nil && !cfg.Insecure {
		return cfg, errors.New("presence: no Authenticator and not Insecure: no client could say hello")
	}
	cfg.Metrics = cfg.Metrics.withDefaults()
	return cfg, nil
}

type nopCounter struct{}

func (nopCounter) Add(float64)     {}
func (nopCounter) Observe(float64) {}
func (nopCounter) Inc(string)      {}

type nopCloses struct{}

func (nopCloses) Inc(CloseReason) {}

func (m Metrics) withDefaults() Metrics {
	for _, c := range []*Counter{&m.Joins, &m.Leaves, &m.Updates, &m.TypingEvents, &m.Diffs,
		&m.FramesSent, &m.SendFailures, &m.BytesSent, &m.Coalesced, &m.DroppedDiffs, &m.SlowCloses,
		&m.ResumeAttempts, &m.ResumeSuccesses, &m.Refreshes, &m.RefreshFailures, &m.RateLimited} {
		if *c == nil {
			*c = nopCounter{}
		}
	}
	for _, o := range []*Observer{&m.ConnLifetime, &m.HeartbeatRTT, &m.FanoutLatency, &m.OutboxDepth} {
		if *o == nil {
			*o = nopCounter{}
		}
	}
	if m.HelloFailures == nil {
		m.HelloFailures = nopCounter{}
	}
	if m.Closes == nil {
		m.Closes = nopCloses{}
	}
	return m
}
