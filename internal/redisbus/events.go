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
//	P{p<k>}:whseq       counter of partition k's events (their ids)
//	P{p<k>}:whu:<room>|<id>  events of id's writes not acknowledged yet (JSON), PX 1 h
//	P{p<k>}:whr:<room>|<id>  the events of dead id's release (JSON), PX 1 h
//	P{p<k>}:whg:<room>|<id>  the users dead id held (JSON), kept by goneScript, PX 1 h
//	P{p<k>}:whp         ZSET of the partition's pending releases: <id>|<room> by due time (ms)

func (k keys) membership(room string) string { return k.part(partition(room)) + "wh:" + room }
func (k keys) eventSeq(room string) string   { return k.part(partition(room)) + "whseq" }
func (k keys) released(room, id string) string {
	return k.part(partition(room)) + "whr:" + room + "|" + id
}
func (k keys) pendingRelease(p int) string { return k.part(p) + "whp" }
func (k keys) goneHeld(room, id string) string {
	return k.part(partition(room)) + "whg:" + room + "|" + id
}
func (k keys) unacked(room, id string) string {
	return k.part(partition(room)) + "whu:" + room + "|" + id
}

// memberPrefix is what a room's parts' keys start with (then the id).
func (k keys) memberPrefix(room string) string { return k.members(room, "") }

// eventsLua is the code the scripts that produce events share. ev is the
// list the script returns after its code: type, user, id triples; types
// o (occupied), a (added), r (removed), v (vacated).
const eventsLua = `
local function wh_event(ev, seqkey, typ, user)
  ev[#ev+1] = typ
  ev[#ev+1] = user
  ev[#ev+1] = tostring(redis.call('INCR', seqkey))
end
local function wh_start(ev, setkey, seqkey, user)
  if redis.call('SADD', setkey, user) == 1 then
    if redis.call('SCARD', setkey) == 1 then wh_event(ev, seqkey, 'o', '') end
    wh_event(ev, seqkey, 'a', user)
  end
end
local function wh_end(ev, setkey, seqkey, ids, mprefix, self, user)
  if redis.call('SISMEMBER', setkey, user) == 0 then return end
  for _, id in ipairs(ids) do
    if id ~= self and redis.call('HEXISTS', mprefix .. id, user) == 1 then return end
  end
  redis.call('SREM', setkey, user)
  wh_event(ev, seqkey, 'r', user)
  if redis.call('SCARD', setkey) == 0 then wh_event(ev, seqkey, 'v', '') end
end
`

// releaseScript ends the holds of users whose holder is gone (a reaped
// node): each user no part of the room holds any more is removed from the
// membership, once. Its result is kept for an hour, so that the reaper,
// retrying after a lost reply, gets the same events again. It drops the
// release from the pending ones (whp).
//
//	KEYS[1] n:<room>   KEYS[2] wh:<room>   KEYS[3] whseq   KEYS[4] whr:<room>|<dead id>
//	KEYS[5] whp
//	ARGV    member key prefix, <dead id>|<room>, then the users
const releaseScriptSrc = eventsLua + `
local ev = {}
redis.call('ZREM', KEYS[5], ARGV[2])
local done = redis.call('GET', KEYS[4])
if done then
  ev = cjson.decode(done)
else
  local ids = redis.call('HKEYS', KEYS[1])
  for i = 3, #ARGV do
    wh_end(ev, KEYS[2], KEYS[3], ids, ARGV[1], '', ARGV[i])
  end
  redis.call('SET', KEYS[4], cjson.encode(ev), 'PX', 3600000)
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

// release ends the holds id had (held: room -> users) now, retrying for
// about a minute.
func (b *Bus) release(ctx context.Context, id string, held map[string][]string) {
	backoff := 100 * time.Millisecond
	for deadline := time.Now().Add(time.Minute); len(held) > 0; {
		pipe := b.data.Pipeline()
		calls := make(map[string]*scriptCall, len(held))
		for room, users := range held {
			args := make([]any, 0, 2+len(users))
			args = append(args, b.k.memberPrefix(room), id+"|"+room)
			for _, u := range users {
				args = append(args, u)
			}
			c := &scriptCall{keys: []string{b.k.seqs(room), b.k.membership(room), b.k.eventSeq(room), b.k.released(room, id),
				b.k.pendingRelease(partition(room))}, args: args}
			c.cmd = pipe.EvalSha(ctx, releaseScript.Hash(), c.keys, c.args...)
			calls[room] = c
			if len(calls) == pipelineRooms {
				break
			}
		}
		_, _ = pipe.Exec(ctx)
		list := make([]*scriptCall, 0, len(calls))
		for _, c := range calls {
			list = append(list, c)
		}
		b.evalNoScript(ctx, releaseScriptSrc, list)
		now := time.Now()
		failed := false
		var done []string
		for room, c := range calls {
			if _, err := b.scriptResult(c.cmd, room, now); err != nil {
				failed = true
				continue
			}
			delete(held, room)
			done = append(done, b.k.released(room, id), b.k.goneHeld(room, id))
		}
		// The events came back: their copy and that of the users can go
		// (best effort: they expire anyway).
		if len(done) > 0 {
			pipe := b.data.Pipeline()
			for _, key := range done {
				pipe.Del(ctx, key)
			}
			_, _ = pipe.Exec(ctx)
		}
		if !failed {
			continue
		}
		b.m.errors.WithLabelValues("events").Inc()
		if time.Now().After(deadline) {
			b.log.Warn("redisbus: ending a dead node's members for webhooks failed", "id", id, "rooms", len(held))
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
