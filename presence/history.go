package presence

import (
	"context"
	"slices"
	"time"
)

// The history of a room (room.history) keeps its recent versions for
// resume. A version is dropped when it is older than Config.HistoryAge or
// beyond Config.History versions: when the room records a new version
// (record), and, for a room that stays idle, by the hub's history sweep
// (sweepHistory), so an idle room does not keep every join's change
// forever. Dropping versions only makes resume fall back to a sync sooner,
// which the contract allows.
//
// The sweep visits only the rooms whose history is not empty: each shard
// lists them in roomShard.aged (a room adds itself when its history
// becomes non-empty; the sweep removes it once empty, dropRoomLocked when
// the room goes). It holds a shard's lock only to copy at most
// sweepBatch room pointers, and a room's lock only to trim that room
// (at most Config.History versions), so no lock is held for work that
// grows with the number of rooms.

// sweepBatch is the most rooms the history sweep copies under one hold of
// a shard's lock.
const sweepBatch = 64

// sweepEvery is the period of the history sweep: an idle room's version is
// gone at most HistoryAge + HistoryAge/8 after it was published.
func sweepEvery(cfg *Config) time.Duration { return max(cfg.HistoryAge/8, cfg.Tick) }

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
	r.trimHistoryLocked(now, cfg.History-1)
	if partial {
		changes = nil // resume never crosses a partial version
	}
	r.history = append(r.history, version{seq: r.seq, at: now, partial: partial, changes: changes})
	if len(r.history) == 1 {
		r.shard.mu.Lock()
		r.shard.ageLocked(r)
		r.shard.mu.Unlock()
	}
}

// trimHistoryLocked drops the versions older than Config.HistoryAge and
// the oldest beyond keep. An emptied history gives back its backing array,
// and so does one using less than a quarter of a large array (the dropped
// versions' change lists go with them).
func (r *room) trimHistoryLocked(now int64, keep int) {
	age := int64(r.hub.cfg.HistoryAge)
	drop := 0
	for drop < len(r.history) && (len(r.history)-drop > keep || now-r.history[drop].at > age) {
		drop++
	}
	if drop == 0 {
		return
	}
	n := len(r.history) - drop
	switch {
	case n == 0:
		r.history = nil
	case cap(r.history) > 16 && cap(r.history) > 4*n:
		r.history = slices.Clone(r.history[drop:])
	default:
		copy(r.history, r.history[drop:])
		clear(r.history[n:])
		r.history = r.history[:n]
	}
}

// expireHistory drops r's versions older than Config.HistoryAge; once its
// history is empty, r leaves its shard's aged list.
func (r *room) expireHistory(now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		return // dropRoomLocked took it off the list
	}
	r.trimHistoryLocked(now, r.hub.cfg.History)
	if len(r.history) == 0 {
		r.shard.mu.Lock()
		r.shard.unageLocked(r)
		r.shard.mu.Unlock()
	}
}

// ageLocked adds r to sh.aged unless it is there. O(1).
func (sh *roomShard) ageLocked(r *room) {
	if r.agedAt < 0 {
		r.agedAt = int32(len(sh.aged))
		sh.aged = append(sh.aged, r)
	}
}

// unageLocked removes r from sh.aged if it is there. O(1): the last entry
// takes its place. The list's array is given back once it is empty.
func (sh *roomShard) unageLocked(r *room) {
	i := r.agedAt
	if i < 0 {
		return
	}
	last := len(sh.aged) - 1
	sh.aged[i] = sh.aged[last]
	sh.aged[i].agedAt = i
	sh.aged[last] = nil
	sh.aged = sh.aged[:last]
	r.agedAt = -1
	if last == 0 {
		sh.aged = nil
	}
}

// sweepHistory runs on a goroutine of Hub.Run (which joins it) until ctx
// is done: every sweepEvery it drops the expired versions of every room
// whose history is not empty, so an idle room gives its history back
// without waiting for its next change. It needs no timer per room.
func (h *Hub) sweepHistory(ctx context.Context) {
	t := time.NewTicker(sweepEvery(&h.cfg))
	defer t.Stop()
	var batch []*room
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i := range h.rooms {
			batch = h.rooms[i].sweep(h.now(), batch)
		}
	}
}

// sweep calls expireHistory for each room of sh.aged, copying at most
// sweepBatch of them per hold of sh.mu. It walks the list from its end, so
// the O(1) removals meanwhile (the last entry moves into the hole) never
// move a room not yet visited past the walk: a room is visited at least
// once per sweep if it was listed when the sweep started (a room listed
// during the sweep may wait for the next one). batch is scratch, returned
// for reuse, holding no rooms.
func (sh *roomShard) sweep(now int64, batch []*room) []*room {
	sh.mu.Lock()
	next := len(sh.aged)
	sh.mu.Unlock()
	for next > 0 {
		sh.mu.Lock()
		next = min(next, len(sh.aged))
		from := max(0, next-sweepBatch)
		batch = append(batch[:0], sh.aged[from:next]...)
		sh.mu.Unlock()
		next = from
		for _, r := range batch {
			r.expireHistory(now)
		}
	}
	clear(batch)
	return batch[:0]
}
