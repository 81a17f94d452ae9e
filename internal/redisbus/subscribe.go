package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// evKind is what a receive loop saw.
type evKind int

const (
	evMessage      evKind = iota // a room message
	evSubscribed                 // a (re)subscription confirmation
	evUnsubscribed               // the confirmation of an unsubscribe we sent
)

// event goes from a receive loop to the rooms loop.
type event struct {
	kind    evKind
	g       int    // the subscription group
	gen     uint64 // the PubSub's generation within the group
	reason  string // evSubscribed of the marker: why this PubSub was (re)created ("" the first time)
	marker  bool   // the channel is the group's marker
	room    string
	payload string
}

// sub is one subscription group's PubSub: in Cluster a partition (sharded
// Pub/Sub), else every room. Its goroutine owns the PubSub: it opens it
// while rooms are wanted, sends (un)subscribes, probes it when quiet and
// recreates it when it failed; a second goroutine receives.
type sub struct {
	b      *Bus   // static
	g      int    // static
	marker string // static: the marker channel

	mu     sync.Mutex
	want   map[string]uint64 // guarded by mu: wanted room channel -> watch version
	unsubs map[string]int    // guarded by mu: unsubscribes sent, confirmation pending

	kick     chan struct{} // cap 1: want changed
	redo     chan string   // cap 1: recreate the PubSub, for this reason
	lastRecv atomic.Int64  // Unix ns of the last thing received
}

func newSub(b *Bus, g int) *sub {
	return &sub{b: b, g: g, marker: b.k.marker(g), want: map[string]uint64{}, unsubs: map[string]int{},
		kick: make(chan struct{}, 1), redo: make(chan string, 1)}
}

// set wants (version > 0) or stops wanting the channel of a room.
func (s *sub) set(channel string, version uint64) {
	s.mu.Lock()
	if version > 0 {
		s.want[channel] = version
	} else {
		delete(s.want, channel)
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *sub) wanted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.want)
}

// run owns the group's PubSub until ctx is done.
func (s *sub) run(ctx context.Context) {
	var gen uint64
	reason := ""
	for ctx.Err() == nil {
		if s.wanted() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.kick:
				continue
			}
		}
		gen++
		reason = s.serve(ctx, gen, reason)
	}
}

func (s *sub) subscribe(ctx context.Context, ps *redis.PubSub, chs []string) error {
	if s.b.cluster {
		return ps.SSubscribe(ctx, chs...)
	}
	return ps.Subscribe(ctx, chs...)
}

func (s *sub) unsubscribe(ctx context.Context, ps *redis.PubSub, chs []string) error {
	if s.b.cluster {
		return ps.SUnsubscribe(ctx, chs...)
	}
	return ps.Unsubscribe(ctx, chs...)
}

// serve opens a PubSub subscribed to the marker and every wanted channel
// in one command (so the marker's confirmation means all are active),
// and runs it until it must be recreated (returns the reason), no room is
// wanted or ctx is done (returns "").
func (s *sub) serve(ctx context.Context, gen uint64, reason string) string {
	s.mu.Lock()
	subscribed := make(map[string]uint64, len(s.want))
	chs := []string{s.marker}
	for ch, v := range s.want {
		subscribed[ch] = v
		chs = append(chs, ch)
	}
	clear(s.unsubs)
	s.mu.Unlock()
	select {
	case <-s.redo: // sent by the previous PubSub's receive loop
	default:
	}
	var ps *redis.PubSub
	if s.b.cluster {
		ps = s.b.data.SSubscribe(ctx)
	} else {
		ps = s.b.data.Subscribe(ctx)
	}
	s.lastRecv.Store(time.Now().UnixNano())
	if err := s.subscribe(ctx, ps, chs); err != nil {
		// go-redis keeps the channels: the receive loop's reconnect
		// subscribes them.
		s.b.m.errors.WithLabelValues("subscribe").Inc()
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go s.receive(rctx, ps, gen, reason, done)
	var probes sync.WaitGroup // the probe publish runs beside: Redis may not answer it
	var probing atomic.Bool
	stop := func() {
		cancel()
		_ = ps.Close()
		<-done
		probes.Wait()
	}
	tick := time.NewTicker(max(s.b.probeQuiet/4, 10*time.Millisecond))
	defer tick.Stop()
	var probed time.Time // a probe is out since then
	for {
		select {
		case <-ctx.Done():
			stop()
			return ""
		case r := <-s.redo:
			stop()
			s.b.log.Info("redisbus: subscription recreated", "group", s.g, "reason", r)
			return r
		case <-s.kick:
			if !s.sync(ctx, ps, subscribed) {
				stop()
				return ""
			}
		case now := <-tick.C:
			last := time.Unix(0, s.lastRecv.Load())
			switch {
			case !probed.IsZero() && last.After(probed):
				probed = time.Time{}
			case !probed.IsZero() && now.Sub(probed) > s.b.probeWait:
				stop()
				s.b.log.Info("redisbus: subscription recreated", "group", s.g, "reason", ResyncProbe)
				return ResyncProbe
			case probed.IsZero() && now.Sub(last) > s.b.probeQuiet && !probing.Load():
				probed = now
				probing.Store(true)
				probes.Go(func() {
					defer probing.Store(false)
					s.probe(rctx)
				})
			}
		}
	}
}

// sync sends the (un)subscribes that make the PubSub follow want; false
// when nothing is wanted any more.
func (s *sub) sync(ctx context.Context, ps *redis.PubSub, subscribed map[string]uint64) bool {
	var add, del []string
	s.mu.Lock()
	for ch, v := range s.want {
		if subscribed[ch] != v {
			add = append(add, ch)
			subscribed[ch] = v
		}
	}
	for ch := range subscribed {
		if _, ok := s.want[ch]; !ok {
			del = append(del, ch)
			delete(subscribed, ch)
			s.unsubs[ch]++
		}
	}
	n := len(s.want)
	s.mu.Unlock()
	if n == 0 {
		return false
	}
	if len(del) > 0 && s.unsubscribe(ctx, ps, del) != nil {
		s.b.m.errors.WithLabelValues("subscribe").Inc()
	}
	// A channel subscribed again is confirmed again: the rooms loop waits
	// for that confirmation.
	if len(add) > 0 && s.subscribe(ctx, ps, add) != nil {
		s.b.m.errors.WithLabelValues("subscribe").Inc()
	}
	return true
}

// probe publishes a probe on the marker: any message received shows the
// subscription alive.
func (s *sub) probe(ctx context.Context) {
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	m := message{kind: kindProbe, sender: s.b.selfID(), seq: binary.LittleEndian.Uint64(nonce[:]), ts: time.Now().UnixMilli()}
	ctx, cancel := context.WithTimeout(ctx, s.b.probeWait)
	defer cancel()
	var err error
	if s.b.cluster {
		err = s.b.data.SPublish(ctx, s.marker, appendMessage(nil, &m)).Err()
	} else {
		err = s.b.data.Publish(ctx, s.marker, appendMessage(nil, &m)).Err()
	}
	if err != nil {
		s.b.m.errors.WithLabelValues("probe").Inc()
	}
}

// receive is the PubSub's receive loop: it forwards confirmations
// (blocking: they are few) and room messages (never blocking: when the
// queue is full the message is dropped and the room resynced) to the
// rooms loop.
func (s *sub) receive(ctx context.Context, ps *redis.PubSub, gen uint64, reason string, done chan struct{}) {
	defer close(done)
	backoff := 50 * time.Millisecond
	for {
		v, err := ps.ReceiveTimeout(ctx, time.Second)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.b.m.errors.WithLabelValues("subscribe").Inc()
			s.b.log.Debug("redisbus: receive", "group", s.g, "err", err)
			if msg := err.Error(); strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ") {
				// The (s)subscribe went to a node that no longer owns the
				// slot: refresh the Cluster's slots, then recreate.
				if cc, ok := s.b.data.(*redis.ClusterClient); ok {
					cc.ReloadState(ctx)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(250 * time.Millisecond):
				}
				select {
				case s.redo <- ResyncUnsubscribed:
				default:
				}
				continue
			}
			// The next call reconnects and resubscribes.
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		s.lastRecv.Store(time.Now().UnixNano())
		switch m := v.(type) {
		case *redis.Subscription:
			s.b.log.Debug("redisbus: subscription", "group", s.g, "gen", gen, "kind", m.Kind, "channel", m.Channel)
			s.confirmation(ctx, m, gen, reason)
		case *redis.Message:
			if m.Channel == s.marker {
				continue // a probe: its arrival is what counts
			}
			room, ok := s.b.k.roomOf(m.Channel)
			if !ok {
				continue
			}
			select {
			case s.b.recvq <- event{kind: evMessage, g: s.g, gen: gen, room: room, payload: m.Payload}:
			default:
				s.b.m.drops.Inc()
				s.b.noteOverflow(room)
			}
		}
	}
}

func (s *sub) confirmation(ctx context.Context, m *redis.Subscription, gen uint64, reason string) {
	ev := event{g: s.g, gen: gen, marker: m.Channel == s.marker}
	switch m.Kind {
	case "subscribe", "ssubscribe":
		ev.kind = evSubscribed
		ev.reason = reason
	case "unsubscribe", "sunsubscribe":
		s.mu.Lock()
		solicited := s.unsubs[m.Channel] > 0
		if solicited {
			s.unsubs[m.Channel]--
			if s.unsubs[m.Channel] == 0 {
				delete(s.unsubs, m.Channel)
			}
		}
		s.mu.Unlock()
		if !solicited {
			// Redis dropped it (a Cluster slot moved): go-redis stays
			// silent and keeps the dead subscription; recreate, on the
			// slot's new owner.
			if cc, ok := s.b.data.(*redis.ClusterClient); ok {
				cc.ReloadState(ctx)
			}
			select {
			case s.redo <- ResyncUnsubscribed:
			default:
			}
			return
		}
		ev.kind = evUnsubscribed
	default:
		return
	}
	if !ev.marker {
		var ok bool
		if ev.room, ok = s.b.k.roomOf(m.Channel); !ok {
			return
		}
	}
	select {
	case s.b.recvq <- ev:
	case <-ctx.Done():
	}
}

// roomOf is the room of a room channel P{p<k>}:c:<room>.
func (k keys) roomOf(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, k.prefix+"{p")
	if !ok {
		return "", false
	}
	i := strings.Index(rest, "}:c:")
	if i < 0 {
		return "", false
	}
	return rest[i+len("}:c:"):], true
}
