package redisbus

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
)

// recorder is a livenessEvents that records every call.
type recorder struct {
	mu    sync.Mutex
	regs  []regEvent
	regAt map[string]time.Time // id -> when registered(id, true) came
	downs []downEvent
	losts []bool
}

type regEvent struct {
	id    string
	fresh bool
}

type downEvent struct {
	id, how string
	reaper  bool
	at      time.Time
}

func (r *recorder) registered(id string, fresh bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regs = append(r.regs, regEvent{id, fresh})
	if fresh {
		if r.regAt == nil {
			r.regAt = map[string]time.Time{}
		}
		r.regAt[id] = time.Now()
	}
}

func (r *recorder) down(id, how string, reaper bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.downs = append(r.downs, downEvent{id, how, reaper, time.Now()})
}

func (r *recorder) lost(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.losts = append(r.losts, up)
}

func (r *recorder) downsOf(id string) []downEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []downEvent
	for _, d := range r.downs {
		if d.id == id {
			out = append(out, d)
		}
	}
	return out
}

func (r *recorder) allDowns() []downEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]downEvent(nil), r.downs...)
}

// registeredAt is when registered(id, true) came (zero: not yet).
func (r *recorder) registeredAt(id string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.regAt[id]
}

func (r *recorder) registrations() []regEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]regEvent(nil), r.regs...)
}

// syncBuffer is a log sink for tests.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var testKeys = keys{prefix: "t:"}

// tnode is one liveness instance running in the test.
type tnode struct {
	l      *liveness
	r      *recorder
	logs   *syncBuffer
	mu     sync.Mutex
	cancel context.CancelFunc // guarded by mu
	done   chan struct{}      // guarded by mu
}

func startNode(t *testing.T, o ClientOptions, node string, ttl time.Duration, opt func(*liveness)) *tnode {
	t.Helper()
	live, data, err := newClients(o, ttl)
	if err != nil {
		t.Fatal(err)
	}
	_ = data.Close()
	t.Cleanup(func() { _ = live.Close() })
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &tnode{r: &recorder{}, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n.l = newLiveness(live, testKeys, livenessConfig{node: node, ttl: ttl, addr: "127.0.0.1:1"}, n.r, log, m)
	if opt != nil {
		opt(n.l)
	}
	n.resume()
	t.Cleanup(n.stop)
	return n
}

// resume runs the liveness loop (again).
func (n *tnode) resume() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n.mu.Lock()
	n.cancel, n.done = cancel, done
	n.mu.Unlock()
	go func() { defer close(done); n.l.run(ctx) }()
}

// stop ends the loop without leaving: a crash, as peers see it.
func (n *tnode) stop() {
	n.mu.Lock()
	cancel, done := n.cancel, n.done
	n.mu.Unlock()
	cancel()
	<-done
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitRegistered waits until every node holds a lease and sees the others.
func waitRegistered(t *testing.T, nodes ...*tnode) {
	t.Helper()
	eventually(t, 5*time.Second, "all registered and seen", func() bool {
		for _, a := range nodes {
			if !a.l.up() {
				return false
			}
			for _, b := range nodes {
				if b.l.id() == "" || !a.l.alive(b.l.id()) {
					return false
				}
			}
		}
		return true
	})
}

func standalone(s *redistest.Server) ClientOptions {
	return ClientOptions{Addrs: []string{s.Addr()}}
}

// onStandaloneAndCluster runs f, in parallel subtests, on a standalone
// Redis and on a 3-master Redis Cluster.
func onStandaloneAndCluster(t *testing.T, f func(t *testing.T, opts ClientOptions)) {
	t.Helper()
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		f(t, standalone(redistest.Start(t)))
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		f(t, ClientOptions{Addrs: redistest.StartCluster(t, 3).Addrs(), Cluster: true})
	})
}
