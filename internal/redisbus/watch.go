package redisbus

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/presence"
)

// scanCount is the COUNT of every HSCAN/SSCAN: nothing is read in one
// unbounded reply.
const scanCount = 1000

// goneFlag is set when a room is unwatched: its loads stop retrying.
type goneFlag struct{ v atomic.Bool }

func (g *goneFlag) set()        { g.v.Store(true) }
func (g *goneFlag) isSet() bool { return g.v.Load() }

// fetchJob is work for a loader: load a room's parts (r, only: one
// sender, "" all), or read the seqs of rooms (seqsOf, anti-entropy).
// A loader reads only r.name and r.gone.
type fetchJob struct {
	r      *roomState
	only   string
	seqsOf []*roomState
}

// part is one sender's part of a room as read from Redis.
type part struct {
	id  string
	seq uint64
	hs  []presence.Holding
}

type fetchResult struct {
	r     *roomState
	only  string
	parts []part
	// left are the senders (only, or any) with no seq in the room: they
	// left it (an empty write removes a sender's part and seq). Set only
	// when the read found this node's dataset, so a Redis that lost its
	// data is not taken for senders that left.
	left func(id string) bool
	seqs map[*roomState]map[string]uint64 // anti-entropy; non-nil for seqsOf jobs
}

// loader runs fetch jobs; a failed room load is retried (with backoff)
// until it succeeds, the room is unwatched or ctx is done.
func (b *Bus) loader(ctx context.Context) {
	for {
		var j fetchJob
		select {
		case <-ctx.Done():
			return
		case j = <-b.jobs:
		}
		var res fetchResult
		if j.seqsOf != nil {
			res.seqs = b.readSeqs(ctx, j.seqsOf)
		} else {
			res = fetchResult{r: j.r, only: j.only}
			backoff := 100 * time.Millisecond
			for {
				parts, left, err := b.readRoom(ctx, j.r.name, j.only)
				if err == nil {
					res.parts, res.left = parts, left
					break
				}
				b.m.errors.WithLabelValues("load").Inc()
				if j.r.gone.isSet() {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 2*time.Second)
			}
		}
		select {
		case b.results <- res:
		case <-ctx.Done():
			return
		}
	}
}

// readRoom reads the parts of room of the live senders (only: that one),
// each as its seq, then its members in pages. The pages are not one
// atomic read: a change made meanwhile has a larger seq, is buffered by
// the rooms loop and replayed after; holdings are absolute, so replaying
// one already read is harmless.
//
// left reports the senders that have no seq in the room (they left it), or
// is nil when the dataset is not the one this node registered in (Redis
// lost its data: absent senders may only not have republished yet).
func (b *Bus) readRoom(ctx context.Context, room, only string) (_ []part, left func(string) bool, _ error) {
	var parts []part
	if only != "" {
		v, err := b.data.HGet(ctx, b.k.seqs(room), only).Result()
		switch {
		case err == redis.Nil:
		case err != nil:
			return nil, nil, err
		default:
			seq, _ := strconv.ParseUint(v, 10, 64)
			parts = append(parts, part{id: only, seq: seq})
		}
	} else {
		var cursor uint64
		for {
			kv, next, err := b.data.HScan(ctx, b.k.seqs(room), cursor, "", scanCount).Result()
			if err != nil {
				return nil, nil, err
			}
			for i := 0; i+1 < len(kv); i += 2 {
				seq, _ := strconv.ParseUint(kv[i+1], 10, 64)
				parts = append(parts, part{id: kv[i], seq: seq})
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	// After the seqs: a dataset read now is the one they were read from.
	if ds := b.lv.dataset(); ds != "" {
		if gen, err := b.data.Get(ctx, b.k.gen()).Result(); err == nil && gen == ds {
			listed := make(map[string]bool, len(parts))
			for _, p := range parts {
				listed[p.id] = true
			}
			// An orphan (an id of a dataset Redis lost) is absent
			// because Redis forgot it: its node republishes or is
			// declared down (liveness_orphans.go).
			left = func(id string) bool { return (only == "" || id == only) && !listed[id] && !b.lv.orphan(id) }
		}
	}
	live := parts[:0]
	for _, p := range parts {
		if b.isOwn(p.id) || !b.isRegistered(ctx, p.id) {
			continue
		}
		hs, err := b.readPart(ctx, room, p.id)
		if err != nil {
			return nil, nil, err
		}
		p.hs = hs
		live = append(live, p)
	}
	return live, left, nil
}

// isRegistered: id is alive as liveness knows it, or (not seen yet: it
// registered after our last round) registered in Redis. A dead id's keys
// left behind are skipped.
func (b *Bus) isRegistered(ctx context.Context, id string) bool {
	if b.lv.alive(id) {
		return true
	}
	ok, err := b.data.HExists(ctx, b.k.reg(), id).Result()
	return err == nil && ok
}

// readPart reads id's members of room with HSCAN.
func (b *Bus) readPart(ctx context.Context, room, id string) ([]presence.Holding, error) {
	key := b.k.members(room, id)
	seen := map[string]struct{}{}
	var hs []presence.Holding
	var cursor uint64
	for {
		kv, next, err := b.data.HScan(ctx, key, cursor, "", scanCount).Result()
		if err != nil {
			return nil, err
		}
		now := time.Now()
		for i := 0; i+1 < len(kv); i += 2 {
			if _, dup := seen[kv[i]]; dup {
				continue // HSCAN may return an element twice
			}
			seen[kv[i]] = struct{}{}
			h, err := decodeValue(kv[i], []byte(kv[i+1]), now)
			if err != nil {
				b.m.errors.WithLabelValues("decode").Inc()
				continue
			}
			hs = append(hs, h)
		}
		if cursor = next; cursor == 0 {
			return hs, nil
		}
	}
}

// readSeqs reads the seqs hash of each room (one field per sender that
// wrote the room: small), pipelined; rooms that failed are left out.
func (b *Bus) readSeqs(ctx context.Context, rs []*roomState) map[*roomState]map[string]uint64 {
	out := make(map[*roomState]map[string]uint64, len(rs))
	for len(rs) > 0 {
		n := min(len(rs), pipelineRooms)
		pipe := b.data.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, n)
		for i, r := range rs[:n] {
			cmds[i] = pipe.HGetAll(ctx, b.k.seqs(r.name))
		}
		_, _ = pipe.Exec(ctx)
		for i, r := range rs[:n] {
			m, err := cmds[i].Result()
			if err != nil {
				b.m.errors.WithLabelValues("antientropy").Inc()
				continue
			}
			seqs := make(map[string]uint64, len(m))
			for id, v := range m {
				if b.lv.alive(id) {
					seqs[id], _ = strconv.ParseUint(v, 10, 64)
				}
			}
			out[r] = seqs
		}
		rs = rs[n:]
	}
	return out
}
