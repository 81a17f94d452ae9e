package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/demo"
	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/webhook"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// Defaults of the Config fields the server owns. The transport's defaults
// are poller's (poller.DefaultAddr, poller.DefaultOutbox, ...), the
// contract's are presence's (presence.DefaultTick, ...) and the JWT leeway
// is auth.DefaultLeeway: the server and the flags of cmd/presenced use those
// rather than their own.
const (
	DefaultAdminAddr            = "127.0.0.1:9090"
	DefaultDrain                = 10 * time.Second
	DefaultAdminShutdownTimeout = 5 * time.Second
)

// busLeaveTimeout bounds the bus's Leave at the end of a drain: the
// announcement that lets the other nodes act at once rather than after the
// lease's TTL. Redis unreachable then, they wait for the TTL.
const busLeaveTimeout = 2 * time.Second

// MinOutbox is the smallest Config.Outbox: the room kept for the answers
// to one message (presence.MaxReplyBytes) and as much again for room
// frames. A sync then has about 2 KiB: with ten typing users at the id
// limit it may list no member and be partial (its count is still right).
const MinOutbox = 2 * presence.MaxReplyBytes

// Config configures a Server. The zero value serves on 127.0.0.1:8080 with
// the admin listener on 127.0.0.1:9090; each field documents its default,
// which is the binary's too.
type Config struct {
	// Addr is the public listener; GET /ws upgrades to WebSocket.
	// Default "127.0.0.1:8080".
	Addr string
	// AdminAddr is the admin HTTP listener: /healthz, /readyz, /metrics,
	// /debug/pprof/ and the admin API (/api/, AdminToken). Keep it off the public network. Default "127.0.0.1:9090".
	AdminAddr string
	// Engine is the poller's I/O engine: "epoll" (default) or "netpoll".
	Engine string
	// AllowedOrigins lists the Origin values allowed to upgrade
	// ("https://app.example.com"); others get HTTP 403. Default: empty,
	// every origin is allowed.
	AllowedOrigins []string
	// MaxMessage is the largest message, after reassembly, in bytes; larger
	// ones close the connection with 1009. Default 4096.
	MaxMessage int
	// MaxConns caps the connections held at once. Default 0: no cap.
	MaxConns int
	// MaxConnsPerIP caps the connections from one IP. Default 0: no cap.
	MaxConnsPerIP int
	// Outbox bounds the bytes queued for one connection. Default 64 KiB;
	// at least MinOutbox. presence.MaxReplyBytes of it are kept for the
	// answers to a message (poller.Config.ReplyReserve): room frames never
	// take that room, and a message is read only while it is free.
	Outbox int
	// HandshakeTimeout closes connections that have not completed the HTTP
	// upgrade in time. Default 5 s.
	HandshakeTimeout time.Duration
	// AdminToken is the bearer token of the admin API (/api/, see
	// docs/admin.md); cmd/presenced reads it from -admin-token-file.
	// Default none: the API answers 403, except when Presence.Insecure
	// is set and AdminAddr is a loopback address (development), to
	// requests with a loopback Host and no Origin. /healthz, /readyz, /metrics
	// and /debug/pprof/ never ask for it.
	AdminToken []byte
	// AdminShutdownTimeout bounds how long the admin listener waits for
	// requests in flight (a CPU profile, a scrape) once the WebSocket side
	// has stopped. Default 5 s.
	AdminShutdownTimeout time.Duration
	// Presence configures the presence core: heartbeats, tick, grace, limits
	// and Insecure. Its Frame, Logger and Metrics are set by the server;
	// its MaxMessage is always the MaxMessage above, the limit the poller
	// enforces, so welcome announces exactly that. Its SyncBudget defaults
	// to half of Outbox, less if the reply reserve needs it (see
	// syncBudget).
	Presence presence.Config
	// JWT configures token verification. Set a key (HS256Secret or
	// PublicKeyPEM) unless Presence.Insecure is set or Presence.Auth is
	// given; without either the server refuses to start. A zero Leeway
	// allows auth.DefaultLeeway (5 s) of clock skew; auth.NoLeeway none.
	JWT auth.Config
	// Drain is the window over which clients are told to come back when the
	// server shuts down (bye.retry_ms is spread across it). Default 10 s.
	Drain time.Duration
	// Demo serves the demo page (internal/demo) at /demo on the public
	// listener, from memory: plain GET and HEAD of /demo, /demo/ and its
	// files (poller.Config.Pages). With Presence.Insecure it asks for a
	// name, otherwise for a token. Default false: /demo is 404.
	Demo bool
	// Logger receives the server's logs. Default: discard.
	Logger *slog.Logger
	// Redis, when set, joins this node to the others sharing that Redis
	// (internal/redisbus): every node sees the members of every node, and
	// a node's death is learnt from its lease. The server sets its Node
	// (Presence.Node, which is made random when empty), Logger and
	// Registerer (Registry), its Addr when empty (Addr above) and its
	// WatchTimeout when zero (Presence.WatchTimeout's). A Redis
	// outage never closes a client. Default nil: a single node, all in
	// memory.
	Redis *redisbus.Config
	// ReadyNeedsRedis makes /readyz answer 503 while the node does not hold
	// its Redis lease (not registered yet, Redis unreachable, or reaped).
	// Default false: /readyz ignores Redis, so that a Redis outage does not
	// take every node out of the load balancer at once.
	ReadyNeedsRedis bool
	// Webhook, when set, sends the rooms' membership transitions to an HTTP
	// receiver (internal/webhook, docs/webhooks.md). The server sets its
	// Node (Presence.Node), Tick (Presence.Tick), Logger and Registerer,
	// and hands the sender to the hub (a single node) or to the bus (with
	// Redis, which decides each transition once per cluster). Default nil:
	// no webhooks.
	Webhook *webhook.Config
	// Registry receives the server's collectors and is served on /metrics.
	// cmd/presenced passes one that also holds the Go and process
	// collectors. Default: a new registry of the server's own (never the
	// global one).
	Registry *prometheus.Registry
}

// withDefaults fills the defaults on a copy and validates it.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Addr == "" {
		cfg.Addr = poller.DefaultAddr
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = DefaultAdminAddr
	}
	if cfg.Engine == "" {
		cfg.Engine = poller.DefaultEngine
	}
	if cfg.MaxMessage == 0 {
		cfg.MaxMessage = poller.DefaultMaxMessage
	}
	if cfg.Outbox == 0 {
		cfg.Outbox = poller.DefaultOutbox
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = poller.DefaultHandshakeTimeout
	}
	if cfg.Drain == 0 {
		cfg.Drain = DefaultDrain
	}
	if cfg.AdminShutdownTimeout == 0 {
		cfg.AdminShutdownTimeout = DefaultAdminShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if (cfg.Redis != nil || cfg.Webhook != nil) && cfg.Presence.Node == "" {
		cfg.Presence.Node = presence.RandomNode() // the bus and the event ids name it
	}
	if cfg.Redis != nil {
		rc := *cfg.Redis // the caller's stays untouched
		rc.Node = cfg.Presence.Node
		if rc.Addr == "" {
			rc.Addr = cfg.Addr
		}
		if rc.WatchTimeout == 0 { // the bus's bound on a load is the hub's wait for it (both default alike)
			rc.WatchTimeout = cfg.Presence.WatchTimeout
		}
		if rc.LeaveGrace == 0 { // the bus defaults it as the hub does
			rc.LeaveGrace = cfg.Presence.LeaveGrace
		}
		rc.Logger = cfg.Logger
		rc.Registerer = cfg.Registry
		cfg.Redis = &rc
	}
	if cfg.Webhook != nil {
		wc := *cfg.Webhook
		wc.Node = cfg.Presence.Node
		if wc.Tick == 0 {
			wc.Tick = cmp.Or(cfg.Presence.Tick, presence.DefaultTick)
		}
		wc.Logger = cfg.Logger
		wc.Registerer = cfg.Registry
		cfg.Webhook = &wc
	}
	switch {
	case cfg.Engine != poller.EngineEpoll && cfg.Engine != poller.EngineNetpoll:
		return cfg, fmt.Errorf("server: unknown engine %q (want %q or %q)", cfg.Engine, poller.EngineEpoll, poller.EngineNetpoll)
	case cfg.MaxMessage < 0:
		return cfg, fmt.Errorf("server: MaxMessage %d is negative", cfg.MaxMessage)
	case cfg.Outbox < MinOutbox:
		return cfg, fmt.Errorf("server: Outbox %d is less than %d: no room for the answers to a message beside a sync", cfg.Outbox, MinOutbox)
	case cfg.MaxConns < 0:
		return cfg, fmt.Errorf("server: MaxConns %d is negative", cfg.MaxConns)
	case cfg.MaxConnsPerIP < 0:
		return cfg, fmt.Errorf("server: MaxConnsPerIP %d is negative", cfg.MaxConnsPerIP)
	case cfg.HandshakeTimeout < 0:
		return cfg, fmt.Errorf("server: HandshakeTimeout %v is negative", cfg.HandshakeTimeout)
	case cfg.Drain < 0:
		return cfg, fmt.Errorf("server: Drain %v is negative", cfg.Drain)
	case cfg.AdminShutdownTimeout < 0:
		return cfg, fmt.Errorf("server: AdminShutdownTimeout %v is negative", cfg.AdminShutdownTimeout)
	}
	return cfg, nil
}

// Server is one presenced node: the WebSocket listener and the admin
// listener. Run is called once; the other methods are safe for concurrent
// use.
type Server struct {
	cfg     Config          // static after construction
	log     *slog.Logger    // static after construction
	metrics *metrics        // static after construction
	poller  *poller.Server  // static after construction
	hub     *presence.Hub   // static after construction
	bus     *redisbus.Bus   // static after construction; nil: a single node
	hooks   *webhook.Sender // static after construction; nil: no webhooks
	admin   *http.Server    // static after construction
	adminLn net.Listener    // static after construction; closed by admin

	closeLogs logLimiter
	draining  atomic.Bool // set once StopAccepting or shutdown began: /readyz fails
	ran       atomic.Bool // Run was called
}

// New binds both listeners; connections are served once Run is called.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		metrics:   m,
		closeLogs: logLimiter{max: 20},
	}
	if cfg.Webhook != nil {
		if s.hooks, err = webhook.New(*cfg.Webhook); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		if cfg.Redis != nil {
			rc := *cfg.Redis
			rc.Events = s.hooks
			cfg.Redis = &rc
		} else {
			cfg.Presence.Events = s.hooks
		}
		s.cfg = cfg
	}
	if cfg.Redis != nil {
		if s.bus, err = redisbus.New(*cfg.Redis); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	if s.hub, err = newHub(cfg, m, s.bus); err != nil {
		return nil, err
	}
	// The admin listener first: unlike the poller's, it can be released
	// if the other one fails.
	s.adminLn, err = net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("server: admin listener: %w", err)
	}
	s.admin = s.newAdminServer()
	var pages map[string][]byte
	if cfg.Demo {
		if pages, err = demo.Pages(demo.Config{WSPath: poller.DefaultPath, Insecure: cfg.Presence.Insecure}); err != nil {
			s.adminLn.Close()
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	s.poller, err = poller.New(poller.Config{
		Addr:             cfg.Addr,
		Engine:           cfg.Engine,
		AllowedOrigins:   cfg.AllowedOrigins,
		MaxMessage:       cfg.MaxMessage,
		MaxConns:         cfg.MaxConns,
		MaxConnsPerIP:    cfg.MaxConnsPerIP,
		Outbox:           cfg.Outbox,
		ReplyReserve:     presence.MaxReplyBytes,
		HandshakeTimeout: cfg.HandshakeTimeout,
		Pages:            pages,
		Logger:           cfg.Logger,
		OnReject: func(r poller.RejectReason) {
			if r == poller.RejectPage { // not a failure
				m.pagesServed.Inc()
				return
			}
			m.handshakeErr.inc(int(r), r.String())
		},
		OnPanic: func(any) { m.panics.Inc() },
	}, &handler{s: s, app: presenceApp{hub: s.hub, closes: m.closed}})
	if err != nil {
		s.adminLn.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	return s, nil
}

// Addr is the address of the WebSocket listener (useful with port 0).
func (s *Server) Addr() netip.AddrPort { return s.poller.Addr() }

// AdminAddr is the address of the admin listener (useful with port 0).
func (s *Server) AdminAddr() netip.AddrPort {
	return s.adminLn.Addr().(*net.TCPAddr).AddrPort()
}

// StopAccepting begins a drain: /readyz answers 503, presenced_draining is
// 1 and the WebSocket listener is closed; open connections stay until Run's
// context is done.
func (s *Server) StopAccepting() {
	s.beginDrain()
	s.poller.StopAccepting()
}

// beginDrain marks the node draining: /readyz fails and presenced_draining
// is 1 from now until the process exits.
func (s *Server) beginDrain() {
	s.draining.Store(true)
	s.metrics.draining.Set(1)
}

var errRunTwice = errors.New("server: Run called twice")

// Run serves until ctx is done, then drains: the listener closes, /readyz
// answers 503 (and presenced_draining is 1), every client gets bye
// (retry_ms spread over Config.Drain) and close 1001, and Run waits for
// their closing handshakes (at most drainCloseWait) before stopping the
// poller. A drained connection's members stay for its retry_ms plus the
// leave grace (presence.Hub.Drain). With Redis, the node then stays in the
// cluster (lease renewed, its members visible to the other nodes) until
// Config.Drain has passed since the drain began, or sooner once it holds no
// member, before the bus's Leave (so that the other nodes give the members
// still held their leave grace at once: every drained client that comes
// back elsewhere when told finds itself still there). Then the bus stops,
// the presence hub, the webhook sender (one last try, at most 2 s, for what
// is queued) and, last, the admin listener (so a scrape can still see the
// drain). Without Redis there is no wait: the node's members go with it.
// Run returns once every goroutine it started has stopped; the error joins
// those of both listeners and of the bus. A bus that stops on its own stops
// the node.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errRunTwice
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The poller and the hub outlive ctx: they serve the drain.
	pollCtx, stopPoll := context.WithCancel(context.Background())
	defer stopPoll()
	hubCtx, stopHub := context.WithCancel(context.Background())
	defer stopHub()
	busCtx, stopBus := context.WithCancel(context.Background())
	defer stopBus()

	var wg sync.WaitGroup
	var pollErr, adminErr, busErr error
	pollDone := make(chan struct{})
	wg.Go(func() {
		defer close(pollDone)
		defer cancel() // the poller stopping on its own stops the node
		pollErr = s.poller.Run(pollCtx)
	})
	hubDone := make(chan struct{})
	wg.Go(func() {
		defer close(hubDone)
		_ = s.hub.Run(hubCtx)
	})
	// The webhook sender outlives the hub: the drain's transitions are
	// queued by the hub's last flushes.
	hooksCtx, stopHooks := context.WithCancel(context.Background())
	defer stopHooks()
	if s.hooks != nil {
		wg.Go(func() { _ = s.hooks.Run(hooksCtx) })
	}
	busDone := make(chan struct{})
	if s.bus == nil {
		close(busDone)
	} else {
		wg.Go(func() {
			defer close(busDone)
			err := s.bus.Run(busCtx, s.hub)
			if ctx.Err() == nil { // not the drain's Leave: the bus failed
				busErr = fmt.Errorf("server: redis bus stopped: %w", cmp.Or(err, errBusStopped))
				cancel()
			} else if err != nil && !errors.Is(err, context.Canceled) {
				busErr = fmt.Errorf("server: redis bus: %w", err)
			}
		})
	}
	wg.Go(func() {
		defer cancel()
		if err := s.admin.Serve(s.adminLn); !errors.Is(err, http.ErrServerClosed) {
			adminErr = fmt.Errorf("server: admin listener: %w", err)
		}
	})
	s.log.Info("serving", keyAddr, s.Addr().String(), keyAdminAddr, s.AdminAddr().String(),
		keyEngine, s.cfg.Engine, keyNode, s.hub.Node())
	if s.cfg.Demo {
		s.log.Info("demo page", keyURL, "http://"+s.Addr().String()+demo.Prefix)
	}

	<-ctx.Done()
	s.beginDrain()
	s.poller.StopAccepting()
	s.log.Info("draining", keyConns, s.hub.Stats().Sessions, keyWindow, s.cfg.Drain.String())
	drained := time.Now()
	s.hub.Drain(s.cfg.Drain)
	s.awaitSessions(pollDone, drainCloseWait)
	stopPoll()
	<-pollDone
	s.awaitHolds(drained.Add(s.cfg.Drain), busDone)
	s.leaveBus()
	stopBus()
	<-busDone
	stopHub()
	<-hubDone
	stopHooks()
	sctx, scancel := context.WithTimeout(context.Background(), s.cfg.AdminShutdownTimeout)
	if err := s.admin.Shutdown(sctx); err != nil {
		s.admin.Close() // requests still running: cut them
	}
	scancel()
	wg.Wait()
	s.log.Info("stopped")
	return errors.Join(pollErr, adminErr, busErr)
}

var errBusStopped = errors.New("its Run returned")

// leaveBus ends the node's part in the cluster once the drain window has
// passed (awaitHolds): the bus announces it and removes its lease, and the
// other nodes give the members this node still held their leave grace at
// once, so clients that reconnect to them within it cause no leave
// anywhere.
func (s *Server) leaveBus() {
	if s.bus == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), busLeaveTimeout)
	defer cancel()
	if err := s.bus.Leave(ctx); err != nil {
		s.log.Warn("redis bus: leave failed; the other nodes wait for this node's lease to expire", keyErr, err.Error())
	}
}

// drainCloseWait bounds the wait for clients to answer the drain's close
// frames: the poller's default close timeout plus a margin. deploy/check's
// k8s_test.go has a copy for its stop-time bound (TestDrainCloseWaitCopy).
const drainCloseWait = 3 * time.Second

// awaitHolds keeps a drained node in the cluster until the last retry_ms
// its clients were told (until), or until it holds no member, or the bus
// stops, or the bus is down (Bus.Up: the lease was not renewed for a
// node-ttl, so Redis is unreachable and the other nodes declare this node
// dead and give its members their leave grace: holding on only delays the
// exit). Its members stay visible meanwhile, each for its own retry_ms
// plus the leave grace; the other nodes then keep those still held for the
// leave grace after the Leave. So a client is held for at least its
// retry_ms plus the leave grace everywhere. A single node does not wait.
func (s *Server) awaitHolds(until time.Time, busDone <-chan struct{}) {
	if s.bus == nil || s.hub.Stats().Members == 0 || !time.Now().Before(until) {
		return
	}
	s.log.Info("holding the drained members in the cluster", keyMembers, s.hub.Stats().Members,
		keyWait, time.Until(until).Round(time.Millisecond).String())
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for s.hub.Stats().Members > 0 && time.Now().Before(until) {
		if !s.bus.Up() {
			s.log.Warn("redis bus down (lease not renewed): not holding the drained members; the other nodes give them leave grace once this node's lease expires",
				keyMembers, s.hub.Stats().Members, keyWait, time.Until(until).Round(time.Millisecond).String())
			return
		}
		select {
		case <-busDone:
			return
		case <-tick.C:
		}
	}
}

// awaitSessions waits until every session has closed, the poller has
// stopped, or max passes.
func (s *Server) awaitSessions(pollDone <-chan struct{}, max time.Duration) {
	deadline := time.Now().Add(max)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.hub.Stats().Sessions > 0 && time.Now().Before(deadline) {
		select {
		case <-pollDone:
			return
		case <-tick.C:
		}
	}
}

// handler receives the poller's callbacks, counts and logs them and passes
// each on to the application. It runs on the poller's goroutines and does
// bounded work.
type handler struct {
	s   *Server     // static
	app presenceApp // static
}

var _ poller.Handler = (*handler)(nil)

func (h *handler) OnOpen(c *poller.Conn) {
	h.s.metrics.opened.Inc()
	h.s.metrics.active.Inc()
	h.app.OnOpen(c)
}

func (h *handler) OnMessage(c *poller.Conn, op ws.OpCode, msg []byte) {
	h.s.metrics.received.Inc()
	h.app.OnMessage(c, op, msg)
}

func (h *handler) OnDeadline(c *poller.Conn) { h.app.OnDeadline(c) }

// OnClose ends the session; presence counts the close by its reason
// (presenced_connections_closed_total).
func (h *handler) OnClose(c *poller.Conn, info poller.CloseInfo) {
	h.s.metrics.active.Dec()
	reason := h.app.OnClose(c, info)
	h.s.logClose(c, info, reason)
}

// logClose logs the end of a connection with presence's reason, the close
// code and the poller's view: protocol violations at Info, everything else
// at Debug, both rate-limited.
func (s *Server) logClose(c *poller.Conn, info poller.CloseInfo, reason presence.CloseReason) {
	level := slog.LevelDebug
	if reason == presence.CloseProtocol {
		level = slog.LevelInfo
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	ok, suppressed := s.closeLogs.allow(time.Now())
	if !ok {
		return
	}
	attrs := []slog.Attr{
		slog.Uint64(keyConn, c.ID()),
		slog.String(keyRemote, c.RemoteAddr().String()),
		slog.String(keyReason, reason.String()),
		slog.Int(keyCode, int(info.Code)),
		slog.String(keyTransport, info.Reason.String()),
	}
	if info.Err != nil {
		attrs = append(attrs, slog.String(keyErr, info.Err.Error()))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int(keySuppressed, suppressed))
	}
	s.log.LogAttrs(ctx, level, "connection closed", attrs...)
}
