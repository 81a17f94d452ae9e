package redisbus

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The reconcile repairs the membership sets (wh:<room>) that no write will
// ever fix: a user left in a set while no part of the room holds it
// (a reaper that lost its release, the last node drained, nodes with and
// without webhooks, Redis that lost some writes in a failover). Every
// rcEvery each node with Events claims the partitions nobody reconciled
// in the last rcEvery (SET NX PX whrc: one node per partition at a time),
// takes about rcCount rooms of each from the partition's index (SSCAN of
// whrooms, the cursor kept in Redis across rounds and nodes), and runs
// reconcileScript on each. Every node, with Events or not, also checks
// the registry: nodes must all produce events or none.

// rcClaimScript claims a partition for a reconcile round and returns the
// partition's Redis time (ms), its next rooms and the size of its index,
// or nil when another node has it. The caller reads the registry after it: the time is before
// that read, on the clock of the rooms' shard (see reconcileScript).
//
//	KEYS[1] whrc   KEYS[2] whrcur   KEYS[3] whrooms
//	ARGV    claimer id, claim ms, count
const rcClaimScriptSrc = nowMsLua + `
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local cur = redis.call('GET', KEYS[2]) or '0'
local r = redis.call('SSCAN', KEYS[3], cur, 'COUNT', tonumber(ARGV[3]))
if r[1] == '0' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], r[1], 'PX', 86400000) end
return {string.format('%.0f', now_ms()), r[2],
  redis.call('SCARD', KEYS[3])}
`

var rcClaimScript = redis.NewScript(rcClaimScriptSrc)

// reconcileScript deletes the room's stale parts (of ids not registered,
// found so for a leave grace: whsp:<room>) and releases the members of a
// room that no part it keeps (a live id's, or one not yet found stale)
// holds and no pending release covers, once they
// were found so for a leave grace. A room is read in pages (SSCAN of
// wh:<room>, about ARGV[6] members a call): the caller calls again with
// the returned cursor until it is 0, a pass. The first time a user is
// found unheld it is recorded in whs:<room> (when, Redis TIME); a pass's
// first page moves the previous pass's records to whso:<room>, its last
// page drops them, so a user found held again (or gone) is forgotten. It
// is removed (member_removed, then room_vacated if it was the last) by a
// pass at least the grace later that finds it still so. A page's result
// is kept (whr:<room>|~reconcile|0) and pending in whp (~reconcile|<room>,
// due now, and in whpr:<room>) until the caller, who got the reply,
// deletes them: after a lost reply a sweep (pending.go) sends the events,
// its release returning the kept result. Meanwhile the room is skipped (a
// reconcile of another node, its claim overlapping, sends nothing).
// Pending releases are found exactly: whpr:<room> indexes the room's
// entries of whp, each checked with ZSCORE (an index entry whp no longer
// has is dropped).
//
// Every read of other parts (keys not declared, on the room's slot) comes
// before the first write: a refusal aborts the script with no effect.
//
//	KEYS[1] n:<room>   KEYS[2] wh:<room>   KEYS[3] whid   KEYS[4] whr:<room>|~reconcile|0
//	KEYS[5] whrooms   KEYS[6] whs:<room>   KEYS[7] whp   KEYS[8] whsp:<room>
//	KEYS[9] whso:<room>   KEYS[10] whpr:<room>
//	ARGV    member key prefix, room, leave grace ms, cursor, whs PX ms,
//	        page size, registry time (ms, Redis TIME of the room's shard
//	        taken before the live ids were read), then the live ids
//
// It returns {1, next cursor, events...}.
const reconcileScriptSrc = eventsLua + `
wh_init(KEYS[2], KEYS[3], KEYS[5], ARGV[2])
local ev = {}
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {1, '0'}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[5], ARGV[2])
  redis.call('DEL', KEYS[6], KEYS[8], KEYS[9])
  -- The room is not visited again: its index of whp drops what whp
  -- no longer has (a release still pending removes its own entry).
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[10])) do
    if not redis.call('ZSCORE', KEYS[7], id .. '|' .. ARGV[2]) then redis.call('SREM', KEYS[10], id) end
  end
  return {1, '0'}
end
-- A pending release of the room runs first (after its grace).
local gone = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[10])) do
  if redis.call('ZSCORE', KEYS[7], id .. '|' .. ARGV[2]) then
    redis.call('DEL', KEYS[6], KEYS[9])
    return {1, '0'}
  end
  gone[#gone+1] = id
end
local now = now_ms()
local grace = tonumber(ARGV[3])
local first = ARGV[4] == '0'
-- Reads first. The parts of live ids hold their users; those of other
-- ids (no reaper ran, or one wrote after it was reaped) are stale: deleted once
-- first found so at least the grace ago AND before the caller's registry
-- read (first sighting < ARGV[7], a time on this shard's clock taken
-- before that read). A node registers before it writes a part, so an id
-- whose part was seen before the read was registered at the read: unless
-- it had left, it is in the live ids. A node that registered after the
-- read is only ever first seen after it: its part is kept however long
-- the pass or the round lasts.
local live = {}
for i = 8, #ARGV do live[ARGV[i]] = true end
local regt = tonumber(ARGV[7])
local ids, pseen, pkeep, stale = {}, {}, {}, {}
local kv = redis.call('HGETALL', KEYS[8])
for i = 1, #kv, 2 do pseen[kv[i]] = tonumber(kv[i+1]) end
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  if live[id] then
    ids[#ids+1] = id
  elseif pseen[id] and pseen[id] < regt and now - pseen[id] >= grace then
    stale[#stale+1] = id
  else
    -- Kept: its users stay held (a node that registered after the read
    -- holds them; a dead one's users are released a grace after its part
    -- is deleted).
    ids[#ids+1] = id
    pkeep[#pkeep+1] = id
    pkeep[#pkeep+1] = pseen[id] or now
  end
end
local prev = KEYS[9]
if first then prev = KEYS[6] end
local r = redis.call('SSCAN', KEYS[2], ARGV[4], 'COUNT', tonumber(ARGV[6]))
local keep, forget, orphans, done = {}, {}, {}, {}
for _, u in ipairs(r[2]) do
  if not done[u] then
    done[u] = true
    local held = false
    for _, id in ipairs(ids) do
      if redis.call('HEXISTS', ARGV[1] .. id, u) == 1 then
        held = true
        break
      end
    end
    if held then
      forget[#forget+1] = u
    else
      local since = tonumber(redis.call('HGET', prev, u) or '')
      if not since and not first then since = tonumber(redis.call('HGET', KEYS[6], u) or '') end
      if since and now - since >= grace then
        orphans[#orphans+1] = u
      else
        keep[#keep+1] = u
        keep[#keep+1] = since or now
      end
    end
  end
end
-- Then the writes, the undeclared keys' first.
for _, id in ipairs(stale) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('HDEL', KEYS[1], id)
end
for _, id in ipairs(gone) do redis.call('SREM', KEYS[10], id) end
redis.call('DEL', KEYS[8])
if #pkeep > 0 then
  redis.call('HSET', KEYS[8], unpack(pkeep))
  redis.call('PEXPIRE', KEYS[8], ARGV[5])
end
if first then
  redis.call('DEL', KEYS[9])
  if redis.call('EXISTS', KEYS[6]) == 1 then redis.call('RENAME', KEYS[6], KEYS[9]) end
end
for i = 1, #forget, 1000 do
  redis.call('HDEL', KEYS[6], unpack(forget, i, math.min(i + 999, #forget)))
end
for i = 1, #keep, 1000 do
  redis.call('HSET', KEYS[6], unpack(keep, i, math.min(i + 999, #keep)))
end
if #keep > 0 then redis.call('PEXPIRE', KEYS[6], ARGV[5]) end
if r[1] == '0' then redis.call('DEL', KEYS[9]) end
for _, u in ipairs(orphans) do
  redis.call('HDEL', KEYS[6], u)
  if redis.call('SISMEMBER', KEYS[2], u) == 1 then wh_remove(ev, u) end
end
if #ev > 0 then
  redis.call('SET', KEYS[4], cjson.encode(ev), 'PX', 3600000)
  redis.call('ZADD', KEYS[7], now, '` + reconcileID + `|' .. ARGV[2])
  redis.call('SADD', KEYS[10], '` + reconcileID + `')
  redis.call('PEXPIRE', KEYS[10], grace + 7200000)
end
local out = {1, r[1]}
for _, x in ipairs(ev) do out[#out+1] = x end
return out
`

var reconcileScript = redis.NewScript(reconcileScriptSrc)

// reconcileID stands for the reconcile in its result key (ids have a '#').
const reconcileID = "~reconcile"

// reconciler runs reconcile every rcEvery until ctx is done.
func (b *Bus) reconciler(ctx context.Context) {
	warned := false
	every(ctx, b.rcEvery, func() { b.reconcile(ctx, &warned) })
}

// webhooksInfo is the registration info's last field.
func webhooksInfo(on bool) string {
	if on {
		return "wh=1"
	}
	return "wh=0"
}

// reconcile reads the registry (the live ids; a peer with the other
// webhooks setting is logged once and counted), then, with Events, runs
// a reconcile round. With Events the partitions are claimed first: the
// claim's Redis time (per partition, on its shard) precedes the registry
// read, which decides which parts are stale (reconcileScript).
func (b *Bus) reconcile(ctx context.Context, warned *bool) {
	me := b.selfID()
	if me == "" {
		return
	}
	// While this node has orphans (Redis lost the registry: in Cluster the
	// {n} shard alone may, the room shards keeping the old ids' parts) an
	// unregistered part may be a live peer's, not re-registered yet: the
	// reconcile waits until they are settled (at most a node-ttl and a
	// round after this node registered).
	var rooms []string
	var times map[int]rcPart
	if b.cfg.Events != nil && !b.lv.hasOrphans() {
		rooms, times = b.reconcileClaim(ctx, me)
	}
	reg, err := b.liveNodes(ctx)
	if err != nil {
		b.m.errors.WithLabelValues("reconcile").Inc()
		return
	}
	mine := webhooksInfo(b.cfg.Events != nil)
	var other []string
	live := make([]any, 0, len(reg))
	for id, info := range reg {
		live = append(live, id)
		// A node of the release before webhooks has no wh= field: it
		// produces no events (wh=0).
		f := strings.Split(info, "|")
		if !b.isOwn(id) && (len(f) < 3 && mine != webhooksInfo(false) || len(f) >= 3 && f[2] != mine) {
			other = append(other, id)
		}
	}
	b.m.mismatch.Set(float64(len(other)))
	if len(other) > 0 && !*warned {
		*warned = true
		b.log.Warn("redisbus: nodes differ in their webhook setting (-webhook-url): set it on all nodes or none",
			"webhooks", b.cfg.Events != nil, "others", other)
	}
	for len(rooms) > 0 {
		n := min(len(rooms), pipelineRooms)
		b.reconcileRooms(ctx, rooms[:n], times, live)
		rooms = rooms[n:]
	}
}

// rcPart is what a round's claim of a partition returned.
type rcPart struct {
	regt  int64 // the partition's Redis time (ms) before the registry read
	rooms int64 // the size of its index (whrooms)
}

// reconcileClaim claims the partitions nobody reconciled in the last
// rcEvery and returns their next rooms and what each claim returned.
func (b *Bus) reconcileClaim(ctx context.Context, me string) ([]string, map[int]rcPart) {
	pipe := b.data.Pipeline()
	calls := make([]*scriptCall, partitions)
	for p := range partitions {
		c := &scriptCall{keys: []string{b.k.reconcileClaim(p), b.k.reconcileCursor(p), b.k.whRooms(p)},
			args: []any{me, b.rcEvery.Milliseconds(), b.rcCount}}
		c.cmd = pipe.EvalSha(ctx, rcClaimScript.Hash(), c.keys, c.args...)
		calls[p] = c
	}
	_, _ = pipe.Exec(ctx)
	b.evalNoScript(ctx, rcClaimScriptSrc, calls)
	var rooms []string
	times := map[int]rcPart{}
	for p, c := range calls {
		r, err := c.cmd.Slice()
		switch {
		case err == redis.Nil: // another node has it
			continue
		case err == nil && len(r) == 3:
			ts, _ := r[0].(string)
			t, perr := strconv.ParseInt(ts, 10, 64)
			rs, ok := r[1].([]any)
			if perr != nil || !ok {
				break
			}
			size, _ := r[2].(int64)
			times[p] = rcPart{regt: t, rooms: size}
			for _, x := range rs {
				if s, ok := x.(string); ok {
					rooms = append(rooms, s)
				}
			}
			continue
		}
		b.m.errors.WithLabelValues("reconcile").Inc()
	}
	return rooms, times
}

// rcPage is about how many members of a room one reconcileScript call
// reads (SSCAN COUNT).
const rcPage = 500

// reconcileRooms runs reconcileScript on each room, pipelined, page after
// page until each room's pass is done (or failed), and hands the events
// to Config.Events.
// times is what each partition's claim returned (its Redis time taken
// before live was read).
func (b *Bus) reconcileRooms(ctx context.Context, rooms []string, times map[int]rcPart, live []any) {
	cursors := make([]string, len(rooms))
	for i := range cursors {
		cursors[i] = "0"
	}
	failed := 0
	for len(rooms) > 0 && ctx.Err() == nil {
		pipe := b.data.Pipeline()
		calls := make([]*scriptCall, len(rooms))
		for i, room := range rooms {
			c := b.reconcileCall(room, cursors[i], times[partition(room)], live)
			c.cmd = pipe.EvalSha(ctx, reconcileScript.Hash(), c.keys, c.args...)
			calls[i] = c
		}
		_, _ = pipe.Exec(ctx)
		b.evalNoScript(ctx, reconcileScriptSrc, calls)
		now := time.Now()
		cleanup := b.data.Pipeline()
		var nextRooms, nextCursors []string
		for i, c := range calls {
			r, err := c.cmd.Slice()
			if err != nil || len(r) < 2 {
				failed++ // a result it kept is sent by a sweep
				continue
			}
			if cur, _ := r[1].(string); cur != "0" && cur != "" {
				nextRooms, nextCursors = append(nextRooms, rooms[i]), append(nextCursors, cur)
			}
			if len(r) < 5 {
				continue // no events: nothing kept (a result kept by another is not ours to drop)
			}
			b.emit(rooms[i], r[2:], now)
			cleanup.Del(ctx, b.k.released(rooms[i], reconcileID, 0))
			cleanup.ZRem(ctx, b.k.pendingRelease(partition(rooms[i])), reconcileID+"|"+rooms[i])
			cleanup.SRem(ctx, b.k.pendingOf(rooms[i]), reconcileID)
		}
		_, _ = cleanup.Exec(ctx)
		rooms, cursors = nextRooms, nextCursors
	}
	if failed > 0 {
		b.m.errors.WithLabelValues("reconcile").Add(float64(failed))
	}
}

// reconcileCall is the keys and arguments of room's reconcileScript, at
// cursor; part.regt is the Redis time (ms, of the room's shard) taken
// before live was read (0: no stale part is deleted, so every part holds
// its users).
func (b *Bus) reconcileCall(room, cursor string, part rcPart, live []any) *scriptCall {
	grace := b.cfg.LeaveGrace.Milliseconds()
	// The records outlive the time between two passes over a room: a
	// pass over its partition's index (rcCount rooms a round), twice for
	// claims taken late, at least an hour.
	pass := time.Duration(part.rooms/int64(max(b.rcCount, 1))+1) * b.rcEvery
	keep := grace + max(time.Hour, 2*pass).Milliseconds()
	regt := part.regt
	args := make([]any, 0, 7+len(live))
	args = append(args, b.k.memberPrefix(room), room, grace, cursor, keep, b.rcPage, regt)
	args = append(args, live...)
	p := partition(room)
	return &scriptCall{keys: []string{b.k.seqs(room), b.k.membership(room), b.k.eventIDs(room),
		b.k.released(room, reconcileID, 0), b.k.whRooms(p), b.k.suspects(room), b.k.pendingRelease(p),
		b.k.suspectParts(room), b.k.suspectsBefore(room), b.k.pendingOf(room)}, args: args}
}
