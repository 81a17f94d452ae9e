package redisbus

import (
	"context"
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
const goneScriptSrc = `
local held = 1
if #KEYS > 2 then
  local kept = redis.call('GET', KEYS[4])
  if kept then
    held = cjson.decode(kept)
  else
    held = redis.call('HKEYS', KEYS[1])
    if #held > 0 then
      redis.call('SET', KEYS[4], cjson.encode(held), 'PX', 3600000)
      local t = redis.call('TIME')
      local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[5])
      redis.call('ZADD', KEYS[5], 'NX', string.format('%.0f', due), ARGV[1] .. '|' .. ARGV[6])
      redis.call('SADD', KEYS[6], ARGV[1])
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

// reapLockTTL bounds the reaper's lock: a reaper that dies midway leaves
// the rest to nobody (the keys are ignored: their id is not registered).
const reapLockTTL = 10 * time.Minute

// reap deletes the room keys of the dead id: one node only (SET NX
// reap:<id>), per room in rooms:<id> (read with SSCAN), then rooms:<id>.
// Failures are retried with backoff for about a minute.
func (b *Bus) reap(ctx context.Context, id string) {
	ok, err := b.data.SetNX(ctx, b.k.reapLock(id), b.selfID(), reapLockTTL).Result()
	if err != nil {
		b.m.errors.WithLabelValues("reap").Inc()
		return
	}
	if !ok {
		return // another node reaps it
	}
	backoff := 100 * time.Millisecond
	held := map[string][]string{} // room -> users id held, for Config.Events
	for deadline := time.Now().Add(time.Minute); ; {
		err := b.reapOnce(ctx, id, held)
		if err == nil {
			b.releaseAfterGrace(ctx, id, held)
			return
		}
		b.m.errors.WithLabelValues("reap").Inc()
		if time.Now().After(deadline) {
			b.log.Warn("redisbus: reaping a dead node's keys failed", "id", id, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
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
// delete them. When no peer reaps (none live, or all leaving at once: a
// leaving node ignores the others' bye), the node takes the reaper's
// lock itself and runs goneScript over its rooms: the parts go, and
// their releases are recorded (whg, whp) for the next node's sweep,
// about 30 s after their due time (the grace).
func (b *Bus) leaveEvents(ctx context.Context, id string) {
	if b.lv.hasPeers() {
		wait := leavePeerWait
		if d, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(d)/2)
		}
		for end := time.Now().Add(wait); time.Now().Before(end); {
			if n, err := b.data.Exists(ctx, b.k.reapLock(id)).Result(); err == nil && n == 1 {
				return // a peer reaps
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
	if err := b.reapOnce(ctx, id, map[string][]string{}); err != nil {
		b.m.errors.WithLabelValues("reap").Inc()
	}
}
