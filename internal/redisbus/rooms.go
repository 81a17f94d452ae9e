package redisbus

import (
	"context"
	"sync"
	"time"
)

// roomState is a watched room, owned by the rooms loop.
type roomState struct {
	name      string
	g         int
	version   uint64            // the watch's version (sub.want)
	confirmed bool              // the room channel's subscription is confirmed
	fetching  bool              // a load from Redis is out: messages are buffered
	refetch   bool              // load again (everything) when the current load is done
	buf       []message         // messages received while loading
	senders   map[string]uint64 // sender id -> last seq applied
	loaded    bool              // Hub.Loaded was called
	deadline  time.Time         // Loaded is called anyway then
	gone      *goneFlag         // set on Unwatch: loaders stop retrying
	suspect   map[string]uint64 // anti-entropy: sender id -> seq seen in Redis, checked again at suspectAt
	suspectAt time.Time
}

// applied records seq as the last applied of sender (senders is made on
// the first: an idle watched room costs less).
func (r *roomState) applied(sender string, seq uint64) {
	if r.senders == nil {
		r.senders = map[string]uint64{}
	}
	r.senders[sender] = seq
}

// roomsLoop is the goroutine that owns every watched room: it handles the
// Hub's Watch/Unwatch, received messages and confirmations, load results,
// liveness events, and calls the Hub.
type roomsLoop struct {
	b   *Bus
	wg  *sync.WaitGroup // Run's: the loop starts subs and reapers in it
	ctx context.Context

	rooms   map[string]*roomState
	subs    map[int]*sub
	subGen  map[int]uint64       // group -> the PubSub generation whose marker was confirmed
	dead    map[string]time.Time // ids known dead (not self): their messages are ignored
	version uint64               // last watch version
	jobs    []fetchJob           // loads not yet taken by a loader
	aeOut   bool                 // an anti-entropy read is out

	unloaded map[*roomState]struct{} // rooms whose Loaded is still due
	suspects map[*roomState]struct{} // rooms with anti-entropy suspects
}

func newRoomsLoop(b *Bus, wg *sync.WaitGroup) *roomsLoop {
	return &roomsLoop{b: b, wg: wg, rooms: map[string]*roomState{}, subs: map[int]*sub{},
		subGen: map[int]uint64{}, dead: map[string]time.Time{},
		unloaded: map[*roomState]struct{}{}, suspects: map[*roomState]struct{}{}}
}

func (l *roomsLoop) run(ctx context.Context) {
	l.ctx = ctx
	tick := time.NewTicker(min(50*time.Millisecond, max(l.b.cfg.WatchTimeout/5, time.Millisecond)))
	defer tick.Stop()
	ae := time.NewTicker(l.b.antiEntropy)
	defer ae.Stop()
	for {
		var jobc chan fetchJob
		var next fetchJob
		if len(l.jobs) > 0 {
			jobc, next = l.b.jobs, l.jobs[0]
		}
		select {
		case <-ctx.Done():
			return
		case jobc <- next:
			l.jobs = l.jobs[1:]
		case res := <-l.b.results:
			l.onResult(res)
		case ev := <-l.b.recvq:
			l.onEvent(ev)
		case <-l.b.cmdKick:
			cs, ov := l.b.takeCommands()
			for _, c := range cs {
				l.onCommand(c)
			}
			for _, room := range ov {
				if r := l.rooms[room]; r != nil && r.confirmed {
					l.fetch(r, "", ResyncOverflow)
				}
			}
		case now := <-tick.C:
			l.housekeeping(now)
		case <-ae.C:
			l.antiEntropy()
		}
	}
}

func (l *roomsLoop) onCommand(c command) {
	switch c.op {
	case opWatch:
		if l.rooms[c.room] != nil {
			return
		}
		l.version++
		r := &roomState{name: c.room, g: l.b.group(c.room), version: l.version,
			deadline: time.Now().Add(l.b.cfg.WatchTimeout), gone: &goneFlag{}}
		l.rooms[c.room] = r
		l.unloaded[r] = struct{}{}
		l.sub(r.g).set(l.b.k.channel(c.room), r.version)
	case opUnwatch:
		r := l.rooms[c.room]
		if r == nil {
			return
		}
		r.gone.set()
		delete(l.rooms, c.room)
		l.sub(r.g).set(l.b.k.channel(c.room), 0)
	case opRegistered:
		if !c.fresh {
			return
		}
		// A new incarnation: our part of every room is republished, and
		// what we followed may have been lost with Redis's data.
		l.b.hub.Republish("")
		for _, r := range l.rooms {
			if r.confirmed {
				l.fetch(r, "", ResyncReset)
			}
		}
	case opDown:
		l.nodeDown(c.room)
		// The reaper cleans a dead node's keys; an announced end
		// (a drain, a restart) has none: every node tries, the lock
		// lets one do it.
		if c.fresh || c.old == DeathAnnounce {
			id := c.room
			l.wg.Go(func() { l.b.reap(l.ctx, id) })
		}
	}
}

// nodeDown forgets id and tells the Hub, once.
func (l *roomsLoop) nodeDown(id string) {
	if l.b.isOwn(id) {
		return
	}
	if _, ok := l.dead[id]; ok {
		return
	}
	l.dead[id] = time.Now()
	for _, r := range l.rooms {
		delete(r.senders, id)
		delete(r.suspect, id)
	}
	l.b.hub.NodeDown(id)
}

func (l *roomsLoop) sub(g int) *sub {
	s := l.subs[g]
	if s == nil {
		s = newSub(l.b, g)
		l.subs[g] = s
		l.wg.Go(func() { s.run(l.ctx) })
	}
	return s
}

func (l *roomsLoop) onEvent(ev event) {
	switch ev.kind {
	case evSubscribed:
		if ev.marker {
			l.onMarker(ev)
			return
		}
		if r := l.rooms[ev.room]; r != nil && !r.confirmed {
			r.confirmed = true
			l.fetch(r, "", "")
		}
	case evUnsubscribed:
		// Watched again before the unsubscribe was confirmed: the new
		// subscription's confirmation follows; wait for it.
		if r := l.rooms[ev.room]; r != nil {
			r.confirmed = false
		}
	case evMessage:
		r := l.rooms[ev.room]
		if r == nil {
			return
		}
		m, err := decodeMessage([]byte(ev.payload))
		if err != nil || m.room != ev.room {
			l.b.m.errors.WithLabelValues("decode").Inc()
			return
		}
		l.handle(r, m, true, nil)
	}
}

// onMarker: the first confirmation of a PubSub's marker needs nothing
// (unless the PubSub replaces a failed one); another confirmation is a
// reconnect: messages may have been lost, every room of the group is
// loaded again.
func (l *roomsLoop) onMarker(ev event) {
	reason := ResyncReconnect
	if l.subGen[ev.g] != ev.gen {
		l.subGen[ev.g] = ev.gen
		reason = ev.reason
	}
	if reason == "" {
		return
	}
	if reason == ResyncReconnect {
		l.b.m.reconnects.Inc()
	}
	for _, r := range l.rooms {
		if r.g == ev.g && r.confirmed {
			l.fetch(r, "", reason)
		}
	}
}

// handle applies a message of a watched room by the seq rules.
//
// tried: senders that the load just done found nothing for (not
// registered): a gap of theirs drops the message instead of loading again.
func (l *roomsLoop) handle(r *roomState, m message, fresh bool, tried map[string]bool) {
	if l.b.isOwn(m.sender) {
		return
	}
	if _, ok := l.dead[m.sender]; ok {
		return
	}
	if fresh {
		l.b.m.received.Inc()
	}
	switch m.kind {
	case kindGone:
		// The reaper deleted that id's part: it is dead.
		l.nodeDown(m.sender)
		return
	case kindProbe:
		return
	}
	if r.fetching || !r.confirmed {
		if len(r.buf) >= l.b.maxBuffered {
			l.b.m.drops.Inc()
			if !r.refetch {
				l.b.m.resyncs.WithLabelValues(ResyncOverflow).Inc()
				r.refetch = true
			}
			return
		}
		r.buf = append(r.buf, m)
		return
	}
	cur, known := r.senders[m.sender]
	switch {
	case known && m.seq <= cur:
		return // duplicate or stale
	case m.kind == kindFull || m.seq == cur+1:
		r.applied(m.sender, m.seq)
		if ms := time.Now().UnixMilli() - m.ts; ms >= 0 {
			l.b.m.propagation.Observe(float64(ms) / 1000)
		}
		l.b.hub.Apply(r.name, m.sender, m.hs, m.kind == kindFull)
	case tried[m.sender]:
		return
	default:
		reason := ResyncGap
		if !known {
			reason = ResyncEpoch
		}
		r.buf = append(r.buf, m)
		l.fetch(r, m.sender, reason)
	}
}

// fetch loads the room's parts from Redis (only: one sender; "" all);
// reason "" is the first load of a watch. Messages are buffered meanwhile.
func (l *roomsLoop) fetch(r *roomState, only, reason string) {
	if reason != "" {
		l.b.m.resyncs.WithLabelValues(reason).Inc()
	}
	if r.fetching {
		r.refetch = true
		return
	}
	r.fetching = true
	l.jobs = append(l.jobs, fetchJob{r: r, only: only})
}

func (l *roomsLoop) onResult(res fetchResult) {
	if res.seqs != nil {
		l.onSeqs(res)
		return
	}
	r := res.r
	if l.rooms[r.name] != r {
		return // unwatched meanwhile
	}
	for _, p := range res.parts {
		if l.b.isOwn(p.id) {
			continue
		}
		if _, ok := l.dead[p.id]; ok {
			continue
		}
		if cur, ok := r.senders[p.id]; ok && p.seq < cur {
			continue // Redis is behind what was applied (it lost data)
		}
		r.applied(p.id, p.seq)
		l.b.hub.Apply(r.name, p.id, p.hs, true)
	}
	if res.left != nil {
		// Senders this node follows whose part is gone from the same
		// dataset: they left the room (their empty write's message was
		// lost).
		for id := range r.senders {
			if res.left(id) {
				delete(r.senders, id)
				l.b.hub.Apply(r.name, id, nil, true)
			}
		}
	}
	r.fetching = false
	buf := r.buf
	r.buf = nil
	var tried map[string]bool
	for _, m := range buf {
		if _, ok := r.senders[m.sender]; !ok && (res.only == "" || res.only == m.sender) {
			if tried == nil {
				tried = map[string]bool{}
			}
			tried[m.sender] = true
		}
	}
	for _, m := range buf {
		l.handle(r, m, false, tried)
	}
	if !r.loaded {
		r.loaded = true
		l.b.hub.Loaded(r.name)
	}
	if r.refetch && !r.fetching {
		r.refetch = false
		l.fetch(r, "", "")
	}
}

func (l *roomsLoop) housekeeping(now time.Time) {
	for r := range l.unloaded {
		if l.rooms[r.name] != r || r.loaded {
			delete(l.unloaded, r)
		} else if now.After(r.deadline) {
			// Redis is slow or away: the first syncs go with what this
			// node knows; the rest follows as Apply.
			delete(l.unloaded, r)
			r.loaded = true
			l.b.hub.Loaded(r.name)
		}
	}
	for r := range l.suspects {
		if l.rooms[r.name] != r || r.suspect == nil {
			delete(l.suspects, r)
		} else if now.After(r.suspectAt) {
			delete(l.suspects, r)
			// Still behind a second after Redis said so: a message was
			// lost (its own would have arrived by now).
			for id, seq := range r.suspect {
				if r.senders[id] < seq {
					l.fetch(r, id, ResyncGap)
				}
			}
			r.suspect = nil
		}
	}
	for id, t := range l.dead {
		if now.Sub(t) > time.Hour {
			delete(l.dead, id)
		}
	}
}

// antiEntropy reads the seqs in Redis of every loaded room, to compare
// them with what was applied (onSeqs).
func (l *roomsLoop) antiEntropy() {
	var rs []*roomState
	for _, r := range l.rooms {
		if r.confirmed && !r.fetching {
			rs = append(rs, r)
		}
	}
	if len(rs) > 0 && !l.aeOut {
		l.aeOut = true
		l.jobs = append(l.jobs, fetchJob{seqsOf: rs})
	}
}

// onSeqs takes the anti-entropy read of rooms' seqs.
func (l *roomsLoop) onSeqs(res fetchResult) {
	l.aeOut = false
	for r, seqs := range res.seqs {
		if l.rooms[r.name] != r {
			continue
		}
		for id, seq := range seqs {
			if l.b.isOwn(id) {
				continue
			}
			if _, ok := l.dead[id]; ok {
				continue
			}
			if r.senders[id] < seq {
				if r.suspect == nil {
					r.suspect = map[string]uint64{}
				}
				r.suspect[id] = seq
				r.suspectAt = time.Now().Add(time.Second)
				l.suspects[r] = struct{}{}
			}
		}
	}
}
