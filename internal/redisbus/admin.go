package redisbus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// The cluster view for operators (the admin API of internal/server): reads
// of what Redis holds, from the caller's goroutine (an HTTP handler), never
// from the rooms loop or an event loop. Each read sees the live nodes'
// parts as written (each node writes its rooms once per tick), so every
// node answers alike.

// MaxScanRooms bounds the room index entries one read scans (RoomNames,
// UserRooms), summed over the live nodes: a read that would scan more
// fails with ErrTooManyRooms, so that one admin request cannot cost Redis
// a walk of every room (docs/admin.md).
const MaxScanRooms = 100_000

// ErrTooManyRooms: a read would scan more than MaxScanRooms index entries.
var ErrTooManyRooms = errors.New("redisbus: more rooms than one read scans")

// liveNodes returns the registry: id -> registration info ("addr|start ms").
func (b *Bus) liveNodes(ctx context.Context) (map[string]string, error) {
	return b.live.HGetAll(ctx, b.k.reg()).Result()
}

// RoomMembers returns the members of room on every live node, sorted by
// user: for a user held by several nodes, the newest state (the same rule
// as the hubs'). Empty for a room without members.
func (b *Bus) RoomMembers(ctx context.Context, room string) ([]presence.MemberInfo, error) {
	reg, err := b.liveNodes(ctx)
	if err != nil {
		return nil, err
	}
	best := map[string]presence.Holding{}
	for id := range reg {
		hs, err := b.readPart(ctx, room, id)
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			if cur, ok := best[h.User]; !ok || newer(h, cur) {
				best[h.User] = h
			}
		}
	}
	out := make([]presence.MemberInfo, 0, len(best))
	for _, u := range slices.Sorted(maps.Keys(best)) {
		h := best[u]
		out = append(out, presence.MemberInfo{User: u, Status: h.Status, Meta: h.Meta})
	}
	return out, nil
}

// newer orders two nodes' states of a member: the higher version, and on
// equal versions the content, so that every reader picks the same.
func newer(a, b presence.Holding) bool {
	if a.Version != b.Version {
		return a.Version > b.Version
	}
	if a.Status != b.Status {
		return a.Status > b.Status
	}
	return a.Meta > b.Meta
}

// RoomNames returns the rooms written by a live node whose name starts
// with prefix, sorted: the union of the live nodes' room indexes (a node
// removes a room from its index when it holds nobody there any more). It
// fails with ErrTooManyRooms after scanning MaxScanRooms entries.
func (b *Bus) RoomNames(ctx context.Context, prefix string) ([]string, error) {
	reg, err := b.liveNodes(ctx)
	if err != nil {
		return nil, err
	}
	set := map[string]struct{}{}
	match := ""
	if !strings.ContainsAny(prefix, `*?[]\`) { // ids never hold these; a glob would still be filtered below
		match = prefix + "*"
	}
	scanned := 0
	for id := range reg {
		var cursor uint64
		for {
			rooms, next, err := b.data.SScan(ctx, b.k.rooms(id), cursor, match, scanCount).Result()
			if err != nil {
				return nil, err
			}
			// With a prefix, Redis walks the whole index: a step that did
			// not cover the set at once counts as the scanCount entries it
			// walked.
			if match == "" || (cursor == 0 && next == 0) {
				scanned += len(rooms)
			} else {
				scanned += max(len(rooms), scanCount)
			}
			if scanned > b.scanCap {
				return nil, fmt.Errorf("%w (%d, over %d live nodes)", ErrTooManyRooms, b.scanCap, len(reg))
			}
			for _, r := range rooms {
				if strings.HasPrefix(r, prefix) {
					set[r] = struct{}{}
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}

// RoomCounts returns the member count of each room (a user held by
// several nodes counts once), read with one pipeline per batch of rooms.
func (b *Bus) RoomCounts(ctx context.Context, rooms []string) (map[string]int, error) {
	reg, err := b.liveNodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(rooms))
	for len(rooms) > 0 {
		n := min(len(rooms), pipelineRooms)
		pipe := b.data.Pipeline()
		cmds := make([][]*redis.StringSliceCmd, n)
		for i, r := range rooms[:n] {
			for id := range reg {
				cmds[i] = append(cmds[i], pipe.HKeys(ctx, b.k.members(r, id)))
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			return nil, err
		}
		for i, r := range rooms[:n] {
			users := map[string]struct{}{}
			for _, c := range cmds[i] {
				for _, u := range c.Val() {
					users[u] = struct{}{}
				}
			}
			out[r] = len(users)
		}
		rooms = rooms[n:]
	}
	return out, nil
}

// UserRooms returns the rooms user is a member of on any live node,
// sorted. Redis keeps no index by user: it checks every room of every
// live node's index (one HEXISTS per room and node, pipelined), which is
// an operator's query, not one for a hot path. It fails with
// ErrTooManyRooms like RoomNames.
func (b *Bus) UserRooms(ctx context.Context, user string) ([]string, error) {
	reg, err := b.liveNodes(ctx)
	if err != nil {
		return nil, err
	}
	rooms, err := b.RoomNames(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []string
	for len(rooms) > 0 {
		n := min(len(rooms), pipelineRooms)
		pipe := b.data.Pipeline()
		cmds := make([][]*redis.BoolCmd, n)
		for i, r := range rooms[:n] {
			for id := range reg {
				cmds[i] = append(cmds[i], pipe.HExists(ctx, b.k.members(r, id), user))
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
		for i, r := range rooms[:n] {
			for _, c := range cmds[i] {
				if c.Val() {
					out = append(out, r)
					break
				}
			}
		}
		rooms = rooms[n:]
	}
	return out, nil
}

// Nodes returns the live nodes, sorted by id, with the connection counts
// each reported at its last report (every NodeTTL/3; -1 if none yet).
func (b *Bus) Nodes(ctx context.Context) ([]presence.NodeInfo, error) {
	reg, err := b.liveNodes(ctx)
	if err != nil {
		return nil, err
	}
	ids := slices.Sorted(maps.Keys(reg))
	out := make([]presence.NodeInfo, 0, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = b.k.conns(id)
	}
	vals, err := b.live.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		addr, _, _ := strings.Cut(reg[id], "|")
		n := int64(-1)
		if s, ok := vals[i].(string); ok {
			n, _ = strconv.ParseInt(s, 10, 64)
		}
		out = append(out, presence.NodeInfo{ID: id, Addr: addr, Conns: n})
	}
	return out, nil
}

// Kick asks every other node to close user's connections with code (a
// "kick" on the control channel). With 4100-4199 their memberships end
// without leave grace, so each room's other members see the leave within
// a tick of the close; 4000-4099 (inviting a reconnect) keep the grace,
// as presence.Hub.Disconnect says. The caller closes this node's own (presence.Hub.Disconnect). The
// announcement is Pub/Sub, at most once: a node whose subscription is
// reconnecting misses it (check UserRooms and repeat).
func (b *Bus) Kick(ctx context.Context, user string, code wire.CloseCode) error {
	id := b.selfID()
	if id == "" {
		return errors.New("redisbus: not registered in Redis yet: the other nodes were not told")
	}
	msg := fmt.Sprintf("kick %s %d %s", id, code, user)
	if err := b.live.Publish(ctx, b.k.ctl(), msg).Err(); err != nil {
		b.m.errors.WithLabelValues("kick").Inc()
		return err
	}
	return nil
}

// kickQueue bounds the peers' kicks waiting for kicker.
const kickQueue = 1024

// queueKick hands a peer's kick from the control channel's receive loop
// (which also carries the lease-expiry events) to kicker, without waiting:
// a kick that finds the queue full is dropped, like one sent while the
// subscription reconnects.
func (b *Bus) queueKick(msg string) {
	select {
	case b.kicks <- msg:
	default:
		b.m.errors.WithLabelValues("kick").Inc()
		b.log.Warn("redisbus: kick queue full: dropped", "msg", msg)
	}
}

// kicker runs the queued kicks until ctx is done.
func (b *Bus) kicker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-b.kicks:
			b.onKick(msg)
		}
	}
}

// onKick handles a peer's "kick <sender> <code> <user>" (queued by
// queueKick): this node closes user's connections.
func (b *Bus) onKick(msg string) {
	f := strings.Fields(msg)
	if len(f) != 4 || b.isOwn(f[1]) {
		return
	}
	code, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil || !wire.ValidID(f[3]) {
		return
	}
	n, d, held := b.hub.Disconnect(f[3], wire.CloseCode(code))
	b.log.Info("redisbus: user disconnected by a peer's request", "user", f[3], "code", code, "from", f[1], "closed", n, "draining", d, "held_ended", held)
}

// reportConns writes this node's connection count every NodeTTL/3 under
// conns:<id>, expiring after a NodeTTL without a report, until ctx is done.
func (b *Bus) reportConns(ctx context.Context) {
	t := time.NewTicker(b.cfg.NodeTTL / 3)
	defer t.Stop()
	for {
		if id := b.selfID(); id != "" {
			n := b.hub.NodeInfo().Conns
			if err := b.live.Set(ctx, b.k.conns(id), n, b.cfg.NodeTTL).Err(); err != nil && ctx.Err() == nil {
				b.m.errors.WithLabelValues("conns").Inc()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
