package presence

import (
	"slices"
	"sync"
	"time"

	"github.com/presenced/presenced/coalesce"
	"github.com/presenced/presenced/internal/wire"
)

// flush publishes the room's net change since the last tick as one diff,
// sends pending syncs, ends graces and typing that are over, and drops the
// room once it is empty. It reports whether the room needs another visit
// next tick. Called by the scheduler's workers; flushes of one room never
// overlap.
//
// It works in three steps, so that no frame is handed to a sink, and no
// work proportional to the room's subscribers beyond copying their
// pointers is done, with r.mu held (commands for the room run on the event
// loops and take r.mu):
//  1. plan, locked: encode the diff once (and the sync, when someone is owed
//     one), copy the targets into r.out;
//  2. deliver, unlocked: hand the frames to the sinks (in parallel for very
//     large rooms), recording who did not take them;
//  3. settle, locked: failed diffs become owed syncs, delivered syncs settle
//     their debts, and subscriptions owed a sync for SlowTimeout are closed
//     with 4002 (after the lock is released).
//
// While step 2 runs, r.fanning defers immediate syncs to the next flush, so
// a client never gets a sync at this version before this tick's diff, and
// new subscribers' syncs are owed to the next flush too (a resume is sent at
// once); subscribers that leave are skipped through sub.gone, which
// sub.sendMu orders with the leave's ack.
func (r *room) flush(t time.Time) (again bool) {
	now := r.hub.at(t)
	r.mu.Lock()
	if r.dead {
		r.mu.Unlock()
		return false
	}
	r.marked = false
	r.expireLocked(now)
	linger := r.cl != nil && r.lingerLocked(now)
	first, busy := r.planLocked(now)
	if r.cl != nil {
		r.publishBusLocked(now)
	}
	out := r.out
	var slow []*Session
	if out.frame != nil || len(out.owed) > 0 {
		r.fanning = true
		r.mu.Unlock()
		out.deliver(r.hub)
		r.mu.Lock()
		r.fanning = false
		slow = r.settleLocked(first, now)
	}
	if r.emptyLocked() {
		if r.cl != nil {
			if r.cl.watched {
				r.unwatchLocked(now)
			}
			// This node holds nobody here any more: the bus can forget the
			// room (it skips a room it never wrote).
			r.hub.cfg.Bus.Publish(r.name, nil, true)
		}
		r.hub.dropRoomLocked(r)
		r.mu.Unlock()
		return false
	}
	if !busy && r.pending.Len() == 0 {
		// An idle tick: give back the scratch memory a burst grew. A room
		// busy every tick keeps it and allocates nothing.
		r.pending = coalesce.Changes[string, snap]{}
		r.buf, r.syncFrame, r.out = nil, nil, nil
		if r.cl != nil {
			// Published above, and the lock was held since (an idle
			// tick delivers nothing): the list is empty.
			r.cl.dirty = nil
		}
		if len(r.owed) == 0 {
			r.owed = nil // the list a join storm grew: 24 bytes a joiner
		}
	}
	// One more visit after a busy tick, to notice the room went idle.
	again = busy || linger || len(r.graced) > 0 || len(r.typing) > 0 || len(r.owed) > 0 || r.pending.Len() > 0
	r.marked = again
	r.mu.Unlock()
	for _, s := range slow {
		if s.closeWith(wire.CloseSlowConsumer, CloseSlow, "slow consumer") {
			r.hub.cfg.Metrics.SlowCloses.Add(1)
		}
	}
	return again
}

// fanout is one tick's deliveries of a room: planned under the room lock,
// carried out without it. Owned by the room's flusher.
type fanout struct {
	frame    []byte    // for every sub in sync: the diff, or the sync when the whole room resyncs; nil if none
	isSync   bool      // frame is the sync (its failures are not dropped diffs)
	all      []*sub    // a copy of r.subs, when frame is set
	sync     []byte    // the sync frame, when owed is not empty
	owed     []owedSub // a copy of r.owed
	owedSubs []*sub    // the subs of owed, to deliver to
	failed   []*sub    // subs of all that did not take frame (not those that left)
	missed   []*sub    // subs of owed that did not take the sync (not those that left)
	sent     int       // subs of all that took frame
	sentOwed int       // subs of owed that took the sync
}

// planLocked publishes the tick's changes and plans their fan-out in r.out.
// It returns the time of the tick's first change and whether the room was
// busy (see publishLocked; a room owing syncs is busy too).
func (r *room) planLocked(now int64) (first int64, busy bool) {
	if r.out == nil {
		r.out = new(fanout)
	}
	out := r.out
	diff, first, busy, resyncAll := r.publishLocked(now)
	out.frame, out.isSync = diff, false
	if resyncAll {
		out.frame, out.isSync = r.syncFrameLocked(), true
	}
	if out.frame != nil {
		out.all = append(out.all[:0], r.subs...)
	}
	if len(r.owed) > 0 && r.loadingLocked(now) {
		busy = true // the syncs wait for the other nodes' members
	} else if len(r.owed) > 0 {
		out.sync = r.syncFrameLocked()
		out.owed = append(out.owed[:0], r.owed...)
		out.owedSubs = out.owedSubs[:0]
		for _, o := range r.owed {
			out.owedSubs = append(out.owedSubs, o.sb)
		}
		busy = true
	}
	return first, busy
}

// deliver hands the planned frames to the sinks. It runs without the room
// lock: it only reads the plan and the subs' gone flags.
func (out *fanout) deliver(h *Hub) {
	out.sent, out.sentOwed = 0, 0
	if out.frame != nil {
		out.sent, out.failed = h.deliverParallel(out.all, out.frame, out.failed[:0])
	}
	if len(out.owedSubs) > 0 {
		out.sentOwed, out.missed = h.deliverParallel(out.owedSubs, out.sync, out.missed[:0])
	}
}

// settleLocked applies what deliver did: subs that missed the frame are
// owed a sync, owed subs that took their sync are in sync again (unless
// they asked for another one meanwhile). It returns the sessions with a
// subscription owed a sync for SlowTimeout: the caller closes them with
// 4002 once the lock is released. Its work is proportional to the
// failures and the debts, not to the subscribers.
func (r *room) settleLocked(first, now int64) (slow []*Session) {
	out := r.out
	for _, sb := range out.failed {
		if !sb.gone {
			r.oweLocked(sb, now)
		}
	}
	for _, sb := range out.missed {
		sb.missed = true
	}
	for _, o := range out.owed {
		sb := o.sb
		took := !sb.missed
		sb.missed = false
		if sb.gone || !sb.owed {
			continue
		}
		e := &r.owed[sb.idx]
		switch {
		case took && e.asks == o.asks:
			r.syncedLocked(sb)
		case took:
			e.since = now // asked for another sync while this one was sent: a new debt
		case now-e.since >= int64(r.hub.cfg.SlowTimeout):
			slow = append(slow, sb.s)
		}
	}
	m := &r.hub.cfg.Metrics
	if out.frame != nil {
		r.hub.countSent(out.sent, len(out.frame))
		if !out.isSync && len(out.failed) > 0 {
			m.DroppedDiffs.Add(float64(len(out.failed)))
		}
		if first != 0 {
			m.FanoutLatency.Observe(float64(r.hub.now()-first) / 1e9)
		}
	}
	r.hub.countSent(out.sentOwed, len(out.sync))
	// No references to sessions that may go.
	clear(out.all)
	clear(out.owed)
	clear(out.owedSubs)
	clear(out.failed)
	clear(out.missed)
	out.all, out.owed, out.owedSubs = out.all[:0], out.owed[:0], out.owedSubs[:0]
	out.failed, out.missed = out.failed[:0], out.missed[:0]
	out.frame, out.sync = nil, nil
	return slow
}

// publishLocked encodes the pending changes as one diff, once, and returns
// its frame (nil if nothing changed) and the time of the tick's first
// change. busy reports whether the tick had any change, even one that
// netted to nothing. resyncAll reports that every subscriber must get a
// sync instead of this diff: the room crossed list_limit (which changes
// what diffs carry), or the diff is larger than a sync.
func (r *room) publishLocked(now int64) (frame []byte, first int64, busy, resyncAll bool) {
	m := &r.hub.cfg.Metrics
	var changes []change // kept by the history
	if n := r.pending.Len(); n > 0 {
		changes = make([]change, 0, n)
		r.pending.Drain(func(user string, old, new snap) {
			if old.equal(new) {
				m.Coalesced.Add(1)
				return
			}
			changes = append(changes, change{user: user, wasPresent: old.present, new: new})
		})
	}
	typing := r.typingListLocked()
	typingChanged := !slices.Equal(typing, r.typingSent)
	first = r.firstChange
	r.firstChange = 0
	if len(changes) == 0 && !typingChanged {
		return nil, 0, first != 0, false
	}
	r.seq++
	count := r.members.len()
	r.count = count
	partial := count > r.hub.cfg.ListLimit
	p := wire.AppendDiffStart(r.buf[:0], r.name, wire.Cursor{Epoch: r.epoch, Seq: r.seq - 1}, r.cursor(), count)
	if !partial {
		p = appendChanges(p, changes)
	}
	if typingChanged {
		p = wire.AppendStrings(p, "typing", typing)
		r.typingSent = append(r.typingSent[:0], typing...)
	}
	p = wire.AppendEnd(p)
	r.buf = p
	crossed := partial != r.partial
	r.partial = partial
	r.emitLocked(changes, count)
	r.record(changes, partial || crossed, now)
	if crossed || len(p) > r.hub.cfg.SyncBudget {
		return nil, first, true, true // the version goes out as a sync
	}
	m.Diffs.Add(1)
	return r.hub.frame(p), first, true, false
}

// parallelFanout is the subscriber count from which a frame is handed to
// the sinks by several goroutines: each Send may be a write system call,
// so one goroutine would take tens of milliseconds for a very large room.
const parallelFanout = 4096

// deliverParallel sends frame to subs, split across up to Config.Workers
// goroutines (joined before it returns) from parallelFanout subscribers.
// It appends those that did not take it to failed.
func (h *Hub) deliverParallel(subs []*sub, frame []byte, failed []*sub) (sent int, _ []*sub) {
	workers := min(h.cfg.Workers, len(subs)/(parallelFanout/2))
	if workers < 2 {
		return deliverAll(subs, frame, failed)
	}
	type result struct {
		sent   int
		failed []*sub
	}
	results := make([]result, workers)
	chunk := (len(subs) + workers - 1) / workers
	var wg sync.WaitGroup
	for i := range workers {
		part := subs[min(i*chunk, len(subs)):min((i+1)*chunk, len(subs))]
		wg.Go(func() { results[i].sent, results[i].failed = deliverAll(part, frame, nil) })
	}
	wg.Wait()
	for _, res := range results {
		sent += res.sent
		failed = append(failed, res.failed...)
	}
	return sent, failed
}

// deliverAll sends frame to subs, skipping those that left meanwhile, and
// appends those that did not take it to failed.
func deliverAll(subs []*sub, frame []byte, failed []*sub) (sent int, _ []*sub) {
	for _, sb := range subs {
		switch ok, left := sb.deliver(frame); {
		case ok:
			sent++
		case !left:
			failed = append(failed, sb)
		}
	}
	return sent, failed
}

// oweLocked records that sb must get a full sync before any diff: it
// moves from r.subs to r.owed (O(1)), and the room is flushed until the
// debt is settled. For a sub already owed it counts one more request.
func (r *room) oweLocked(sb *sub, now int64) {
	if sb.owed {
		r.owed[sb.idx].asks++
		return
	}
	r.unsub(sb)
	sb.owed = true
	sb.idx = int32(len(r.owed))
	r.owed = append(r.owed, owedSub{sb: sb, since: now})
	r.markLocked()
}

// syncedLocked settles sb's debt: it got its sync, and gets diffs again.
func (r *room) syncedLocked(sb *sub) {
	r.unowe(sb)
	sb.idx = int32(len(r.subs))
	r.subs = append(r.subs, sb)
}

// appendChanges appends the join, update and leave lists of changes.
func appendChanges(p []byte, changes []change) []byte {
	var joins, updates, leaves int
	for _, c := range changes {
		switch {
		case c.isJoin():
			joins++
		case c.isLeave():
			leaves++
		default:
			updates++
		}
	}
	if joins > 0 {
		p = wire.AppendListStart(p, "join")
		for _, c := range changes {
			if c.isJoin() {
				p = wire.AppendMember(p, c.user, c.new.st.status, c.new.st.meta)
			}
		}
		p = wire.AppendListEnd(p)
	}
	if updates > 0 {
		p = wire.AppendListStart(p, "update")
		for _, c := range changes {
			if c.wasPresent && c.new.present {
				p = wire.AppendMember(p, c.user, c.new.st.status, c.new.st.meta)
			}
		}
		p = wire.AppendListEnd(p)
	}
	if leaves > 0 {
		p = wire.AppendListStart(p, "leave")
		for _, c := range changes {
			if c.isLeave() {
				p = wire.AppendListString(p, c.user)
			}
		}
		p = wire.AppendListEnd(p)
	}
	return p
}

// syncLocked sends sb a full sync now if the room has no unpublished
// change, else at the next flush, right after the diff that publishes them:
// a sync always shows the state at its cursor, so the diffs that follow it
// apply cleanly. Called on the event loop, where Send only queues.
func (r *room) syncLocked(sb *sub, now int64) {
	if r.pending.Len() > 0 || r.fanning || r.loadingLocked(now) {
		r.oweLocked(sb, now)
		return
	}
	frame := r.syncFrameLocked()
	if ok, _ := sb.deliver(frame); !ok {
		r.oweLocked(sb, now)
		return
	}
	if sb.owed {
		r.syncedLocked(sb)
	}
	r.hub.countSent(1, len(frame))
}

// syncFrameLocked returns the sync frame of the published state, encoding
// it at most once per version: the members and the published typing list
// only change when seq does, so a join storm or a stuck subscriber waiting
// for its sync does not re-encode a large room again and again.
func (r *room) syncFrameLocked() []byte {
	if r.syncFrame == nil || r.syncSeq != r.seq {
		r.syncFrame, r.syncSeq = r.encodeSyncLocked(), r.seq
	}
	return r.syncFrame
}

// encodeSyncLocked encodes the room's published state. At most
// Config.ListLimit members are listed, and no more than fit in
// Config.SyncBudget bytes; a sync that leaves members out is partial.
func (r *room) encodeSyncLocked() []byte {
	cfg := &r.hub.cfg
	count := r.members.len()
	partial := count > cfg.ListLimit
	p := wire.AppendSyncStart(r.buf[:0], r.name, r.cursor(), count)
	// The members fill what the budget leaves beside the typing list and
	// the end, so the whole sync stays within it (10 typing ids of 128
	// bytes fit the stack buffer).
	var end [2048]byte
	limit := cfg.SyncBudget - len(wire.AppendSyncEnd(end[:0], r.typingSent, false))
	listed := 0
	for m := range r.members.all() {
		if listed == cfg.ListLimit {
			break
		}
		n := len(p)
		p = wire.AppendMember(p, m.user, m.st.status, m.st.meta)
		if len(p) > limit {
			p = p[:n]
			partial = true
			break
		}
		listed++
	}
	// The published typing list: the diffs that follow carry changes
	// relative to it.
	p = wire.AppendSyncEnd(p, r.typingSent, partial)
	r.buf = p
	return r.hub.frame(p)
}

// resumeLocked sends sb the net change from cursor c to the room's current
// version, if the history still holds it. It reports false when the
// client must get a sync instead.
func (r *room) resumeLocked(sb *sub, c wire.Cursor, now int64) bool {
	if c.Epoch != r.epoch || c.Seq > r.seq || r.partial {
		return false
	}
	if c.Seq < r.seq && (len(r.history) == 0 || r.history[0].seq > c.Seq+1) {
		return false
	}
	// A partial view cannot be continued with a diff: the room must not
	// have been partial, nor crossed list_limit, since the cursor.
	for _, v := range r.history {
		if v.seq > c.Seq && v.partial {
			return false
		}
	}
	var net []change
	index := map[string]int{}
	for _, v := range r.history {
		if v.seq <= c.Seq {
			continue
		}
		if len(net) > r.hub.cfg.ListLimit {
			return false // a sync is cheaper than this diff
		}
		for _, ch := range v.changes {
			if i, ok := index[ch.user]; ok {
				net[i].new = ch.new
				continue
			}
			index[ch.user] = len(net)
			net = append(net, ch)
		}
	}
	kept := net[:0]
	for _, ch := range net {
		if ch.wasPresent || ch.new.present { // not a join and leave that cancel out
			kept = append(kept, ch)
		}
	}
	count := r.count // the published state, as the diff's cur: pending changes follow in the next diff
	p := wire.AppendDiffStart(r.buf[:0], r.name, c, r.cursor(), count)
	if count <= r.hub.cfg.ListLimit {
		p = appendChanges(p, kept)
	}
	// The client's typing list is unknown: send the whole current one.
	p = wire.AppendStrings(p, "typing", r.typingSent)
	p = wire.AppendEnd(p)
	r.buf = p
	if len(p) > r.hub.cfg.SyncBudget {
		return false
	}
	frame := r.hub.frame(p)
	if ok, _ := sb.deliver(frame); !ok {
		r.oweLocked(sb, now)
		return true
	}
	r.hub.countSent(1, len(frame))
	return true
}
