package redisbus

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The reconcile repairs the membership sets (wh:<room>) that no write will
// ever fix: a user left in a set while no live part of the room holds it
// (a reaper that lost its release, the last node drained, nodes with and
// without webhooks, Redis that lost some writes in a failover). Every
// rcEvery each node with Events claims the partitions nobody reconciled
// in the last rcEvery (SET NX PX whrc: one node per partition at a time),
// takes about rcCount rooms of each from the partition's index (SSCAN of
// whrooms, the cursor kept in Redis across rounds and nodes), and runs
// reconcileScript on each. Every node, with Events or not, also checks
// the registry: nodes must all produce events or none.

// rcClaimScript claims a partition for a reconcile round and returns its
// next rooms, or nil when another node has it.
//
//	KEYS[1] whrc   KEYS[2] whrcur   KEYS[3] whrooms
//	ARGV    claimer id, claim ms, count
const rcClaimScriptSrc = `
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local cur = redis.call('GET', KEYS[2]) or '0'
local r = redis.call('SSCAN', KEYS[3], cur, 'COUNT', tonumber(ARGV[3]))
if r[1] == '0' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], r[1], 'PX', 86400000) end
return r[2]
`

var rcClaimScript = redis.NewScript(rcClaimScriptSrc)

// reconcileScript deletes the room's stale parts (of ids not registered,
// found so for a leave grace: whsp:<room>) and releases the members of a
// room that no live part holds
// and no pending release covers, once they were found so for a leave
// grace: the first time such a user is found it is recorded in
// whs:<room> (when, Redis TIME), and it is removed (member_removed, then
// room_vacated if it was the last) by a round at least the grace later
// that finds it still so. A user found held again is forgotten. The
// result is kept (whr:<room>|~reconcile|0) and pending in whp
// (~reconcile|<room>, due now) until the caller, who got the reply,
// deletes both: after a lost reply a sweep (pending.go) sends the events,
// its release returning the kept result. Meanwhile the room is skipped
// (a reconcile of another node, its claim overlapping, sends nothing).
//
//	KEYS[1] n:<room>   KEYS[2] wh:<room>   KEYS[3] whid   KEYS[4] whr:<room>|~reconcile|0
//	KEYS[5] whrooms   KEYS[6] whs:<room>   KEYS[7] whp   KEYS[8] whsp:<room>
//	ARGV    member key prefix, room, leave grace ms, whp pattern of the
//	        room (*|<room>), whs PX ms, then the live ids
const reconcileScriptSrc = eventsLua + `
wh_init(KEYS[2], KEYS[3], KEYS[5], ARGV[2])
local ev = {}
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {1}
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[5], ARGV[2])
  redis.call('DEL', KEYS[6], KEYS[8])
  return {1}
else
  -- A pending release of the room runs first (after its grace).
  local cur = '0'
  repeat
    local r = redis.call('ZSCAN', KEYS[7], cur, 'MATCH', ARGV[4], 'COUNT', 100)
    if #r[2] > 0 then
      redis.call('DEL', KEYS[6])
      return {1}
    end
    cur = r[1]
  until cur == '0'
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local grace = tonumber(ARGV[3])
  -- Reads first (the parts are keys the script does not declare: a
  -- refusal, a Cluster slot migrating, must abort it with no effect).
  -- The parts of live ids count; those of other ids (no reaper ran, or
  -- one wrote after it was reaped) are stale: deleted by a round at
  -- least the grace after one first found them (a node that registered
  -- after the caller read the registry has no part that old).
  local live = {}
  for i = 6, #ARGV do live[ARGV[i]] = true end
  local ids, pseen, pkeep, stale = {}, {}, {}, {}
  local kv = redis.call('HGETALL', KEYS[8])
  for i = 1, #kv, 2 do pseen[kv[i]] = tonumber(kv[i+1]) end
  for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
    if live[id] then
      ids[#ids+1] = id
    elseif pseen[id] and now - pseen[id] >= grace then
      stale[#stale+1] = id
    else
      pkeep[#pkeep+1] = id
      pkeep[#pkeep+1] = pseen[id] or now
    end
  end
  local seen = {}
  kv = redis.call('HGETALL', KEYS[6])
  for i = 1, #kv, 2 do seen[kv[i]] = tonumber(kv[i+1]) end
  local keep, orphans = {}, {}
  for _, u in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local held = false
    for _, id in ipairs(ids) do
      if redis.call('HEXISTS', ARGV[1] .. id, u) == 1 then
        held = true
        break
      end
    end
    if not held then
      local since = seen[u]
      if since and now - since >= grace then
        orphans[#orphans+1] = u
      else
        keep[#keep+1] = u
        keep[#keep+1] = since or now
      end
    end
  end
  -- Then the writes, the undeclared keys' first.
  for _, id in ipairs(stale) do
    redis.call('DEL', ARGV[1] .. id)
    redis.call('HDEL', KEYS[1], id)
  end
  redis.call('DEL', KEYS[8], KEYS[6])
  if #pkeep > 0 then
    redis.call('HSET', KEYS[8], unpack(pkeep))
    redis.call('PEXPIRE', KEYS[8], ARGV[5])
  end
  for i = 1, #keep, 1000 do
    redis.call('HSET', KEYS[6], unpack(keep, i, math.min(i + 999, #keep)))
  end
  if #keep > 0 then redis.call('PEXPIRE', KEYS[6], ARGV[5]) end
  for _, u in ipairs(orphans) do wh_remove(ev, u) end
  if #ev > 0 then
    redis.call('SET', KEYS[4], cjson.encode(ev), 'PX', 3600000)
    redis.call('ZADD', KEYS[7], now, '` + reconcileID + `|' .. ARGV[2])
  end
end
local out = {1}
for _, x in ipairs(ev) do out[#out+1] = x end
return out
`

var reconcileScript = redis.NewScript(reconcileScriptSrc)

// reconcileID stands for the reconcile in its result key (ids have a '#').
const reconcileID = "~reconcile"

// reconciler runs reconcile every rcEvery until ctx is done.
func (b *Bus) reconciler(ctx context.Context) {
	t := time.NewTicker(b.rcEvery)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.reconcile(ctx, &warned)
	}
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
// a reconcile round.
func (b *Bus) reconcile(ctx context.Context, warned *bool) {
	me := b.selfID()
	if me == "" {
		return
	}
	reg, err := b.live.HGetAll(ctx, b.k.reg()).Result()
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
	if b.cfg.Events == nil {
		return
	}
	// While this node has orphans (Redis lost the registry: in Cluster the
	// {n} shard alone may, the room shards keeping the old ids' parts) an
	// unregistered part may be a live peer's, not re-registered yet: the
	// reconcile waits until they are settled (at most a node-ttl and a
	// round after this node registered).
	if b.lv.hasOrphans() {
		return
	}
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
	for _, c := range calls {
		rs, err := c.cmd.StringSlice()
		switch {
		case err == redis.Nil: // another node has it
		case err != nil:
			b.m.errors.WithLabelValues("reconcile").Inc()
		default:
			rooms = append(rooms, rs...)
		}
	}
	for len(rooms) > 0 {
		n := min(len(rooms), pipelineRooms)
		b.reconcileRooms(ctx, rooms[:n], live)
		rooms = rooms[n:]
	}
}

// reconcileRooms runs reconcileScript on each room, pipelined, and hands
// the events to Config.Events.
func (b *Bus) reconcileRooms(ctx context.Context, rooms []string, live []any) {
	pipe := b.data.Pipeline()
	calls := make([]*scriptCall, len(rooms))
	for i, room := range rooms {
		c := b.reconcileCall(room, live)
		c.cmd = pipe.EvalSha(ctx, reconcileScript.Hash(), c.keys, c.args...)
		calls[i] = c
	}
	_, _ = pipe.Exec(ctx)
	b.evalNoScript(ctx, reconcileScriptSrc, calls)
	now := time.Now()
	cleanup := b.data.Pipeline()
	failed := 0
	for i, c := range calls {
		if _, err := b.scriptResult(c.cmd, rooms[i], now); err != nil {
			failed++ // a result it kept is sent by a sweep
			continue
		}
		if r, _ := c.cmd.Val().([]any); len(r) < 2 {
			continue // no events: nothing kept (a result kept by another is not ours to drop)
		}
		cleanup.Del(ctx, b.k.released(rooms[i], reconcileID, 0))
		cleanup.ZRem(ctx, b.k.pendingRelease(partition(rooms[i])), reconcileID+"|"+rooms[i])
	}
	_, _ = cleanup.Exec(ctx)
	if failed > 0 {
		b.m.errors.WithLabelValues("reconcile").Add(float64(failed))
	}
}

// reconcileCall is the keys and arguments of room's reconcileScript.
func (b *Bus) reconcileCall(room string, live []any) *scriptCall {
	grace := b.cfg.LeaveGrace.Milliseconds()
	keep := grace + 3*b.rcEvery.Milliseconds() // whs outlives a few rounds
	args := make([]any, 0, 5+len(live))
	args = append(args, b.k.memberPrefix(room), room, grace, "*|"+globEscape(room), keep)
	args = append(args, live...)
	p := partition(room)
	return &scriptCall{keys: []string{b.k.seqs(room), b.k.membership(room), b.k.eventIDs(room),
		b.k.released(room, reconcileID, 0), b.k.whRooms(p), b.k.suspects(room), b.k.pendingRelease(p),
		b.k.suspectParts(room)}, args: args}
}

// globEscape escapes s for a Redis MATCH pattern.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var sb strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			sb.WriteByte('\\')
		}
		sb.WriteRune(r)
	}
	return sb.String()
}
