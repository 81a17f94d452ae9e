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
	busy := r.publishLocked(now)
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
		r.buf, r.syncFrame = nil, nil
	}
	// One more visit after a busy tick, to notice the room went idle.
	again = busy || len(r.graced) > 0 || len(r.typing) > 0 || r.needSync > 0
	r.marked = again
	return again
}

// publishLocked encodes the pending changes as one diff, once, and sends the
// same bytes to every subscriber that is in sync. It reports whether there
// was anything to publish.
func (r *room) publishLocked(now int64) bool {
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
	first := r.firstChange
	r.firstChange = 0
	if len(changes) == 0 && !typingChanged {
		return first != 0
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
	frame := r.hub.frame(p)
	sent, failed := r.fanoutLocked(frame, now)
	for _, sb := range failed {
		r.needResyncLocked(sb)
	}
	r.hub.countSent(sent, len(frame))
	if len(failed) > 0 {
		m.DroppedDiffs.Add(float64(len(failed)))
	}
	if first != 0 {
		m.FanoutLatency.Observe(float64(r.hub.now()-first) / 1e9)
	}
	return true
}

// parallelFanout is the subscriber count from which a diff is handed to
// the sinks by several goroutines: each Send may be a write system call,
// so one goroutine would take tens of milliseconds for a very large room.
const parallelFanout = 4096

// fanoutLocked sends frame to every subscriber that is in sync and returns
// how many took it and which did not. Rooms of parallelFanout subscribers
// or more are split across up to Config.Workers goroutines, joined before
// it returns; they only read the room.
func (r *room) fanoutLocked(frame []byte, now int64) (sent int, failed []*sub) {
	workers := min(r.hub.cfg.Workers, len(r.subs)/(parallelFanout/2))
	if workers < 2 {
		return deliverAll(r.subs, frame, now, nil)
	}
	type result struct {
		sent   int
		failed []*sub
	}
	results := make([]result, workers)
	chunk := (len(r.subs) + workers - 1) / workers
	var wg sync.WaitGroup
	for i := range workers {
		part := r.subs[min(i*chunk, len(r.subs)):min((i+1)*chunk, len(r.subs))]
		wg.Go(func() { results[i].sent, results[i].failed = deliverAll(part, frame, now, nil) })
	}
	wg.Wait()
	for _, res := range results {
		sent += res.sent
		failed = append(failed, res.failed...)
	}
	return sent, failed
}

// deliverAll sends frame to the subs that are in sync.
func deliverAll(subs []*sub, frame []byte, now int64, failed []*sub) (int, []*sub) {
	sent := 0
	for _, sb := range subs {
		if sb.needSync {
			continue // it gets a sync instead
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
	if r.pending.Len() > 0 {
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
