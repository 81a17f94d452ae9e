package redisbus

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/presence"
)

// Membership transitions (webhooks, docs/webhooks.md) are decided in Redis,
// where every node's holds meet: the room's write script compares the
// node's part before and after the write, and for each hold that started
// or ended updates the room's membership set (wh:<room>), producing an
// event only when the set changes. Redis runs the scripts of a room one
// at a time, so each transition is produced by exactly one script run,
// which returns it to the node that ran it.
//
// Keys, on the room's slot:
//
//	P{p<k>}:wh:<room>   SET of the room's members, as events last reported them
//	P{p<k>}:whrooms     SET of partition k's rooms with a wh: set (the reconcile's index)
//	P{p<k>}:whid        HASH: e the partition's id epoch (Redis TIME in ms, HSETNX), n its event counter
//	P{p<k>}:whu:<room>|<id>  events of id's writes not acknowledged yet (JSON), PX 1 h
//	P{p<k>}:whr:<room>|<id>|<chunk>  the events of a release (JSON), PX 1 h
//	P{p<k>}:whg:<room>|<id>  the users dead id held (JSON), kept by goneScript, PX 1 h
//	P{p<k>}:whp         ZSET of the partition's pending releases: <id>|<room> by due time (ms)
//	P{p<k>}:whs:<room>  HASH user -> when the reconcile first found it held by no part it keeps (ms)
//	P{p<k>}:whsp:<room> HASH id -> when the reconcile first found its part of the room stale (ms)
//	P{p<k>}:whso:<room> HASH whs:<room> of the reconcile's previous pass over the room, during a pass
//	P{p<k>}:whpr:<room> SET of the ids with a pending release of the room in whp (an index of whp)
//	P{p<k>}:whrc        the partition's reconcile claim, SET NX PX
//	P{p<k>}:whrcur      the partition's reconcile cursor (SSCAN of whrooms)

func (k keys) membership(room string) string { return k.part(partition(room)) + "wh:" + room }
func (k keys) eventIDs(room string) string   { return k.part(partition(room)) + "whid" }
func (k keys) whRooms(p int) string          { return k.part(p) + "whrooms" }
func (k keys) released(room, id string, chunk int) string {
	return k.part(partition(room)) + "whr:" + room + "|" + id + "|" + strconv.Itoa(chunk)
}
func (k keys) pendingRelease(p int) string { return k.part(p) + "whp" }
func (k keys) goneHeld(room, id string) string {
	return k.part(partition(room)) + "whg:" + room + "|" + id
}
func (k keys) unacked(room, id string) string {
	return k.part(partition(room)) + "whu:" + room + "|" + id
}
func (k keys) suspects(room string) string { return k.part(partition(room)) + "whs:" + room }
func (k keys) suspectParts(room string) string {
	return k.part(partition(room)) + "whsp:" + room
}
func (k keys) suspectsBefore(room string) string {
	return k.part(partition(room)) + "whso:" + room
}
func (k keys) pendingOf(room string) string { return k.part(partition(room)) + "whpr:" + room }
func (k keys) reconcileClaim(p int) string  { return k.part(p) + "whrc" }
func (k keys) reconcileCursor(p int) string {
	return k.part(p) + "whrcur"
}

// memberPrefix is what a room's parts' keys start with (then the id).
func (k keys) memberPrefix(room string) string { return k.members(room, "") }

// nowMsLua defines now_ms(): Redis's TIME in milliseconds, the clock of
// every due time and sighting the scripts record (never a node's).
const nowMsLua = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// eventsLua is the code the scripts that produce events share. ev is the
// list the script returns after its code: type, user, id triples; types
// o (occupied), a (added), r (removed), v (vacated). wh_init names the
// room's keys first: its membership set, the partition's ids hash and
// rooms index, the room.
//
// An event's id is <epoch>.<n>: the partition's epoch is set once (HSETNX,
// Redis TIME in ms) with its counter, so after Redis lost its data the
// ids start in a new epoch. The counter n never goes below Redis TIME in
// µs (it jumps forward when behind): after a failover to a replica that
// lost the last writes (same epoch, an older n) it resumes above every n
// issued before, as long as a partition issues fewer than a million ids
// a second and the Redis clock does not go back. (Lua numbers are
// doubles: exact up to 2^53, µs reach it in the year 2255.)
const eventsLua = nowMsLua + `
local wh_set, wh_ids, wh_idx, wh_room, wh_epoch, wh_floor
local function wh_init(set, ids, idx, room)
  wh_set, wh_ids, wh_idx, wh_room = set, ids, idx, room
end
local function wh_event(ev, typ, user)
  if not wh_epoch then
    local t = redis.call('TIME')
    redis.call('HSETNX', wh_ids, 'e', t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000)))
    wh_epoch = redis.call('HGET', wh_ids, 'e')
    wh_floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  local n = redis.call('HINCRBY', wh_ids, 'n', 1)
  if n < wh_floor then
    n = wh_floor
    redis.call('HSET', wh_ids, 'n', string.format('%.0f', n))
  end
  ev[#ev+1] = typ
  ev[#ev+1] = user
  ev[#ev+1] = wh_epoch .. '.' .. string.format('%.0f', n)
end
local function wh_start(ev, user)
  if redis.call('SADD', wh_set, user) == 1 then
    if redis.call('SCARD', wh_set) == 1 then
      redis.call('SADD', wh_idx, wh_room)
      wh_event(ev, 'o', '')
    end
    wh_event(ev, 'a', user)
  end
end
-- wh_remove removes a member: removed, then vacated if it was the last.
local function wh_remove(ev, user)
  redis.call('SREM', wh_set, user)
  wh_event(ev, 'r', user)
  if redis.call('SCARD', wh_set) == 0 then
    redis.call('SREM', wh_idx, wh_room)
    wh_event(ev, 'v', '')
  end
end
-- wh_held: another part of the room holds user (ids: the room's ids,
-- self excluded; a user out of the set counts as held: nothing to end).
-- It reads keys the script does not declare (the other ids' parts, on
-- the room's slot): every script calls it before its first write, so
-- that Redis refusing such a key (a Cluster slot migrating) aborts the
-- script with no effect.
local function wh_held(ids, mprefix, self, user)
  if redis.call('SISMEMBER', wh_set, user) == 0 then return true end
  for _, id in ipairs(ids) do
    if id ~= self and redis.call('HEXISTS', mprefix .. id, user) == 1 then return true end
  end
  return false
end
-- wh_end ends a hold: the user leaves the set unless another part held
-- it (held: wh_held, read before the script's first write).
local function wh_end(ev, user, held)
  if held or redis.call('SISMEMBER', wh_set, user) == 0 then return end
  wh_remove(ev, user)
end
`

// releaseChunk is the most users one releaseScript call ends.
const releaseChunk = 500

// releaseScript ends the holds of users whose holder is gone (a reaped
// node): each user no part of the room holds any more is removed from the
// membership, once. A release is cut in chunks of at most releaseChunk
// users (the order goneScript kept them in), one call each. A chunk's
// result is kept for an hour, so that a retry after a lost reply gets the
// same events again; the caller deletes it once the reply came (a call
// after that finds the users gone: nothing). The last chunk drops the
// release from the pending ones (whp); should an earlier one never be
// done, the reconcile ends its users' holds.
//
//	KEYS[1] n:<room>   KEYS[2] wh:<room>   KEYS[3] whid   KEYS[4] whr:<room>|<dead id>|<chunk>
//	KEYS[5] whrooms   KEYS[6] whp   KEYS[7] whpr:<room>
//	ARGV    member key prefix, room, <dead id>|<room> (last chunk) or "",
//	        then the users
const releaseScriptSrc = eventsLua + `
wh_init(KEYS[2], KEYS[3], KEYS[5], ARGV[2])
local ev = {}
local done = redis.call('GET', KEYS[4])
if done then
  ev = cjson.decode(done)
else
  local ids = redis.call('HKEYS', KEYS[1])
  local held = {}
  for i = 4, #ARGV do held[i] = wh_held(ids, ARGV[1], '', ARGV[i]) end
  for i = 4, #ARGV do wh_end(ev, ARGV[i], held[i]) end
  redis.call('SET', KEYS[4], cjson.encode(ev), 'PX', 3600000)
end
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[6], ARGV[3])
  redis.call('SREM', KEYS[7], string.match(ARGV[3], '^[^|]*'))
end
local out = {1}
for _, x in ipairs(ev) do out[#out+1] = x end
return out
`

var releaseScript = redis.NewScript(releaseScriptSrc)

// eventType is the type of a script's event code.
func eventType(code string) (presence.EventType, bool) {
	switch code {
	case "o":
		return presence.EventRoomOccupied, true
	case "a":
		return presence.EventMemberAdded, true
	case "r":
		return presence.EventMemberRemoved, true
	case "v":
		return presence.EventRoomVacated, true
	}
	return 0, false
}

// scriptResult reads a script's reply: its code, then, when the script
// produced events, the events of room, handed to Config.Events.
func (b *Bus) scriptResult(cmd *redis.Cmd, room string, now time.Time) (int64, error) {
	v, err := cmd.Result()
	if err != nil {
		return 0, err
	}
	switch v := v.(type) {
	case int64:
		return v, nil
	case []any:
		if len(v) == 0 {
			return 0, nil
		}
		code, _ := v[0].(int64)
		b.emit(room, v[1:], now)
		return code, nil
	}
	return 0, nil
}

// emit hands the events of a script's reply (type, user, id triples) to
// Config.Events.
func (b *Bus) emit(room string, raw []any, now time.Time) {
	if b.cfg.Events == nil || len(raw) < 3 {
		return
	}
	p := strconv.Itoa(partition(room)) + "."
	evs := make([]presence.Event, 0, len(raw)/3)
	for i := 0; i+2 < len(raw); i += 3 {
		typ, _ := raw[i].(string)
		user, _ := raw[i+1].(string)
		id, _ := raw[i+2].(string)
		if t, ok := eventType(typ); ok {
			evs = append(evs, presence.Event{Type: t, User: user, ID: p + id, Time: now})
		}
	}
	b.m.events.Add(float64(len(evs)))
	b.cfg.Events.RoomEvents(room, evs)
}

// releaseAfterGrace waits the leave grace the survivors give a dead node's
// members, then ends the holds id had (held: room -> users, read by the
// reaper before it deleted id's parts): a user no node holds by then is
// removed once; one that reconnected elsewhere meanwhile was never removed
// and produces nothing.
func (b *Bus) releaseAfterGrace(ctx context.Context, id string, held map[string][]string) {
	if len(held) == 0 {
		return
	}
	select {
	case <-ctx.Done():
		return // whp keeps the release: another node's sweeper runs it
	case <-time.After(b.cfg.LeaveGrace):
	}
	b.release(ctx, id, held)
}

// releaseJob is one releaseScript call: a chunk of a room's users.
type releaseJob struct {
	room  string
	chunk int
	last  bool
	users []string
}

// release ends the holds id had (held: room -> users) now, retrying for
// about a minute. A room's whg goes when all its chunks are done.
func (b *Bus) release(ctx context.Context, id string, held map[string][]string) {
	var jobs []releaseJob
	left := map[string]int{} // room -> chunks not done
	for room, users := range held {
		for i := 0; i == 0 || i*releaseChunk < len(users); i++ {
			end := min(len(users), (i+1)*releaseChunk)
			jobs = append(jobs, releaseJob{room: room, chunk: i, last: end == len(users), users: users[i*releaseChunk : end]})
			left[room]++
		}
	}
	backoff := 100 * time.Millisecond
	for deadline := time.Now().Add(time.Minute); len(jobs) > 0; {
		n := min(len(jobs), pipelineRooms)
		pipe := b.data.Pipeline()
		calls := make([]*scriptCall, n)
		for i, j := range jobs[:n] {
			pend := ""
			if j.last {
				pend = id + "|" + j.room
			}
			args := make([]any, 0, 3+len(j.users))
			args = append(args, b.k.memberPrefix(j.room), j.room, pend)
			for _, u := range j.users {
				args = append(args, u)
			}
			c := &scriptCall{keys: []string{b.k.seqs(j.room), b.k.membership(j.room), b.k.eventIDs(j.room),
				b.k.released(j.room, id, j.chunk), b.k.whRooms(partition(j.room)), b.k.pendingRelease(partition(j.room)),
				b.k.pendingOf(j.room)}, args: args}
			c.cmd = pipe.EvalSha(ctx, releaseScript.Hash(), c.keys, c.args...)
			calls[i] = c
		}
		_, _ = pipe.Exec(ctx)
		b.evalNoScript(ctx, releaseScriptSrc, calls)
		now := time.Now()
		var retry []releaseJob
		cleanup := b.data.Pipeline()
		for i, c := range calls {
			j := jobs[i]
			if _, err := b.scriptResult(c.cmd, j.room, now); err != nil {
				retry = append(retry, j)
				continue
			}
			// The events came back: their copy goes (best effort: it
			// expires anyway); the users' copy once every chunk is done.
			cleanup.Del(ctx, b.k.released(j.room, id, j.chunk))
			if left[j.room]--; left[j.room] == 0 {
				cleanup.Del(ctx, b.k.goneHeld(j.room, id))
			}
		}
		_, _ = cleanup.Exec(ctx)
		jobs = append(retry, jobs[n:]...)
		if len(retry) == 0 {
			continue
		}
		b.m.errors.WithLabelValues("events").Inc()
		if time.Now().After(deadline) {
			b.log.Warn("redisbus: ending a dead node's members for webhooks failed", "id", id, "calls", len(jobs))
			return
		}
		if !retryPause(ctx, &backoff) {
			return
		}
	}
}
