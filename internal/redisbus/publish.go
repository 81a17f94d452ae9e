package redisbus

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/presence"
)

// writeScript writes the sender's part of a room, its seq, and publishes
// the message, atomically on the room's slot.
//
//	KEYS[1] m:<room>|<id>   KEYS[2] n:<room>
//	with events only: KEYS[3] wh:<room>   KEYS[4] whid   KEYS[5] whu:<room>|<id>
//	                  KEYS[6] whrooms (events.go)
//	ARGV    id, seq, full (1/0), publish command, channel, message,
//	        with events only: member key prefix, ack (the seq of the last
//	        reply with events the node got for the room), room;
//	        then user, value pairs (value "": the user is let go)
//
// A seq not above the stored one is a retry: nothing is done (returns 0).
// A delta applies only on top of the sender's previous seq: otherwise the
// part in Redis is not the one the delta changes (Redis lost its data, or
// an earlier write failed), and nothing is done (returns 2): the room is
// republished in full instead. A full write with no holding (the node
// holds nobody in the room any more) removes the sender from the room:
// its seq goes too.
//
// With events (more than 2 KEYS), the holds the write started and ended
// update the room's membership (events.go), and the reply is {1,
// events...}. A reply can be lost after the script ran (a timeout while
// Redis stalled): the events are kept in whu:<room>|<id> and returned
// again by every write of the room until one carries an ack at or above
// their seq. Without events nothing of that is sent nor done.
const writeScriptSrc = eventsLua + `
local seq = tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if seq <= cur then return 0 end
if ARGV[3] ~= '1' and cur ~= seq - 1 then return 2 end
local wh = #KEYS > 2
local first = 7
local ack = 0
if wh then
  first = 10
  ack = tonumber(ARGV[8])
  wh_init(KEYS[3], KEYS[4], KEYS[6], ARGV[9])
end
local old = nil
local started, ended = {}, {}
-- Reads first: which holds the write ends (full: the part's users it no
-- longer lists; delta: the users it lets go that the part holds; users
-- are unique in ARGV) and whether another part holds them (wh_held reads
-- undeclared keys).
local others = {}
if wh then
  if ARGV[3] == '1' then
    old = {}
    for _, u in ipairs(redis.call('HKEYS', KEYS[1])) do old[u] = true end
    local listed = {}
    for i = first, #ARGV, 2 do
      if ARGV[i+1] ~= '' then listed[ARGV[i]] = true end
    end
    for u in pairs(old) do
      if not listed[u] then ended[#ended+1] = u end
    end
  else
    for i = first, #ARGV, 2 do
      if ARGV[i+1] == '' and redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then ended[#ended+1] = ARGV[i] end
    end
  end
  if #ended > 0 then
    local ids = redis.call('HKEYS', KEYS[2])
    for _, u in ipairs(ended) do others[u] = wh_held(ids, ARGV[7], ARGV[1], u) end
  end
end
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
local set = {}
for i = first, #ARGV, 2 do
  if ARGV[i+1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    if wh then
      if old then
        if not old[ARGV[i]] then started[#started+1] = ARGV[i] end
      elseif redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
        started[#started+1] = ARGV[i]
      end
    end
    set[#set+1] = ARGV[i]
    set[#set+1] = ARGV[i+1]
    if #set >= 1000 then
      redis.call('HSET', KEYS[1], unpack(set))
      set = {}
    end
  end
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if ARGV[3] == '1' and #ARGV < first then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
redis.call(ARGV[4], ARGV[5], ARGV[6])
if not wh then return 1 end
-- Starts first: a full write that replaces one user with another never
-- empties the room.
local ev = {}
for _, u in ipairs(started) do wh_start(ev, u) end
for _, u in ipairs(ended) do wh_end(ev, u, others[u]) end
-- The events of earlier writes whose reply the node did not get (seq
-- above its ack) go again, with this write's.
local out = {1}
local keep = {}
local prev = redis.call('GET', KEYS[5])
if prev then
  for _, e in ipairs(cjson.decode(prev)) do
    if tonumber(e[1]) > ack then
      keep[#keep+1] = e
      for _, x in ipairs(e[2]) do out[#out+1] = x end
    end
  end
end
if #ev > 0 then
  keep[#keep+1] = {ARGV[2], ev}
  for _, x in ipairs(ev) do out[#out+1] = x end
end
if #keep > 0 then
  redis.call('SET', KEYS[5], cjson.encode(keep), 'PX', 3600000)
elseif prev then
  redis.call('DEL', KEYS[5])
end
return out
`

var writeScript = redis.NewScript(writeScriptSrc)

// pending is a room's queued publish: the holdings by user (later wins),
// and whether they are the node's whole part of the room.
type pending struct {
	full bool
	hs   map[string]presence.Holding
}

// publishQueue is the bounded coalescing queue between Publish and the
// writer.
type publishQueue struct {
	mu        sync.Mutex
	rooms     map[string]*pending // guarded by mu
	republish map[string]struct{} // guarded by mu: dropped or failed rooms, to republish in full
	kick      chan struct{}       // cap 1: something was queued
	rounds    atomic.Int64        // writer rounds that wrote something (tests)
}

func (q *publishQueue) init() {
	q.rooms = map[string]*pending{}
	q.republish = map[string]struct{}{}
	q.kick = make(chan struct{}, 1)
}

// put queues hs for room, merged with what is queued; false: the queue
// was full, the room is marked for a full republish instead.
func (q *publishQueue) put(room string, hs []presence.Holding, full bool, max int) bool {
	q.mu.Lock()
	p := q.rooms[room]
	if p == nil {
		if len(q.rooms) >= max {
			q.republish[room] = struct{}{}
			q.mu.Unlock()
			return false
		}
		p = &pending{hs: make(map[string]presence.Holding, len(hs))}
		q.rooms[room] = p
	}
	if full {
		p.full = true
		clear(p.hs)
	}
	for _, h := range hs {
		p.hs[h.User] = h
	}
	q.mu.Unlock()
	q.kickWriter()
	return true
}

func (q *publishQueue) kickWriter() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// take returns everything queued.
func (q *publishQueue) take() map[string]*pending {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.rooms) == 0 {
		return nil
	}
	r := q.rooms
	q.rooms = map[string]*pending{}
	return r
}

func (q *publishQueue) markRepublish(rooms []string) {
	q.mu.Lock()
	for _, r := range rooms {
		q.republish[r] = struct{}{}
	}
	q.mu.Unlock()
}

func (q *publishQueue) takeRepublish() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var rs []string
	for r := range q.republish {
		rs = append(rs, r)
	}
	clear(q.republish)
	return rs
}

func (q *publishQueue) needRepublish() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.republish) > 0
}

// writerState is owned by the writer goroutine.
type writerState struct {
	id      string            // the incarnation the seqs are for
	seqs    map[string]uint64 // room -> last seq written as id
	indexed map[string]bool   // rooms added to rooms:<id>
	failing bool              // the last round wrote nothing: ping before the next
	top     uint64            // the highest seq this process assigned: a room's first seq is above it
	acked   map[string]uint64 // room -> seq of the last write whose reply (with events) came back
}

// pipelineRooms is the most rooms written by one pipeline.
const pipelineRooms = 256

// writer writes what Publish queued: every round takes everything queued
// and pipelines one script per room. Rooms whose write failed, or that
// were dropped on overflow, are republished in full (Hub.Republish) once
// a write succeeds again.
func (b *Bus) writer(ctx context.Context) {
	w := writerState{seqs: map[string]uint64{}, indexed: map[string]bool{}, acked: map[string]uint64{}}
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		var done chan struct{}
		select {
		case <-ctx.Done():
			return
		case <-b.q.kick:
		case <-retry.C:
		case done = <-b.flushReq:
		}
		b.round(ctx, &w)
		if done != nil {
			close(done)
		}
	}
}

// round writes everything queued once.
func (b *Bus) round(ctx context.Context, w *writerState) {
	id := b.selfID()
	if id == "" {
		return // not registered yet: keep queuing
	}
	if id != w.id {
		w.id = id
		clear(w.seqs)
		clear(w.indexed)
		clear(w.acked)
	}
	if w.failing {
		// Redis was away at the last round: keep coalescing until it answers.
		if b.data.Ping(ctx).Err() != nil {
			return
		}
		w.failing = false
	}
	batch := b.q.take()
	ok := false
	var failed []string
	if len(batch) == 0 {
		if !b.q.needRepublish() {
			return
		}
		ok = b.data.Ping(ctx).Err() == nil
	} else {
		b.q.rounds.Add(1)
		rooms := make([]string, 0, len(batch))
		for r := range batch {
			rooms = append(rooms, r)
		}
		for len(rooms) > 0 {
			n := min(len(rooms), pipelineRooms)
			f, stale, good := b.write(ctx, w, rooms[:n], batch)
			failed = append(failed, f...)
			b.q.markRepublish(stale)
			ok = ok || good
			rooms = rooms[n:]
		}
	}
	// Writes succeed again: what was dropped or failed before is
	// republished in full; what failed now waits for a later success.
	if ok && ctx.Err() == nil {
		for _, r := range b.q.takeRepublish() {
			b.hub.Republish(r)
		}
	}
	w.failing = !ok
	if len(failed) > 0 {
		b.m.errors.WithLabelValues("publish").Add(float64(len(failed)))
		b.q.markRepublish(failed)
	}
}

// write pipelines the scripts of rooms; it returns the rooms whose write
// failed, those whose delta Redis refused (stale: they need a full
// republish), and whether Redis answered any.
func (b *Bus) write(ctx context.Context, w *writerState, rooms []string, batch map[string]*pending) (failed, stale []string, ok bool) {
	var unindex []any
	var forget []string
	now := time.Now()
	type sent struct {
		room  string
		seq   uint64
		call  *scriptCall
		index *redis.IntCmd
		empty bool // removes the node from the room
	}
	ss := make([]sent, 0, len(rooms))
	pipe := b.data.Pipeline()
	for _, room := range rooms {
		p := batch[room]
		prev, known := w.seqs[room]
		held := 0
		for _, h := range p.hs {
			if h.Held {
				held++
			}
		}
		empty := held == 0 && (p.full || !known) // a first write of only let-gos holds nobody either
		if empty && !known {
			continue // never written (or already removed): nothing to remove
		}
		// The first write of a room by this incarnation (or since it left
		// the room) carries its whole part, the Hub's first publish of a
		// room being all its holders, and its seq starts from the clock,
		// above any seq it used in the room before, so receivers that
		// still remember those take it.
		// (Above every seq of this process too, should the clock step back.)
		seq, full := prev+1, p.full
		if !known {
			seq, full = max(uint64(now.UnixMilli())*1000, w.top+1), true
		}
		w.top = max(w.top, seq)
		w.seqs[room] = seq // an empty write forgets it once written (a failed one is retried)
		m := message{kind: kindDelta, sender: w.id, room: room, seq: seq, ts: now.UnixMilli()}
		if full {
			m.kind = kindFull
		}
		m.hs = make([]presence.Holding, 0, len(p.hs))
		for _, h := range p.hs {
			m.hs = append(m.hs, h)
		}
		fullArg := "0"
		if full {
			fullArg = "1"
		}
		args := make([]any, 0, 9+2*len(m.hs))
		args = append(args, w.id, strconv.FormatUint(seq, 10), fullArg, b.publishCmd(), b.k.channel(room),
			appendMessage(nil, &m))
		var keys []string
		if b.cfg.Events != nil {
			args = append(args, b.k.memberPrefix(room), strconv.FormatUint(w.acked[room], 10), room)
			keys = []string{b.k.members(room, w.id), b.k.seqs(room), b.k.membership(room), b.k.eventIDs(room),
				b.k.unacked(room, w.id), b.k.whRooms(partition(room))}
		} else {
			keys = []string{b.k.members(room, w.id), b.k.seqs(room)}
		}
		var buf []byte
		for i := range m.hs {
			h := &m.hs[i]
			if !h.Held {
				if !full {
					args = append(args, h.User, "")
				}
				continue
			}
			start := len(buf)
			buf = appendValue(buf, h, now)
			args = append(args, h.User, buf[start:len(buf):len(buf)])
		}
		s := sent{room: room, seq: seq, empty: empty,
			call: &scriptCall{keys: keys, args: args}}
		s.call.cmd = pipe.EvalSha(ctx, writeScript.Hash(), s.call.keys, args...)
		if !empty && !w.indexed[room] {
			s.index = pipe.SAdd(ctx, b.k.rooms(w.id), room)
		}
		ss = append(ss, s)
	}
	_, _ = pipe.Exec(ctx)
	calls := make([]*scriptCall, len(ss))
	for i := range ss {
		calls[i] = ss[i].call
	}
	b.evalNoScript(ctx, writeScriptSrc, calls)
	for _, s := range ss {
		if s.index != nil && s.index.Err() == nil {
			w.indexed[s.room] = true
		}
		v, err := b.scriptResult(s.call.cmd, s.room, now)
		if err == nil && v == 1 && b.cfg.Events != nil {
			// The reply (its events) came back: acknowledged even when the
			// index below failed, else the next write returns them again.
			w.acked[s.room] = s.seq
		}
		if err != nil || (s.index != nil && s.index.Err() != nil) {
			failed = append(failed, s.room)
			continue
		}
		ok = true
		if s.empty && v != 2 {
			// Removed from the room: forget it, and unindex it (best
			// effort: the reaper finds nothing there anyway).
			delete(w.seqs, s.room)
			delete(w.indexed, s.room)
			if _, had := w.acked[s.room]; had {
				delete(w.acked, s.room)
				// Its events came back: what whu keeps of them goes
				// (best effort: a later first write would send them again).
				forget = append(forget, b.k.unacked(s.room, w.id))
			}
			unindex = append(unindex, s.room)
		}
		switch v {
		case 1:
			b.m.published.Inc()
		case 2:
			stale = append(stale, s.room)
			delete(w.indexed, s.room) // Redis may have lost the index too
		}
	}
	if len(forget)+len(unindex) > 0 { // one round trip
		pipe := b.data.Pipeline()
		for _, key := range forget {
			pipe.Del(ctx, key)
		}
		if len(unindex) > 0 {
			pipe.SRem(ctx, b.k.rooms(w.id), unindex...)
		}
		cmds, _ := pipe.Exec(ctx)
		for _, c := range cmds {
			if c.Err() != nil {
				b.m.errors.WithLabelValues("publish").Inc()
			}
		}
	}
	return failed, stale, ok
}

// scriptCall is one pipelined EVALSHA: its keys and arguments, kept to
// send it again, and its reply.
type scriptCall struct {
	keys []string
	args []any
	cmd  *redis.Cmd
}

// evalNoScript sends again with EVAL, in one pipeline, the calls Redis
// answered NOSCRIPT: its script cache was empty (a restarted Redis, a new
// Cluster node); EVAL caches the script for the next EVALSHA.
func (b *Bus) evalNoScript(ctx context.Context, src string, calls []*scriptCall) {
	var pipe redis.Pipeliner
	for _, c := range calls {
		if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			if pipe == nil {
				pipe = b.data.Pipeline()
			}
			c.cmd = pipe.Eval(ctx, src, c.keys, c.args...)
		}
	}
	if pipe != nil {
		_, _ = pipe.Exec(ctx)
	}
}
