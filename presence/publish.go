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
// next tick. Called by the scheduler's workers.
func (r *room) flush(t time.Time) (again bool) {
	now := r.hub.at(t)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		return false
	}
	r.marked = false
	r.expireLocked(now)
	frame, first, busy := r.publishLocked(now)
	if frame != nil {
		r.fanoutLocked(frame, first, now)
	}
	if r.needSync > 0 {
		r.sendSyncsLocked(now)
		busy = true
	}
	if r.emptyLocked() {
		r.hub.dropRoomLocked(r)
		return false
	}
	if !busy {
		// An idle tick: give back the scratch memory a burst grew. A room
		// busy every tick keeps it and allocates nothing.
		r.pending = coalesce.Changes[string, snap]{}
		r.buf, r.syncFrame, r.targets = nil, nil, nil
	}
	// One more visit after a busy tick, to notice the room went idle.
	again = busy || len(r.graced) > 0 || len(r.typing) > 0 || r.needSync > 0
	r.marked = again
	return again
}

// publishLocked encodes the pending changes as one diff, once, and returns
// its frame (nil if nothing changed) and the time of the tick's first
// change. busy reports whether the tick had any change, even one that
// netted to nothing.
func (r *room) publishLocked(now int64) (frame []byte, first int64, busy bool) {
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
		return nil, 0, first != 0
	}
	r.seq++
	count := len(r.members)
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
	m.Diffs.Add(1)
	crossed := partial != r.partial
	if crossed {
		// Crossing list_limit changes what diffs carry: everyone resyncs.
		r.partial = partial
		for _, sb := range r.subs {
			r.needResyncLocked(sb)
		}
	}
	r.record(changes, partial || crossed, now)
	if len(p) > r.hub.cfg.SyncBudget {
		// A diff this large would not fit most outboxes: a sync is smaller.
		for _, sb := range r.subs {
			r.needResyncLocked(sb)
		}
	}
	return r.hub.frame(p), first, true
}

// lockedFanout is the most subscribers a diff is handed to with the room
// lock held. Each Send may be a write system call (several microseconds on
// loopback), so a larger room is served without the lock: commands for it,
// which run on the event loops, never wait for a whole fan-out.
const lockedFanout = 64

// fanoutLocked hands frame to every subscriber that is in sync and marks
// those whose outbox was full for a sync. Beyond lockedFanout subscribers
// it releases the room lock while sending: the targets are fixed first;
// meanwhile r.fanning defers immediate syncs (so a client never gets a
// sync at this version before this diff), subscribers that leave are
// skipped through sub.gone, and new ones have their own sync or resume at
// this version already. Only the flusher of this room runs it, so r.targets
// is its own.
func (r *room) fanoutLocked(frame []byte, first, now int64) {
	targets := r.targets[:0]
	for _, sb := range r.subs {
		if !sb.needSync {
			targets = append(targets, sb)
		}
	}
	var sent int
	var failed []*sub
	if len(targets) <= lockedFanout {
		sent, failed = deliverAll(targets, frame, now)
	} else {
		r.fanning = true
		r.mu.Unlock()
		sent, failed = r.hub.deliverParallel(targets, frame, now)
		r.mu.Lock()
		r.fanning = false
	}
	clear(targets) // no references to sessions that may go
	r.targets = targets[:0]
	for _, sb := range failed {
		if !sb.gone.Load() {
			r.needResyncLocked(sb)
		}
	}
	m := &r.hub.cfg.Metrics
	r.hub.countSent(sent, len(frame))
	if len(failed) > 0 {
		m.DroppedDiffs.Add(float64(len(failed)))
	}
	if first != 0 {
		m.FanoutLatency.Observe(float64(r.hub.now()-first) / 1e9)
	}
}

// parallelFanout is the subscriber count from which a diff is handed to
// the sinks by several goroutines: each Send may be a write system call,
// so one goroutine would take tens of milliseconds for a very large room.
const parallelFanout = 4096

// deliverParallel sends frame to subs, split across up to Config.Workers
// goroutines (joined before it returns) from parallelFanout subscribers.
func (h *Hub) deliverParallel(subs []*sub, frame []byte, now int64) (sent int, failed []*sub) {
	workers := min(h.cfg.Workers, len(subs)/(parallelFanout/2))
	if workers < 2 {
		return deliverAll(subs, frame, now)
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
		wg.Go(func() { results[i].sent, results[i].failed = deliverAll(part, frame, now) })
	}
	wg.Wait()
	for _, res := range results {
		sent += res.sent
		failed = append(failed, res.failed...)
	}
	return sent, failed
}

// deliverAll sends frame to subs, skipping those that left meanwhile.
func deliverAll(subs []*sub, frame []byte, now int64) (sent int, failed []*sub) {
	for _, sb := range subs {
		if sb.gone.Load() {
			continue
		}
		if sb.s.deliver(frame, now) {
			sent++
		} else {
			failed = append(failed, sb)
		}
	}
	return sent, failed
}

func (r *room) needResyncLocked(sb *sub) {
	if !sb.needSync {
		sb.needSync = true
		r.needSync++
		sb.s.owed.Add(1)
		r.markLocked()
	}
}

// syncedLocked clears sb's need for a sync (it got one, or left). A
// session owed nothing any more is not a slow consumer.
func (r *room) syncedLocked(sb *sub) {
	sb.needSync = false
	r.needSync--
	if sb.s.owed.Add(-1) == 0 {
		sb.s.slowSince.Store(0)
	}
}

// record keeps the published changes for resume.
func (r *room) record(changes []change, partial bool, now int64) {
	cfg := &r.hub.cfg
	for _, c := range changes {
		switch {
		case c.isJoin():
			cfg.Metrics.Joins.Add(1)
		case c.isLeave():
			cfg.Metrics.Leaves.Add(1)
		default:
			cfg.Metrics.Updates.Add(1)
		}
	}
	drop := 0
	for drop < len(r.history) && (len(r.history)-drop >= cfg.History || now-r.history[drop].at > int64(cfg.HistoryAge)) {
		drop++
	}
	if drop > 0 {
		n := copy(r.history, r.history[drop:])
		clear(r.history[n:])
		r.history = r.history[:n]
	}
	if partial {
		changes = nil // resume never crosses a partial version
	}
	r.history = append(r.history, version{seq: r.seq, at: now, partial: partial, changes: changes})
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
// apply cleanly.
func (r *room) syncLocked(sb *sub, now int64) {
	if r.pending.Len() > 0 || r.fanning {
		r.needResyncLocked(sb)
		return
	}
	frame := r.syncFrameLocked()
	if !sb.s.deliver(frame, now) {
		r.needResyncLocked(sb)
		return
	}
	if sb.needSync {
		r.syncedLocked(sb)
	}
	r.hub.countSent(1, len(frame))
}

// sendSyncsLocked sends one sync, encoded once, to every sub that needs it.
func (r *room) sendSyncsLocked(now int64) {
	frame := r.syncFrameLocked()
	sent := 0
	for _, sb := range r.subs {
		if !sb.needSync {
			continue
		}
		if sb.s.deliver(frame, now) {
			r.syncedLocked(sb)
			sent++
		}
	}
	r.hub.countSent(sent, len(frame))
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
	count := len(r.members)
	partial := count > cfg.ListLimit
	p := wire.AppendSyncStart(r.buf[:0], r.name, r.cursor(), count)
	listed := 0
	for _, m := range r.members {
		if listed == cfg.ListLimit {
			break
		}
		n := len(p)
		p = wire.AppendMember(p, m.user, m.st.status, m.st.meta)
		if len(p) > cfg.SyncBudget {
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
	if !sb.s.deliver(frame, now) {
		r.needResyncLocked(sb)
		return true
	}
	r.hub.countSent(1, len(frame))
	return true
}
