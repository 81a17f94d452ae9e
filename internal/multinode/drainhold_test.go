package multinode

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
)

// TestDrainHoldsUntilRetry: with the shipped ratio of drain window to
// leave grace (-drain 3s against -leave-grace 1s here; 10 s against 5 s by
// default), clients that honour bye's retry_ms (the Go SDK does) come back
// through a load balancer on the other nodes, and nobody sees them leave or
// join: each drained member is held for its retry_ms plus the leave grace,
// by the drained node until the window has passed, then by the others.
// Before that hold most of them were seen leaving, then joining again.
func TestDrainHoldsUntilRetry(t *testing.T) {
	const (
		window = 3 * time.Second // > leaveGrace, as shipped
		movers = 8               // with the old hold, all 8 back within ~1.3 s had odds of ~0.1 %
		room   = "chat:drainhold"
	)
	tp := standalone(t)
	g := startNodes(t, tp, 3, "-drain", window.String())
	lb := newBalancer(t, g.n[2].addr)
	observers := []*peer{dial(t, g.n[0].url(), "o0"), dial(t, g.n[1].url(), "o1")}
	var ms []*peer
	var users []string
	for i := range movers {
		m := dial(t, lb.url(), fmt.Sprintf("m%d", i))
		ms = append(ms, m)
		users = append(users, m.user)
	}
	peers := append(slices.Clone(observers), ms...)
	for i, p := range peers {
		p.join(room, state("online", i))
	}
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })

	// The load balancer's health check sees /readyz 503: new connections
	// go to the other nodes; those open stay on node2 until its drain.
	lb.setTargets(g.n[0].addr, g.n[1].addr)
	since := time.Now()
	g.n[2].term()
	if err := g.n[2].wait(); err != nil {
		t.Errorf("node2 drained: exit %v, want 0", err)
	}
	exited := time.Since(since)
	// Every mover was told a retry_ms, waited it and is back on node0 or
	// node1.
	var retries []time.Duration
	eventually(t, window+propagation, func() error {
		retries = retries[:0]
		return all(ms, func(p *peer) error {
			retry, node, err := p.movedAfterBye()
			retries = append(retries, retry)
			if err == nil && node != "node0" && node != "node1" {
				err = fmt.Errorf("%s: back on %s, want node0 or node1", p.user, node)
			}
			return err
		})
	})
	t.Logf("retry_ms of the movers: %v; node2 exited %v after SIGTERM", retries, exited)
	// node2 stays until the window has passed, or sooner once it holds no
	// member: not before its last hold (retry_ms + grace) ended.
	if least := min(window, slices.Max(retries)+leaveGrace); exited < least {
		t.Errorf("node2 exited %v after SIGTERM, before %v (the window, or its last retry_ms plus the grace): it left the cluster before its clients were due back", exited, least)
	}
	during(t, leaveGrace+propagation, func() error {
		return noChanges(peers, room, since, users...)
	})
	eventually(t, propagation, func() error { return viewsMatch(peers, nil, false) })
	for _, n := range g.n[:2] {
		if v, err := n.metric(`presenced_cluster_node_deaths_total{how="announce"}`); err != nil || v < 1 {
			t.Errorf("node %s: announced deaths %v, %v; want node2's Leave", n.name, v, err)
		}
	}
}

// movedAfterBye reports the retry_ms of the peer's bye and the node its
// client connected to after it, or an error if it has not yet.
func (p *peer) movedAfterBye() (retry time.Duration, node string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	bye := false
	for _, s := range p.events {
		switch {
		case s.ev.Kind == client.EventBye:
			retry, bye = s.ev.RetryIn, true
		case s.ev.Kind == client.EventConnected && bye:
			return retry, s.ev.Node, nil
		}
	}
	if !bye {
		return 0, "", fmt.Errorf("%s: no bye yet", p.user)
	}
	return retry, "", fmt.Errorf("%s: told retry_ms %v, not connected again yet", p.user, retry)
}

// balancer forwards each TCP connection to one of its targets in turn,
// skipping those that refuse: a load balancer in front of nodes. Its
// targets change for new connections only. Safe for concurrent use;
// closed in t's Cleanup, which joins its goroutines.
type balancer struct {
	ln net.Listener // static
	wg sync.WaitGroup

	mu      sync.Mutex
	targets []string              // guarded by mu
	next    int                   // guarded by mu: the target of the next connection
	conns   map[net.Conn]struct{} // guarded by mu: both ends of every pair
}

func newBalancer(t *testing.T, targets ...string) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, targets: targets, conns: map[net.Conn]struct{}{}}
	b.wg.Go(b.accept)
	t.Cleanup(b.close)
	return b
}

func (b *balancer) url() string { return "ws://" + b.ln.Addr().String() + "/ws" }

func (b *balancer) setTargets(targets ...string) {
	b.mu.Lock()
	b.targets, b.next = targets, 0
	b.mu.Unlock()
}

// dial connects to the next target that accepts.
func (b *balancer) dial() (net.Conn, error) {
	b.mu.Lock()
	targets, first := slices.Clone(b.targets), b.next
	b.next++
	b.mu.Unlock()
	var errs []error
	for i := range targets {
		c, err := net.DialTimeout("tcp", targets[(first+i)%len(targets)], time.Second)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (b *balancer) accept() {
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		out, err := b.dial()
		if err != nil { // no target up: the client retries
			in.Close()
			continue
		}
		b.mu.Lock()
		b.conns[in], b.conns[out] = struct{}{}, struct{}{}
		b.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			in.Close()
			out.Close()
			b.mu.Lock()
			delete(b.conns, in)
			delete(b.conns, out)
			b.mu.Unlock()
		}
		b.wg.Go(func() { pipe(out, in) })
		b.wg.Go(func() { pipe(in, out) })
	}
}

func (b *balancer) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
