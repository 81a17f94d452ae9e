package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"time"

	"github.com/gobwas/ws"
)

// Handler receives the events of upgraded connections. The poller calls it
// from its own goroutines (an event loop for the epoll engine, a pool
// goroutine for netpoll). Calls for one connection never overlap and come in
// order: OnOpen, then any number of OnMessage and OnDeadline, then OnClose
// exactly once. Callbacks must return quickly and never block: they run on
// the event loop.
//
// A panic in a callback is recovered by the poller, on both engines: it is
// logged with its stack (Config.Logger, level Error, rate-limited), reported
// to Config.OnPanic, and the connection whose callback panicked is closed
// with 1011 (CloseInfo.Reason ClosePanic; a panic in OnClose closes nothing,
// the connection is gone). Every other connection keeps being served. The
// poller cannot undo what the callback left half done: a handler that holds
// its own locks across code that may panic must release them in defers.
type Handler interface {
	// OnOpen is called once the WebSocket upgrade has been sent.
	OnOpen(c *Conn)
	// OnMessage is called with one complete message, reassembled from its
	// fragments. op is ws.OpText or ws.OpBinary. msg is only valid until
	// OnMessage returns.
	OnMessage(c *Conn, op ws.OpCode, msg []byte)
	// OnDeadline is called when the deadline set by Conn.SetDeadline passes.
	// The deadline is cleared before the call.
	OnDeadline(c *Conn)
	// OnClose is called once, after the connection's socket is closed.
	OnClose(c *Conn, info CloseInfo)
}

// Engine names accepted by Config.Engine.
const (
	EngineEpoll   = "epoll"
	EngineNetpoll = "netpoll"
)

// Defaults of Config: what a zero field means (Loops defaults to
// runtime.GOMAXPROCS(0)). They are defined here only: internal/server and
// the flags of cmd/presenced use them.
const (
	DefaultAddr             = "127.0.0.1:8080"
	DefaultEngine           = EngineEpoll
	DefaultPath             = "/ws"
	DefaultMaxMessage       = 4096
	DefaultMaxHeaderBytes   = 8192
	DefaultOutbox           = 64 << 10
	MaxOutbox               = 1 << 30 // a connection's queued bytes fit an int32, with room for the frames the bound lets past
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultCloseTimeout     = 2 * time.Second
	DefaultTick             = 100 * time.Millisecond
)

// Config configures a Server. The zero value is usable: each field documents
// its default.
type Config struct {
	// Addr is the TCP address to listen on. Default "127.0.0.1:8080".
	Addr string
	// Engine selects the I/O engine: "epoll" (default) or "netpoll".
	Engine string
	// Loops is the number of event loops of the epoll engine.
	// Default runtime.GOMAXPROCS(0).
	Loops int
	// Path is the only HTTP path that upgrades; others get 404 unless
	// Pages has them. Default "/ws".
	Path string
	// Pages maps a path ("/demo") to the complete HTTP response a GET of it
	// gets: status line, headers (Content-Length and "Connection: close"
	// included), blank line and body, encoded once by the caller. A HEAD
	// gets the same bytes up to the blank line. The request line must be
	// exactly "GET" or "HEAD", the path (origin form, or absolute form
	// "http://host/demo") and "HTTP/1.1" or "HTTP/1.0", single spaces
	// between; the query string is ignored. Other request lines, other
	// methods, paths not listed and Path itself are handled as without
	// Pages. The response is written from the caller's slice,
	// never copied, and whole whatever its size (Outbox does not bound it;
	// HandshakeTimeout bounds the time to write it), then the connection
	// is closed as after any refused request: the write side is shut down
	// and input is discarded until the client's EOF (at most 64 KiB, for at
	// most CloseTimeout), so that a byte sent after the request cannot make
	// the kernel reset the connection before the client has read the
	// response. It is reported to OnReject as RejectPage. The lookup runs
	// on the event loop and costs no allocation. New copies the map; the
	// responses must not be modified afterwards. Default nil: every path
	// but Path gets 404.
	Pages map[string][]byte
	// AllowedOrigins lists the Origin header values allowed to upgrade,
	// compared case-insensitively ("https://app.example.com"). A request with
	// an Origin outside the list gets HTTP 403. Requests without an Origin
	// header (non-browser clients) are allowed. Empty allows every origin.
	AllowedOrigins []string
	// MaxMessage is the largest message accepted, after reassembly, in bytes;
	// larger ones close the connection with 1009. Default 4096.
	MaxMessage int
	// MaxHeaderBytes bounds the HTTP upgrade request. Default 8192.
	MaxHeaderBytes int
	// MaxConns caps the connections held at once (including those still
	// upgrading); beyond it an upgrade gets HTTP 503. Default 0: no cap
	// other than the open-file limit.
	MaxConns int
	// MaxConnsPerIP caps the connections from one remote IP; beyond it an
	// upgrade gets HTTP 503. Default 0: no cap.
	MaxConnsPerIP int
	// Outbox bounds the bytes queued for one connection and not yet taken by
	// the kernel. Send reports ErrFull beyond it. Default 64 KiB; at most
	// MaxOutbox.
	Outbox int
	// ReplyReserve is the outbox space, in bytes, that must be free before a
	// received message is handed to OnMessage, so that the replies to one
	// message always fit: set it to at least the largest reply (all frames
	// Sent from one OnMessage). While less is free the connection is paused:
	// the unprocessed input is kept, and processing resumes, in order, once
	// the peer has read enough of the outbox. Conn.Offer never takes this
	// room, so frames that other goroutines Offer (fan-outs) cannot crowd
	// out the replies; a frame Sent from outside a callback can. The epoll
	// engine stops reading a paused socket, so TCP pushes back on the client
	// and the input kept is at most one read (64 KiB) plus one incomplete
	// frame. The netpoll engine cannot stop reading: it keeps what arrives
	// and closes the connection with 1008 (CloseProtocol) once more than
	// max(64 KiB, 2*MaxMessage) is kept, so a client that sends without
	// reading cannot grow server memory.
	// Default DefaultReplyReserve(Outbox); at most Outbox/2.
	ReplyReserve int
	// HandshakeTimeout closes connections that have not completed the HTTP
	// upgrade in time. Default 5 s.
	HandshakeTimeout time.Duration
	// CloseTimeout bounds the closing handshake: after sending a close
	// frame, the socket is closed when the peer answers or this passes.
	// Default 2 s.
	CloseTimeout time.Duration
	// Tick is the resolution of deadlines (hello timeout, heartbeats,
	// handshake and close timeouts): they are checked by a sweep this often.
	// Default 100 ms.
	Tick time.Duration
	// Logger receives rare, rate-limited diagnostics, and each recovered
	// handler panic with its stack (at most one per second; the next record
	// counts those left out). Default: discard.
	Logger *slog.Logger
	// OnPanic, if set, is called with the value of every panic recovered
	// from a Handler callback (see Handler), after it is logged. It is
	// called on the goroutine of the callback and must not block.
	OnPanic func(v any)
	// OnReject, if set, is called when a connection fails before OnOpen (bad
	// or refused upgrade, handshake timeout, caps), and with RejectPage,
	// which is not a failure, after a page of Pages was served. It may be
	// called from any poller goroutine and must not block.
	OnReject func(r RejectReason)
}

// DefaultReplyReserve is the ReplyReserve of an outbox of outbox bytes
// when Config leaves it zero: 1 KiB, or half the outbox if that is less.
func DefaultReplyReserve(outbox int) int { return min(1<<10, outbox/2) }

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Engine == "" {
		cfg.Engine = DefaultEngine
	}
	if cfg.Engine != EngineEpoll && cfg.Engine != EngineNetpoll {
		return cfg, fmt.Errorf("poller: unknown engine %q (want %q or %q)", cfg.Engine, EngineEpoll, EngineNetpoll)
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.Outbox <= 0 {
		cfg.Outbox = DefaultOutbox
	}
	if cfg.Outbox > MaxOutbox {
		return cfg, fmt.Errorf("poller: Outbox %d exceeds MaxOutbox (%d)", cfg.Outbox, MaxOutbox)
	}
	if cfg.ReplyReserve <= 0 {
		cfg.ReplyReserve = DefaultReplyReserve(cfg.Outbox)
	}
	if cfg.ReplyReserve > cfg.Outbox/2 {
		return cfg, fmt.Errorf("poller: ReplyReserve %d exceeds half the Outbox (%d)", cfg.ReplyReserve, cfg.Outbox)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConns < 0 || cfg.MaxConnsPerIP < 0 {
		return cfg, errors.New("poller: MaxConns and MaxConnsPerIP must not be negative")
	}
	return cfg, nil
}

// engine is what Server needs from an I/O engine.
type engine interface {
	addr() netip.AddrPort
	// run serves until ctx is done, then closes every connection with 1001
	// and returns once all its goroutines have stopped.
	run(ctx context.Context) error
	// stopAccepting closes the listener; open connections are kept.
	stopAccepting()
}

// Server accepts WebSocket connections and drives them with one engine.
// Its methods are safe for concurrent use.
type Server struct {
	cfg    Config // static after construction
	engine engine // static after construction
	shared *shared
}

// New listens on cfg.Addr with the chosen engine. Call Run to serve.
func New(cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, errors.New("poller: nil Handler")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ps, err := newPages(cfg)
	if err != nil {
		return nil, err
	}
	sh := newShared(cfg, h)
	sh.pages = ps
	s := &Server{cfg: cfg, shared: sh}
	switch cfg.Engine {
	case EngineNetpoll:
		s.engine, err = newNetpollEngine(sh)
	default:
		s.engine, err = newEpollEngine(sh)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() netip.AddrPort { return s.engine.addr() }

// Run serves until ctx is done. It then closes every connection with 1001
// (going away), waits for its goroutines and returns nil. Run is called once.
func (s *Server) Run(ctx context.Context) error { return s.engine.run(ctx) }

// StopAccepting closes the listener; open connections stay. Used to drain.
func (s *Server) StopAccepting() { s.engine.stopAccepting() }

// Conns is the number of connections held, including those upgrading.
func (s *Server) Conns() int { return int(s.shared.limits.total.Load()) }

// CloseReason says why a connection ended. Its String is a stable label for
// logs and metrics.
type CloseReason uint8

const (
	// ClosePeer: the peer sent a close frame (CloseInfo.Code holds its code).
	ClosePeer CloseReason = iota + 1
	// CloseReset: the TCP connection ended without a close frame (EOF, reset).
	CloseReset
	// CloseProtocol: the peer broke RFC 6455 or a limit; the server sent
	// CloseInfo.Code (1002, 1007, 1009; 1008 when the netpoll engine kept
	// more unprocessed input than it allows, see Config.ReplyReserve).
	CloseProtocol
	// CloseTimeout: the closing handshake did not finish in time.
	CloseTimeout
	// CloseServer: the application called Conn.Close (CloseInfo.Code).
	CloseServer
	// CloseShutdown: the server stopped (1001).
	CloseShutdown
	// ClosePanic: a Handler callback of the connection panicked; the server
	// sent 1011 (CloseInfo.Err holds the panic value).
	ClosePanic
)

func (r CloseReason) String() string {
	switch r {
	case ClosePeer:
		return "peer"
	case CloseReset:
		return "reset"
	case CloseProtocol:
		return "protocol"
	case CloseTimeout:
		return "timeout"
	case CloseServer:
		return "server"
	case CloseShutdown:
		return "shutdown"
	case ClosePanic:
		return "panic"
	}
	return "unknown"
}

// CloseInfo describes the end of a connection.
type CloseInfo struct {
	Reason CloseReason
	// Code is the close code that ended the connection: the peer's for
	// ClosePeer, the one sent by the server otherwise (0 for CloseReset).
	Code ws.StatusCode
	// Err is the underlying error, if any (a read error, a protocol error).
	Err error
}

// RejectReason says why a connection failed before OnOpen.
type RejectReason uint8

const (
	RejectBadRequest RejectReason = iota + 1 // malformed or non-WebSocket request
	RejectNotFound                           // path other than Config.Path
	RejectOrigin                             // Origin outside the allowlist (403)
	RejectCapacity                           // MaxConns reached (503)
	RejectPerIP                              // MaxConnsPerIP reached (503)
	RejectTimeout                            // upgrade not complete in HandshakeTimeout
	RejectReset                              // peer closed during the upgrade
	RejectTooLarge                           // request beyond MaxHeaderBytes (431)
	RejectShutdown                           // server stopped during the upgrade
	RejectPage                               // not a failure: a GET or HEAD of one of Config.Pages was answered
)

func (r RejectReason) String() string {
	switch r {
	case RejectBadRequest:
		return "bad_request"
	case RejectNotFound:
		return "not_found"
	case RejectOrigin:
		return "origin"
	case RejectCapacity:
		return "capacity"
	case RejectPerIP:
		return "per_ip"
	case RejectTimeout:
		return "timeout"
	case RejectReset:
		return "reset"
	case RejectTooLarge:
		return "too_large"
	case RejectShutdown:
		return "shutdown"
	case RejectPage:
		return "page"
	}
	return "unknown"
}

// Errors returned by Conn.Send.
var (
	// ErrFull: the connection's outbox cannot take the frame; nothing was
	// queued. The caller decides (drop, resync later, close).
	ErrFull = errors.New("poller: outbox full")
	// ErrClosed: the connection is closing or closed.
	ErrClosed = errors.New("poller: connection closed")
)
