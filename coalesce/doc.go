// Package coalesce is presenced's time-window coalescer: it turns a stream
// of per-key changes into at most one net change per key per tick, so that
// presence sends one diff per room per tick however busy the room is. It
// owns two pieces, both generic and independent of presence:
//
//   - Changes[K, V] collects the net change per key within one window: the
//     value a key had when the window started and its latest value, in the
//     order keys first changed. A join then a leave nets to absent→absent,
//     which the caller drops; several updates keep the first old value and
//     the last new one.
//   - Scheduler[K] calls a flush function once per tick for every key
//     (e.g. room) marked since the previous tick, on a bounded pool of
//     worker goroutines rather than one goroutine or timer per key.
//
// It depends on the standard library only.
//
// Usage, with a room's changes guarded by the room's lock:
//
//	type member struct {
//		present bool
//		status  string
//	}
//
//	sched := coalesce.NewScheduler(coalesce.SchedulerConfig{}, func(id RoomID, now time.Time) bool {
//		r := rooms.get(id)
//		r.mu.Lock()
//		defer r.mu.Unlock()
//		r.changes.Drain(func(user string, old, new member) {
//			if old != new { // a join then a leave in one window is no change
//				r.diff = appendDiff(r.diff, user, new)
//			}
//		})
//		r.broadcastLocked(now)
//		return r.timersPendingLocked() // true: flush this room again next tick
//	})
//	go sched.Run(ctx) // flushes every 100 ms until ctx is done
//
//	// On every event, under the room's lock:
//	r.changes.Put(user, before, after)
//	sched.Mark(r.id)
//
// Concurrency: Changes is not safe for concurrent use; its owner guards it.
// Scheduler.Mark is safe for concurrent use, also from within flush. Ticks
// never overlap: Run runs them one after the other, and a tick ends only
// when every flush of it has returned.
// Within one tick, flush runs concurrently for different keys (never for
// the same key) on up to Workers goroutines; all get the same now.
//
// Goroutines: Scheduler.Run starts Workers-1 long-lived helpers (the
// goroutine calling Run is the last flusher) and joins them before it
// returns. Nothing else in the package starts a goroutine.
//
// Locks: Scheduler.mu is held only inside Mark and the swap at the start
// of a tick, never while calling flush. The caller's own locks, taken in
// flush, nest outside it (flush may call Mark while holding them).
package coalesce
