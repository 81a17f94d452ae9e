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
//	ARGV    id, publish command, channel, gone message
const goneScriptSrc = `
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call(ARGV[2], ARGV[3], ARGV[4])
return 1
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
	for deadline := time.Now().Add(time.Minute); ; {
		err := b.reapOnce(ctx, id)
		if err == nil {
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

func (b *Bus) reapOnce(ctx context.Context, id string) error {
	var cursor uint64
	for {
		rooms, next, err := b.data.SScan(ctx, b.k.rooms(id), cursor, "", scanCount).Result()
		if err != nil {
			return err
		}
		if len(rooms) > 0 {
			if err := b.gone(ctx, id, rooms); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	return b.data.Del(ctx, b.k.rooms(id)).Err()
}

// gone runs goneScript for each room, pipelined.
func (b *Bus) gone(ctx context.Context, id string, rooms []string) error {
	now := time.Now().UnixMilli()
	for len(rooms) > 0 {
		n := min(len(rooms), pipelineRooms)
		pipe := b.data.Pipeline()
		calls := make([]*scriptCall, n)
		for i, room := range rooms[:n] {
			m := message{kind: kindGone, sender: id, room: room, ts: now}
			c := &scriptCall{keys: []string{b.k.members(room, id), b.k.seqs(room)},
				args: []any{id, b.publishCmd(), b.k.channel(room), appendMessage(nil, &m)}}
			c.cmd = pipe.EvalSha(ctx, goneScript.Hash(), c.keys, c.args...)
			calls[i] = c
		}
		_, _ = pipe.Exec(ctx)
		b.evalNoScript(ctx, goneScriptSrc, calls)
		for _, c := range calls {
			if err := c.cmd.Err(); err != nil {
				return err
			}
		}
		rooms = rooms[n:]
	}
	return nil
}
