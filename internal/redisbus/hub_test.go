package redisbus

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// call is one Hub call the fake hub saw.
type call struct {
	op         string // apply, loaded, down, republish
	room, node string
	n          int // holdings
	full       bool
}

// fakeHub records the bus's calls and keeps each node's part of each
// room as the Hub would.
type fakeHub struct {
	t           *testing.T
	onRepublish func(room string) // called outside mu

	mu    sync.Mutex
	calls []call
	kicks []string                                          // "user code" of each Disconnect
	conns int64                                             // what NodeInfo reports
	parts map[string]map[string]map[string]presence.Holding // room -> node -> user
}

func newFakeHub(t *testing.T) *fakeHub {
	return &fakeHub{t: t, parts: map[string]map[string]map[string]presence.Holding{}}
}

func (h *fakeHub) Apply(room, node string, hs []presence.Holding, full bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, call{op: "apply", room: room, node: node, n: len(hs), full: full})
	if h.parts[room] == nil {
		h.parts[room] = map[string]map[string]presence.Holding{}
	}
	p := h.parts[room][node]
	if full || p == nil {
		p = map[string]presence.Holding{}
		h.parts[room][node] = p
	}
	for _, x := range hs {
		if x.Held {
			p[x.User] = x
		} else if full {
			h.t.Errorf("Apply full with a let-go holding %+v", x)
		} else {
			delete(p, x.User)
		}
	}
}

func (h *fakeHub) Loaded(room string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, call{op: "loaded", room: room})
}

func (h *fakeHub) NodeDown(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, call{op: "down", node: node})
}

func (h *fakeHub) Disconnect(user string, code wire.CloseCode) (closed, draining, held int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kicks = append(h.kicks, fmt.Sprint(user, " ", int(code)))
	return 1, 0, 0
}

func (h *fakeHub) NodeInfo() presence.NodeInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return presence.NodeInfo{Conns: h.conns}
}

func (h *fakeHub) Republish(room string) {
	h.mu.Lock()
	h.calls = append(h.calls, call{op: "republish", room: room})
	f := h.onRepublish
	h.mu.Unlock()
	if f != nil {
		f(room)
	}
}

// part is a copy of node's part of room.
func (h *fakeHub) part(room, node string) map[string]presence.Holding {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.parts[room][node])
}

// count is the number of calls matching f.
func (h *fakeHub) count(f func(c call) bool) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.calls {
		if f(c) {
			n++
		}
	}
	return n
}

// roomCalls are the calls about room, in order.
func (h *fakeHub) roomCalls(room string) []call {
	h.mu.Lock()
	defer h.mu.Unlock()
	var cs []call
	for _, c := range h.calls {
		if c.room == room {
			cs = append(cs, c)
		}
	}
	return cs
}

// node is a running Bus with a fake hub and its local truth.
type node struct {
	b    *Bus
	h    *fakeHub
	stop func() // cancels Run and waits for it

	mu    sync.Mutex
	truth map[string]map[string]presence.Holding // guarded by mu: room -> user -> local holding
	ver   uint64                                 // guarded by mu
}

// startBus runs a bus on opts; tune changes its tunables before Run.
func startBus(t *testing.T, name string, opts ClientOptions, tune func(*Bus)) *node {
	t.Helper()
	return startBusWith(t, Config{Redis: opts, Node: name}, tune)
}

// startBusWith runs a bus on cfg (WatchTimeout 300 ms unless set).
func startBusWith(t *testing.T, cfg Config, tune func(*Bus)) *node {
	t.Helper()
	if cfg.WatchTimeout == 0 {
		cfg.WatchTimeout = 300 * time.Millisecond
	}
	cfg.Registerer = prometheus.NewRegistry()
	cfg.Logger = testLogger(t, cfg.Node)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.antiEntropy = time.Second
	if tune != nil {
		tune(b)
	}
	n := &node{b: b, h: newFakeHub(t), truth: map[string]map[string]presence.Holding{}}
	// Like the Hub: Republish makes the next flush publish everything.
	n.h.onRepublish = func(room string) {
		n.mu.Lock()
		defer n.mu.Unlock()
		for r, us := range n.truth {
			if room == "" || r == room {
				hs := make([]presence.Holding, 0, len(us))
				for _, x := range us {
					hs = append(hs, x)
				}
				n.b.Publish(r, hs, true)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, n.h) }()
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Logf("Run: %v", err)
			}
		})
	}
	t.Cleanup(n.stop)
	eventually(t, 5*time.Second, "registered", func() bool { return b.selfID() != "" })
	return n
}

// set changes the local holding of user in room and publishes the delta.
func (n *node) set(room, user, status string, held bool) {
	n.mu.Lock()
	n.ver++
	h := presence.Holding{User: user, Held: held}
	if held {
		h.Status, h.Version = status, n.ver
	}
	if n.truth[room] == nil {
		n.truth[room] = map[string]presence.Holding{}
	}
	if held {
		n.truth[room][user] = h
	} else {
		delete(n.truth[room], user)
	}
	n.mu.Unlock()
	n.b.Publish(room, []presence.Holding{h}, false)
}

func (n *node) truthOf(room string) map[string]presence.Holding {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.truth[room])
}

// converged waits until reader's view of n's part of room equals n's truth.
func converged(t *testing.T, reader, n *node, room string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "converged on "+room, func() bool {
		return maps.Equal(reader.h.part(room, n.b.ID()), n.truthOf(room))
	})
}

// watch watches room on n and waits for its Loaded.
func (n *node) watch(t *testing.T, room string) { n.watchWithin(t, room, 5*time.Second) }

func (n *node) watchWithin(t *testing.T, room string, d time.Duration) {
	t.Helper()
	n.b.Watch(room)
	eventually(t, d, "loaded", func() bool { return n.h.count(isLoaded(room)) == 1 })
}

func isLoaded(room string) func(call) bool {
	return func(c call) bool { return c.op == "loaded" && c.room == room }
}

func testLogger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("REDISBUS_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}
