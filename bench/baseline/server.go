package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Config configures the baseline server. The zero value works.
type Config struct {
	// Addr is the listen address; clients connect to ws://Addr/ws.
	// Default 127.0.0.1:8080.
	Addr string
	// HB is the interval of server pings. Default 25s.
	HB time.Duration
	// HBTimeout is added to HB: a client silent that long is closed with
	// 4001. Default 10s.
	HBTimeout time.Duration
	// HelloTimeout bounds the wait for hello (close 4004). Default 10s.
	HelloTimeout time.Duration
	// LeaveGrace is how long a lost connection's member stays. Default 5s.
	LeaveGrace time.Duration
	// TypingTTL ends a typing mark not renewed. Default 6s.
	TypingTTL time.Duration
	// WriteTimeout bounds one write to a client. Default 10s.
	WriteTimeout time.Duration
	// SendBuffer is the most messages a connection's queue holds; a
	// connection with more to queue is dropped. The queue grows as
	// needed and holds no memory when drained. Default 16384
	// (DefaultSendBuffer).
	SendBuffer int
	// MaxMessage is the largest client message (close 1009 beyond).
	// Default 4096.
	MaxMessage int64
	// Logger receives the server's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultSendBuffer is Config.SendBuffer's default: what a typical
// implementation would choose to survive joins into big rooms. Filling a
// room of L members queues up to L join frames on each connection at once
// (5,000 for the largest fan-out room bench/compare runs for the baseline, with its default -peer-fanout-max); a cap in the
// hundreds drops the listeners while the room fills.
const DefaultSendBuffer = 16384

func (cfg Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	def(&cfg.HB, 25*time.Second)
	def(&cfg.HBTimeout, 10*time.Second)
	def(&cfg.HelloTimeout, 10*time.Second)
	def(&cfg.LeaveGrace, 5*time.Second)
	def(&cfg.TypingTTL, 6*time.Second)
	def(&cfg.WriteTimeout, 10*time.Second)
	if cfg.SendBuffer <= 0 {
		cfg.SendBuffer = DefaultSendBuffer
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Server is the hub: rooms by name, the connections, the leave_grace
// timers. Lock order: Server.mu, then room.mu.
type Server struct {
	cfg      Config // static after New
	ln       net.Listener
	upgrader websocket.Upgrader
	nextConn atomic.Uint64

	mu     sync.Mutex
	closed bool
	rooms  map[string]*room
	conns  map[*conn]struct{}
	timers map[*time.Timer]struct{} // pending leave_grace releases

	wg sync.WaitGroup // connection handlers and timer callbacks
}

// New listens on cfg.Addr.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:      cfg,
		ln:       ln,
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
		rooms:    make(map[string]*room),
		conns:    make(map[*conn]struct{}),
		timers:   make(map[*time.Timer]struct{}),
	}, nil
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is done, then closes every connection and returns
// once every goroutine it started has finished.
func (s *Server) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(s.ln) }()
	var err error
	select {
	case <-ctx.Done():
		hs.Close() // the listener and the connections not yet upgraded
		err = <-errc
	case err = <-errc:
		hs.Close()
	}
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.ws.Close()
	}
	for t := range s.timers {
		if t.Stop() {
			s.wg.Done()
		}
	}
	clear(s.timers)
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	for _, r := range s.rooms {
		r.stopTimers()
	}
	s.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	c := &conn{
		s:    s,
		ws:   ws,
		id:   strconv.FormatUint(s.nextConn.Add(1), 10),
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// room returns the room, created when missing.
func (s *Server) room(name string) *room {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[name]
	if r == nil {
		r = newRoom(s, name)
		s.rooms[name] = r
	}
	return r
}

// removeIfEmpty forgets r when nothing is left in it.
func (s *Server) removeIfEmpty(r *room) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.emptyLocked() && !r.dead && s.rooms[r.name] == r {
		r.dead = true
		delete(s.rooms, r.name)
	}
}

// graceRelease releases user's member in r after leave_grace.
func (s *Server) graceRelease(r *room, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(s.cfg.LeaveGrace, func() {
		defer s.wg.Done()
		s.mu.Lock()
		_, pending := s.timers[t]
		delete(s.timers, t)
		s.mu.Unlock()
		if pending && r.release(user) {
			s.removeIfEmpty(r)
		}
	})
	s.timers[t] = struct{}{}
}
