package presence

import (
	"context"
	"hash/maphash"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presenced/presenced/coalesce"
)

const (
	roomShards    = 64 // power of two
	sessionShards = 16 // power of two
)

// Hub owns the rooms and sessions of one node. Create it with New, run its
// flushers with Run, open a Session per connection.
type Hub struct {
	cfg     Config                     // static after New
	seed    maphash.Seed               // static after New
	base    time.Time                  // static after New: the origin of the hub's monotonic clock
	sched   *coalesce.Scheduler[*room] // static after New; runs the room flushes
	clock   hlc                        // versions of this node's member states (with a Bus)
	replies sync.Pool                  // *replyBuf: the encoding scratch of session replies

	rooms    [roomShards]roomShard
	sessions [sessionShards]sessionShard
	users    [userShards]userShard // the sessions that said hello, by user (users.go)

	nextConn    atomic.Uint64
	draining    atomic.Bool
	drainWindow atomic.Int64 // the Drain window: the retry_ms of hellos that arrive during it, and every drained connection's hold
	drainSalt   uint64       // static after New: drainRetry's salt

	nRooms    atomic.Int64
	nMembers  atomic.Int64
	nSessions atomic.Int64
}

type roomShard struct {
	mu    sync.Mutex
	rooms map[string]*room // guarded by mu
	aged  []*room          // guarded by mu: the rooms whose history is not empty, in no order (history.go)
}

type sessionShard struct {
	mu   sync.Mutex
	head *Session // guarded by mu: a doubly linked list through Session.prev/next
}

// Stats are the hub's gauges.
type Stats struct {
	Rooms    int64 // rooms with at least one member or subscriber
	Members  int64 // members summed over rooms (a user in two rooms counts twice)
	Sessions int64 // open sessions (connections)
}

// New validates cfg, fills its defaults and returns a Hub.
func New(cfg Config) (*Hub, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg, seed: maphash.MakeSeed(), base: time.Now(), drainSalt: rand.Uint64()}
	for i := range h.rooms {
		h.rooms[i].rooms = make(map[string]*room)
	}
	h.sched = coalesce.NewScheduler(coalesce.SchedulerConfig{Tick: cfg.Tick, Workers: cfg.Workers},
		func(r *room, now time.Time) bool { return r.flush(now) })
	return h, nil
}

// Node is this node's id, as sent in welcome.
func (h *Hub) Node() string { return h.cfg.Node }

// Run flushes rooms once per tick, and drops idle rooms' expired history
// (see sweepHistory), until ctx is done. Its goroutines are joined before
// it returns.
func (h *Hub) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { h.sweepHistory(ctx) })
	err := h.sched.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// Stats returns the current gauges.
func (h *Hub) Stats() Stats {
	return Stats{Rooms: h.nRooms.Load(), Members: h.nMembers.Load(), Sessions: h.nSessions.Load()}
}

// Open starts the session of a new connection: it must say hello within
// Config.HelloTimeout. Call it from the transport's open callback, then feed
// the connection's events to the Session's Handle methods.
func (h *Hub) Open(sink Sink) *Session {
	now := h.now()
	s := &Session{hub: h, sink: sink, seq: h.nextConn.Add(1), opened: now, lastSeen: now}
	sh := &h.sessions[s.seq&(sessionShards-1)]
	sh.mu.Lock()
	s.next = sh.head
	if sh.head != nil {
		sh.head.prev = s
	}
	sh.head = s
	sh.mu.Unlock()
	h.nSessions.Add(1)
	s.rearm()
	return s
}

func (h *Hub) unregister(s *Session) {
	sh := &h.sessions[s.seq&(sessionShards-1)]
	sh.mu.Lock()
	if s.prev != nil {
		s.prev.next = s.next
	} else if sh.head == s {
		sh.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	s.prev, s.next = nil, nil
	sh.mu.Unlock()
	h.removeUser(s)
	h.nSessions.Add(-1)
}

// Drain tells every connection to go away: each gets bye with a retry_ms
// drawn uniformly from [0, window), then close 1001. Its members stay for
// that retry_ms plus Config.LeaveGrace, so a client that reconnects
// elsewhere when told causes no leave (with a Bus, as long as this node
// stays in the cluster until window has passed: internal/server does).
// Hellos that arrive afterwards are answered the same way. It returns at
// once; watch Stats().Sessions to know when every connection is gone, and
// Stats().Members to know when every hold has ended. Call it once.
func (h *Hub) Drain(window time.Duration) {
	h.drainWindow.Store(int64(window))
	h.draining.Store(true)
	var batch []*Session
	for i := range h.sessions {
		sh := &h.sessions[i]
		sh.mu.Lock()
		batch = batch[:0]
		for s := sh.head; s != nil; s = s.next {
			batch = append(batch, s)
		}
		sh.mu.Unlock()
		for _, s := range batch {
			s.bye()
		}
	}
}

// room returns the live room named name, creating it if needed, with its
// lock held.
func (h *Hub) lockRoom(name string) *room {
	sh := h.shardOf(name)
	for {
		sh.mu.Lock()
		r := sh.rooms[name]
		if r == nil {
			name = strings.Clone(name) // kept: a command's room aliases its message
			r = newRoom(h, sh, name)
			sh.rooms[name] = r
			h.nRooms.Add(1)
		}
		sh.mu.Unlock()
		r.mu.Lock()
		if !r.dead {
			return r
		}
		r.mu.Unlock()
	}
}

func (h *Hub) shardOf(name string) *roomShard {
	return &h.rooms[maphash.String(h.seed, name)&(roomShards-1)]
}

// dropRoomLocked forgets r, whose lock is held and which is empty.
func (h *Hub) dropRoomLocked(r *room) {
	r.dead = true
	r.shard.mu.Lock()
	if r.shard.rooms[r.name] == r {
		delete(r.shard.rooms, r.name)
		h.nRooms.Add(-1)
	}
	r.shard.unageLocked(r)
	r.shard.mu.Unlock()
}

// frame wraps payload for the transport in a new slice the sink may keep.
func (h *Hub) frame(payload []byte) []byte {
	return h.cfg.Frame(make([]byte, 0, len(payload)+14), payload)
}

func newEpoch() uint32 { return rand.Uint32() }

// drainRetry is the retry_ms the drain tells connection seq: uniform over
// [0, the Drain window) in whole milliseconds. It is a function of seq and
// a random salt of the hub's, not a stored draw, so that HandleClose can
// hold the connection's members for it without a field in Session (an
// idle connection costs its Session: see TestIdleStructSizes).
func (h *Hub) drainRetry(seq uint64) time.Duration {
	ms := time.Duration(h.drainWindow.Load()).Milliseconds()
	if ms <= 0 {
		return 0
	}
	// splitmix64: the seq-th output of a generator seeded with the salt.
	z := h.drainSalt + seq*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return time.Duration(z%uint64(ms)) * time.Millisecond
}

// countSent records n frames of size bytes handed to sinks.
func (h *Hub) countSent(n, size int) {
	if n > 0 {
		h.cfg.Metrics.FramesSent.Add(float64(n))
		h.cfg.Metrics.BytesSent.Add(float64(n * size))
	}
}

// now is the hub's clock: nanoseconds since New, from the monotonic clock,
// so timers, rate limits and graces survive wall-clock steps. Every int64
// time in this package is on this clock.
func (h *Hub) now() int64 { return int64(time.Since(h.base)) }

// at converts t to the hub's clock.
func (h *Hub) at(t time.Time) int64 { return int64(t.Sub(h.base)) }

// wall converts a time on the hub's clock to a time.Time for the sink.
func (h *Hub) wall(t int64) time.Time { return h.base.Add(time.Duration(t)) }

// maxTokenLife bounds how far ahead a token's exp is taken into account:
// beyond it ("never expires" tokens, exp in year 9999) the token is
// treated as having no expiry, rather than overflowing the clock.
const maxTokenLife = 100 * 365 * 24 * time.Hour
