package redisbus

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// goneScript deletes a dead id's part of a room and tells the room's
// watchers, on the room's slot.
//
//	KEYS[1] m:<room>|<id>   KEYS[2] n:<room>
//	with events only: KEYS[3] whu:<room>|<id>   KEYS[4] whg:<room>|<id>
//	                  KEYS[5] whp (the partition's pending releases)
//	                  KEYS[6] whpr:<room> (the room's, an index of whp)
//	ARGV    id, publish command, channel, gone message,
//	        with events only: the leave grace (ms), room
//
// With events it returns the users id held (their holds end after the
// leave grace: releaseAfterGrace), else 1. The users are kept for an hour
// in whg, so that the reaper, retrying after a lost reply, gets them
// again (the part is gone by then); the release deletes the copy.
// The release is also recorded in whp with its due time (Redis TIME plus
// the grace: whp is timed by Redis's clock, never a node's): if the
// reaper does not run it (stopped, drained), another node's sweeper does.
const goneScriptSrc = nowMsLua + `
local held = 1
if #KEYS > 2 then
  local kept = redis.call('GET', KEYS[4])
  if kept then
    held = cjson.decode(kept)
  else
    held = redis.call('HKEYS', KEYS[1])
    if #held > 0 then
      redis.call('SET', KEYS[4], cjson.encode(held), 'PX', 3600000)
      local due = now_ms() + tonumber(ARGV[5])
      redis.call('ZADD', KEYS[5], 'NX', string.format('%.0f', due), ARGV[1] .. '|' .. ARGV[6])
      redis.call('SADD', KEYS[6], ARGV[1])
      -- Outlives its entries (a release pending past whg's hour is
      -- dropped by the sweep), even if one removes them without it.
      redis.call('PEXPIRE', KEYS[6], tonumber(ARGV[5]) + 7200000)
    end
  end
  redis.call('DEL', KEYS[3])
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call(ARGV[2], ARGV[3], ARGV[4])
return held
`

var goneScript = redis.NewScript(goneScriptSrc)

// reapLockTTL bounds the reaper's lock; the holder renews it while it
// reaps (holdLock) and deletes it when its own end cuts the reap, so a
// leaving node waiting for it can take over (leaveEvents). A holder that
// dies blocks the others for this long at most.
const reapLockTTL = 15 * time.Second

// lockRenewScript renews (ARGV[2] > 0: PEXPIRE ms) or deletes (0) the
// lock KEYS[1] if ARGV[1] holds it.
var lockRenewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
`)

// holdLock renews id's reaper lock, held by owner, every third of its
// TTL until the returned func is called; release deletes it then.
func (b *Bus) holdLock(ctx context.Context, id, owner string) func(release bool) {
	key := b.k.reapLock(id)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(reapLockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				_ = lockRenewScript.Run(ctx, b.data, []string{key}, owner, reapLockTTL.Milliseconds()).Err()
			}
		}
	})
	return func(release bool) {
		close(done)
		wg.Wait()
		if release { // the caller's ctx may be done: a short one of its own
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = lockRenewScript.Run(rctx, b.data, []string{key}, owner, 0).Err()
		}
	}
}

// reap deletes the room keys of the dead id: one node only (SET NX
// reap:<id>, renewed while it reaps), per room in rooms:<id> (read with
// SSCAN), then rooms:<id>. Failures are retried with backoff for about a
// minute; a reap cut by ctx (this node's end) releases the lock.
func (b *Bus) reap(ctx context.Context, id string) {
	if b.reapHook != nil {
		b.reapHook(id)
	}
	me := b.selfID()
	ok, err := b.data.SetNX(ctx, b.k.reapLock(id), me, reapLockTTL).Result()
	if err != nil {
		b.m.errors.WithLabelValues("reap").Inc()
		return
	}
	if !ok {
		return // another node reaps it
	}
	held := map[string][]string{} // room -> users id held, for Config.Events
	if b.reapLocked(ctx, id, me, held, time.Now().Add(time.Minute)) {
		b.releaseAfterGrace(ctx, id, held)
	}
}

// reapLocked runs reapOnce under id's lock, held by owner, retrying with
// backoff until it succeeds (true), deadline passes or ctx is done (the
// lock is then released: another may take over).
func (b *Bus) reapLocked(ctx context.Context, id, owner string, held map[string][]string, deadline time.Time) bool {
	unlock := b.holdLock(ctx, id, owner)
	backoff := 100 * time.Millisecond
	for {
		err := b.reapOnce(ctx, id, held)
		if err == nil {
			unlock(false) // kept until it expires: a late peer finds it
			return true
		}
		b.m.errors.WithLabelValues("reap").Inc()
		if time.Now().After(deadline) {
			b.log.Warn("redisbus: reaping a dead node's keys failed", "id", id, "err", err)
			unlock(true)
			return false
		}
		if !retryPause(ctx, &backoff) {
			unlock(true)
			return false
		}
	}
}

func (b *Bus) reapOnce(ctx context.Context, id string, held map[string][]string) error {
	var cursor uint64
	for {
		rooms, next, err := b.data.SScan(ctx, b.k.rooms(id), cursor, "", scanCount).Result()
		if err != nil {
			return err
		}
		if len(rooms) > 0 {
			if err := b.gone(ctx, id, rooms, held); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	return b.data.Del(ctx, b.k.rooms(id)).Err()
}

// gone runs goneScript for each room, pipelined; with Config.Events it
// adds the users id held to held, those of every call that succeeded, and
// returns the first error.
func (b *Bus) gone(ctx context.Context, id string, rooms []string, held map[string][]string) error {
	var first error
	now := time.Now().UnixMilli()
	grace := b.cfg.LeaveGrace.Milliseconds()
	for len(rooms) > 0 {
		n := min(len(rooms), pipelineRooms)
		pipe := b.data.Pipeline()
		calls := make([]*scriptCall, n)
		for i, room := range rooms[:n] {
			m := message{kind: kindGone, sender: id, room: room, ts: now}
			c := &scriptCall{keys: []string{b.k.members(room, id), b.k.seqs(room)},
				args: []any{id, b.publishCmd(), b.k.channel(room), appendMessage(nil, &m)}}
			if b.cfg.Events != nil {
				c.keys = append(c.keys, b.k.unacked(room, id), b.k.goneHeld(room, id), b.k.pendingRelease(partition(room)),
					b.k.pendingOf(room))
				c.args = append(c.args, grace, room)
			}
			c.cmd = pipe.EvalSha(ctx, goneScript.Hash(), c.keys, c.args...)
			calls[i] = c
		}
		_, _ = pipe.Exec(ctx)
		b.evalNoScript(ctx, goneScriptSrc, calls)
		// Every call that succeeded has deleted its part: its users are
		// kept even when another call failed (a retry finds the part gone).
		for i, c := range calls {
			v, err := c.cmd.Result()
			if err != nil {
				if first == nil {
					first = err
				}
				continue
			}
			// The list is whole each time (read or kept): it replaces.
			if users, ok := v.([]any); ok && len(users) > 0 {
				list := make([]string, 0, len(users))
				for _, u := range users {
					if s, ok := u.(string); ok {
						list = append(list, s)
					}
				}
				held[rooms[i]] = list
			}
		}
		rooms = rooms[n:]
	}
	return first
}

// leavePeerWait bounds how long a leaving node with Events waits for a
// peer's reaper to take its lock.
const leavePeerWait = 500 * time.Millisecond

// leaveEvents: with Events the peers' reaper must find the left node's
// parts (it ends their holds after the leave grace), so Leave does not
// delete them. It waits (a third of ctx's time at most, leavePeerWait
// for the lock to be taken) until rooms:<id> is gone, the reap done.
// When no peer took the lock (none live, or all leaving at once), or the
// peer's reap was cut (its lock deleted, rooms:<id> still there), the
// node takes the lock itself and runs goneScript over its rooms, retrying
// within ctx: the parts go and their releases are recorded (whg, whp)
// for a node's sweep, about 30 s after their due time (the grace). What
// ctx leaves undone (a peer still reaping at its end, or cut later) is
// the reconcile's (stale parts, then their members), and rooms:<id>
// expires a day after the node's last round.
func (b *Bus) leaveEvents(ctx context.Context, id string) {
	if b.lv.hasPeers() {
		wait := time.Second
		if d, ok := ctx.Deadline(); ok {
			wait = time.Until(d) / 3
		}
		// The no-peer wait never outlasts the whole wait: with less than
		// 3 × leavePeerWait of Leave left, "no peer yet" must end in the
		// node reaping itself, not in "a peer still reaps".
		peerWait := min(leavePeerWait, wait)
		taken := false
		for start, end := time.Now(), time.Now().Add(wait); ; {
			pipe := b.data.Pipeline()
			lock := pipe.Exists(ctx, b.k.reapLock(id))
			rooms := pipe.Exists(ctx, b.k.rooms(id))
			if _, err := pipe.Exec(ctx); err == nil {
				if rooms.Val() == 0 {
					return // reaped
				}
				if lock.Val() == 1 {
					taken = true
				} else if taken {
					break // the peer's reap was cut: take over
				}
			}
			if !taken && time.Since(start) >= peerWait {
				break // no peer reaps
			}
			if time.Now().After(end) {
				if !taken {
					break // no peer reaps
				}
				return // a peer still reaps
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	ok, err := b.data.SetNX(ctx, b.k.reapLock(id), id, reapLockTTL).Result()
	if err != nil {
		b.m.errors.WithLabelValues("reap").Inc()
		return
	}
	if !ok {
		return // a peer reaps
	}
	deadline := time.Now().Add(time.Minute)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	b.reapLocked(ctx, id, id, map[string][]string{}, deadline)
}
