package presence

import (
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memNet connects the hubs of one test through memory, the way
// internal/redisbus does through Redis: each node's published holdings
// are stored per (room, node), and delivered to the nodes watching the
// room on their own goroutine (a node's bus goroutine, which calls the
// Hub's methods outside any room lock).
type memNet struct {
	mu    sync.Mutex
	nodes map[string]*memBus
	store map[string]map[string]map[string]Holding // room -> node -> user -> holding
}

func newMemNet() *memNet {
	return &memNet{nodes: map[string]*memBus{}, store: map[string]map[string]map[string]Holding{}}
}

// memBus is one node's Bus on a memNet.
type memBus struct {
	net     *memNet
	id      string
	hub     *Hub
	q       chan func()
	watched map[string]bool // guarded by net.mu
	noLoad  bool            // guarded by net.mu: Watch never loads (Redis does not answer)
}

var _ Bus = (*memBus)(nil)

// node starts a hub on the net as node id; it stops when the test ends.
func (n *memNet) node(t *testing.T, id string, cfg Config) *env {
	t.Helper()
	b := &memBus{net: n, id: id, q: make(chan func(), 1<<16), watched: map[string]bool{}}
	cfg.Node, cfg.Bus, cfg.Insecure = id, b, true
	e := startHub(t, cfg)
	b.hub = e.h
	n.mu.Lock()
	n.nodes[id] = b
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range b.q {
			f()
		}
	}()
	t.Cleanup(func() { close(b.q); <-done })
	return e
}

func (b *memBus) Publish(room string, hs []Holding, full bool) {
	n := b.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes[b.id] != b {
		return // killed
	}
	if n.store[room] == nil {
		n.store[room] = map[string]map[string]Holding{}
	}
	part := n.store[room][b.id]
	if full || part == nil {
		part = map[string]Holding{}
		n.store[room][b.id] = part
	}
	for _, h := range hs {
		if h.Held {
			part[h.User] = h
		} else {
			delete(part, h.User)
		}
	}
	hs = slices.Clone(hs)
	for _, o := range n.nodes {
		if o != b && o.watched[room] {
			o.q <- func() { o.hub.Apply(room, b.id, hs, full) }
		}
	}
}

func (b *memBus) Watch(room string) {
	n := b.net
	n.mu.Lock()
	defer n.mu.Unlock()
	b.watched[room] = true
	if b.noLoad {
		return
	}
	parts := map[string][]Holding{}
	for id, part := range n.store[room] {
		if id != b.id {
			parts[id] = slices.Collect(maps.Values(part))
		}
	}
	b.q <- func() {
		for id, hs := range parts {
			b.hub.Apply(room, id, hs, true)
		}
		b.hub.Loaded(room)
	}
}

func (b *memBus) Unwatch(room string) {
	b.net.mu.Lock()
	defer b.net.mu.Unlock()
	delete(b.watched, room)
}

// kill makes node id die: its holdings vanish and every other node is
// told, as the bus does once the node's lease expired.
func (n *memNet) kill(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nodes, id)
	for _, parts := range n.store {
		delete(parts, id)
	}
	for _, o := range n.nodes {
		o.q <- func() { o.hub.NodeDown(id) }
	}
}

// settle lets the buses deliver and the hubs flush.
func settle(es ...*env) {
	for range 3 {
		time.Sleep(es[0].h.cfg.Tick)
		synctest.Wait()
	}
}
