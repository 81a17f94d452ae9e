package redisbus

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A dead node's release (releaseAfterGrace) is recorded in Redis when its
// parts are deleted (goneScript: whp, whg), so that it survives the reaper:
// every node with Events sweeps the releases due sweepLate ago that nobody
// ran (a reaper stopped or drained during the grace) and runs them.

// claimScript takes up to ARGV[3] of a partition's releases due ARGV[1]
// ms ago and moves them ARGV[2] ms ahead: one node runs each, another one
// again if it is not done by then. Times are Redis's (TIME), as the due
// times goneScript and the reconcile record: a node's clock never counts.
//
//	KEYS[1] whp   ARGV  late ms, claim ms, count
const claimScriptSrc = nowMsLua + `
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - tonumber(ARGV[1])),
  'LIMIT', 0, tonumber(ARGV[3]))
local till = string.format('%.0f', now + tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', till, m) end
return due
`

var claimScript = redis.NewScript(claimScriptSrc)

// sweeper runs sweep every sweepEvery until ctx is done.
func (b *Bus) sweeper(ctx context.Context) {
	every(ctx, b.sweepEvery, func() { b.sweep(ctx) })
}

// sweep claims the releases due sweepLate ago in every partition and runs
// them with the users their whg keeps (none when it expired: the release
// then only drops the entry).
func (b *Bus) sweep(ctx context.Context) {
	pipe := b.data.Pipeline()
	calls := make([]*scriptCall, partitions)
	for p := range partitions {
		c := &scriptCall{keys: []string{b.k.pendingRelease(p)},
			args: []any{b.sweepLate.Milliseconds(), time.Minute.Milliseconds(), pipelineRooms}}
		c.cmd = pipe.EvalSha(ctx, claimScript.Hash(), c.keys, c.args...)
		calls[p] = c
	}
	_, _ = pipe.Exec(ctx)
	b.evalNoScript(ctx, claimScriptSrc, calls)
	byID := map[string]map[string][]string{} // dead id -> room -> users
	for _, c := range calls {
		due, err := c.cmd.StringSlice()
		if err != nil {
			b.m.errors.WithLabelValues("events").Inc()
			continue // claimed by the next sweep
		}
		for _, m := range due {
			if id, room, ok := strings.Cut(m, "|"); ok {
				if byID[id] == nil {
					byID[id] = map[string][]string{}
				}
				byID[id][room] = nil
			}
		}
	}
	for id, held := range byID {
		pipe := b.data.Pipeline()
		gets := make(map[string]*redis.StringCmd, len(held))
		for room := range held {
			gets[room] = pipe.Get(ctx, b.k.goneHeld(room, id))
		}
		_, _ = pipe.Exec(ctx)
		for room, g := range gets {
			s, err := g.Result()
			switch {
			case errors.Is(err, redis.Nil):
			case err != nil:
				delete(held, room) // claimed again in a minute
			default:
				var users []string
				if json.Unmarshal([]byte(s), &users) == nil {
					held[room] = users
				}
			}
		}
		b.release(ctx, id, held)
	}
}
