package webhook

import (
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/presence"
)

// Defaults of Config.
const (
	DefaultTick        = 100 * time.Millisecond
	DefaultQueue       = 10000
	DefaultMaxBatch    = 500
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 8
	DefaultMinBackoff  = 250 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	// finalTry bounds the one attempt at shutdown for what is queued.
	finalTry = 2 * time.Second
)

// Config configures a Sender. URL and Secret are required; every other
// field's zero value is its default.
type Config struct {
	URL    string // the receiver (http or https)
	Secret []byte // the HMAC key
	// OtherSecrets are more HMAC keys, for a rotation: every request is
	// signed with Secret and with each of them, the signature header
	// listing one "v1=" per key, Secret's first (see SignKeys).
	OtherSecrets [][]byte
	// Node names the events that come without an id:
	// "<Node>-<start>-<n>", start being 8 random hex digits drawn by New
	// (a restarted node does not reuse ids). Default "presenced".
	Node string
	// Tick is the batching window: at most one POST per tick. Default 100 ms.
	Tick time.Duration
	// Queue bounds the events waiting to be sent. A RoomEvents call that
	// does not fit is dropped whole and counted (a call of more than Queue
	// events never fits). Default 10000.
	Queue int
	// MaxBatch is the most events in one POST. Default 500.
	MaxBatch int
	// Timeout bounds one POST. Default 10 s.
	Timeout time.Duration
	// MaxAttempts per batch before it is dropped. Default 8.
	MaxAttempts int
	// MinBackoff and MaxBackoff: the wait before retry n is random in
	// [0, min(MaxBackoff, MinBackoff × 2^n)], or a 429's or 503's
	// Retry-After if that is longer, up to MaxBackoff. Defaults 250 ms and
	// 30 s.
	MinBackoff, MaxBackoff time.Duration
	// Client sends the requests. Default: an http.Client with Timeout and
	// a transport of its own (a clone of http.DefaultTransport), whose idle
	// connections Run closes when it returns. The Sender uses a copy that
	// does not follow redirects: a 3xx is final (a redirected POST would be
	// replayed as a GET).
	Client *http.Client
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer for the metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

func (cfg Config) withDefaults() (Config, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case err != nil:
		return cfg, fmt.Errorf("webhook: URL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return cfg, fmt.Errorf("webhook: URL %q is not an http(s) URL", cfg.URL)
	case len(cfg.Secret) == 0:
		return cfg, errors.New("webhook: no Secret: requests must be signed")
	case slices.ContainsFunc(cfg.OtherSecrets, func(k []byte) bool { return len(k) == 0 }):
		return cfg, errors.New("webhook: an empty key in OtherSecrets")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	num := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	def(&cfg.Tick, DefaultTick)
	def(&cfg.Timeout, DefaultTimeout)
	def(&cfg.MinBackoff, DefaultMinBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	num(&cfg.Queue, DefaultQueue)
	num(&cfg.MaxBatch, DefaultMaxBatch)
	num(&cfg.MaxAttempts, DefaultMaxAttempts)
	if cfg.Node == "" {
		cfg.Node = "presenced"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout, Transport: newTransport()}
	}
	c := *cfg.Client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.Client = &c
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// newTransport is the default client's: not http.DefaultTransport, which
// others share, so that Run can close its idle connections.
func newTransport() *http.Transport {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		return t.Clone()
	}
	return &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}
}

// Payload is one event as the receiver gets it (the body is a JSON array
// of them).
type Payload struct {
	ID   string `json:"id"`
	TS   int64  `json:"ts"` // Unix milliseconds
	Type string `json:"type"`
	Room string `json:"room"`
	User string `json:"user,omitempty"`
}

// Sender queues events and POSTs them. See the package doc.
type Sender struct {
	cfg    Config       // static after New
	log    *slog.Logger // static after New
	m      *metrics     // static after New
	prefix string       // static after New: of the ids the sender gives
	keys   [][]byte     // static after New: Secret then OtherSecrets
	// jitter draws the wait before a retry in [0, ceil]; tests replace it
	// before Run.
	jitter func(ceil time.Duration) time.Duration
	// own is the default client's transport (static after New; nil with
	// Config.Client): Run closes its idle connections when it returns.
	own *http.Transport

	mu    sync.Mutex
	queue []Payload // guarded by mu: oldest first, at most cfg.Queue
	seq   uint64    // guarded by mu: the last id given to an event without one
}

var _ presence.Events = (*Sender)(nil)

// New checks cfg and builds a Sender; call Run to send.
func New(cfg Config) (*Sender, error) {
	ownClient := cfg.Client == nil
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var start [4]byte
	_, _ = crand.Read(start[:])
	s := &Sender{cfg: cfg, log: cfg.Logger, prefix: cfg.Node + "-" + hex.EncodeToString(start[:]) + "-",
		keys:   append([][]byte{cfg.Secret}, cfg.OtherSecrets...),
		jitter: func(ceil time.Duration) time.Duration { return rand.N(min(ceil, math.MaxInt64-1) + 1) }}
	if ownClient {
		s.own = cfg.Client.Transport.(*http.Transport)
	}
	if s.m, err = newMetrics(cfg.Registerer, s.queued); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	return s, nil
}

func (s *Sender) queued() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return float64(len(s.queue))
}

// RoomEvents queues the room's events, in order, without blocking. They
// are one step of the room (a member removed and the room vacated, say):
// if they do not all fit the queue, they are all dropped and counted,
// never a part of them. Events without an id take the next ids even when
// dropped, so that a gap in the ids shows the loss. It does not keep evs.
func (s *Sender) RoomEvents(room string, evs []presence.Event) {
	s.mu.Lock()
	fits := len(s.queue)+len(evs) <= s.cfg.Queue
	for _, e := range evs {
		id := e.ID
		if id == "" {
			s.seq++
			id = s.prefix + strconv.FormatUint(s.seq, 10)
		}
		if fits {
			s.queue = append(s.queue, Payload{ID: id, TS: e.Time.UnixMilli(), Type: e.Type.String(), Room: room, User: e.User})
		}
	}
	s.mu.Unlock()
	if !fits {
		s.m.events.WithLabelValues(resultDroppedQueue).Add(float64(len(evs)))
	}
}

// take removes and returns up to max of the oldest queued events.
func (s *Sender) take(max int) []Payload {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.queue), max)
	if n == 0 {
		return nil
	}
	batch := make([]Payload, n)
	copy(batch, s.queue)
	rest := copy(s.queue, s.queue[n:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
	if rest == 0 && cap(s.queue) > 1024 {
		s.queue = nil // give back what a burst grew
	}
	return batch
}
