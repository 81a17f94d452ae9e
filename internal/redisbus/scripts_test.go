package redisbus

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redistest"
)

// TestScriptsReadBeforeWrite: the webhook scripts read other nodes' parts,
// keys they do not declare. In Redis Cluster, while the room's slot
// migrates, Redis can refuse such a key from inside the script; Redis does
// not roll back a script's earlier writes, so every such read comes before
// the script's first write: a refusal leaves no half-applied state. An ACL
// user that may not read the other part stands for the refusal
// (review6-final-b #3).
func TestScriptsReadBeforeWrite(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	admin := s.Client(t)
	ctx := context.Background()
	k := keys{prefix: "t:"}
	const room = "r"
	p := partition(room)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// a#1 and b#1 hold u; u is a member.
	must(admin.HSet(ctx, k.members(room, "a#1"), "u", "x").Err())
	must(admin.HSet(ctx, k.members(room, "b#1"), "u", "x").Err())
	must(admin.HSet(ctx, k.seqs(room), "a#1", "5", "b#1", "3").Err())
	must(admin.SAdd(ctx, k.membership(room), "u").Err())
	must(admin.ZAdd(ctx, k.pendingRelease(p), redis.Z{Score: 1, Member: "c#1|" + room}).Err())
	// The user t may touch every key but b#1's part.
	part := k.part(p)
	must(admin.Do(ctx, "ACL", "SETUSER", "t", "on", "nopass", "+@all", "&*",
		"~"+part+"n:*", "~"+part+"wh*", "~"+part+"m:"+room+"|a#1").Err())
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Username: "t", Password: "x", MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	refused := func(err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "can't access") {
			t.Fatalf("script error %v, want the ACL's refusal of a key", err)
		}
	}

	// a#1 lets u go (a delta): wh_held must read b#1's part.
	err := writeScript.Eval(ctx, c, []string{k.members(room, "a#1"), k.seqs(room), k.membership(room), k.eventIDs(room),
		k.unacked(room, "a#1"), k.whRooms(p)},
		"a#1", "6", "0", "PUBLISH", k.channel(room), "m", k.memberPrefix(room), "0", room, "u", "").Err()
	refused(err)
	if n, _ := admin.HExists(ctx, k.members(room, "a#1"), "u").Result(); !n {
		t.Error("writeScript refused: a#1's part changed anyway")
	}
	if v, _ := admin.HGet(ctx, k.seqs(room), "a#1").Result(); v != "5" {
		t.Errorf("writeScript refused: a#1's seq %q, want 5", v)
	}

	// A release of c#1's users: its last chunk must leave whp as it was.
	// (a#1 holds u no more: b#1's part is read.)
	must(admin.HDel(ctx, k.members(room, "a#1"), "u").Err())
	err = releaseScript.Eval(ctx, c, []string{k.seqs(room), k.membership(room), k.eventIDs(room),
		k.released(room, "c#1", 0), k.whRooms(p), k.pendingRelease(p), k.pendingOf(room)},
		k.memberPrefix(room), room, "c#1|"+room, "u").Err()
	refused(err)
	if n, _ := admin.ZCard(ctx, k.pendingRelease(p)).Result(); n != 1 {
		t.Error("releaseScript refused: its whp entry was dropped anyway")
	}
	if n, _ := admin.Exists(ctx, k.released(room, "c#1", 0)).Result(); n != 0 {
		t.Error("releaseScript refused: its result was kept anyway")
	}

	// The reconcile (live a#1, b#1: it reads both parts).
	must(admin.ZRem(ctx, k.pendingRelease(p), "c#1|"+room).Err())
	must(admin.HSet(ctx, k.suspectParts(room), "z#1", "1").Err())
	must(admin.HSet(ctx, k.members(room, "z#1"), "w", "x").Err())
	must(admin.HSet(ctx, k.seqs(room), "z#1", "1").Err())
	must(admin.Do(ctx, "ACL", "SETUSER", "t", "~"+part+"whp", "~"+part+"m:"+room+"|z#1").Err())
	err = reconcileScript.Eval(ctx, c, []string{k.seqs(room), k.membership(room), k.eventIDs(room),
		k.released(room, reconcileID, 0), k.whRooms(p), k.suspects(room), k.pendingRelease(p), k.suspectParts(room),
		k.suspectsBefore(room), k.pendingOf(room)},
		k.memberPrefix(room), room, "0", "0", "60000", "500", "99999999999999", "b#1", "a#1").Err()
	refused(err)
	if n, _ := admin.Exists(ctx, k.members(room, "z#1"), k.suspectParts(room)).Result(); n != 2 {
		t.Error("reconcileScript refused: the stale part or whsp changed anyway")
	}
}
