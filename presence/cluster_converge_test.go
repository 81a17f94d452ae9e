package presence

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// Random joins, leaves, sets, typing, lost connections and a node death on
// three nodes: once quiet, every client's view of every room is the
// truth (the users with a live connection in it), and all views agree on
// every member's state.
func TestClusterConverges(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { converge(t, seed) })
		})
	}
}

func converge(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	net := newMemNet()
	ids := []string{"A", "B", "C"}
	envs := map[string]*env{}
	for _, id := range ids {
		envs[id] = net.node(t, id, Config{})
	}
	rooms := []string{"r1", "r2", "r3"}
	type conn struct {
		c     *client
		node  string
		user  string
		rooms map[string]bool
		dead  bool
	}
	var conns []*conn
	for i := range 12 {
		node := ids[i%3]
		user := fmt.Sprint("u", i%8) // some users on two nodes
		conns = append(conns, &conn{c: dial(t, envs[node].h, user), node: node, user: user, rooms: map[string]bool{}})
	}
	killed := ""
	nextID := 10
	for step := range 400 {
		if step == 200 {
			killed = ids[rng.IntN(3)]
			net.kill(killed)
			for _, cn := range conns {
				if cn.node == killed {
					cn.dead = true // its process is gone: its sessions never close
				}
			}
		}
		cn := conns[rng.IntN(len(conns))]
		if cn.dead {
			continue
		}
		room := rooms[rng.IntN(len(rooms))]
		nextID++
		switch op := rng.IntN(10); {
		case op < 4:
			cn.c.send(`{"t":"join","id":%d,"room":%q,"state":{"status":"s%d"}}`, nextID, room, rng.IntN(3))
			cn.rooms[room] = true
		case op < 6:
			cn.c.send(`{"t":"leave","id":%d,"room":%q}`, nextID, room)
			delete(cn.rooms, room)
		case op < 8:
			cn.c.send(`{"t":"set","id":%d,"room":%q,"state":{"status":"s%d"}}`, nextID, room, rng.IntN(3))
		case op < 9:
			cn.c.send(`{"t":"typing","room":%q,"on":%v}`, room, rng.IntN(2) == 0)
		default:
			cn.c.s.HandleClose(endLost)
			cn.dead = true
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
			synctest.Wait()
		}
	}
	// Quiet: graces, typing TTLs and the dead node's grace all end.
	time.Sleep(DefaultLeaveGrace + DefaultTypingTTL + time.Second)
	synctest.Wait()
	settle(envs["A"])

	for _, id := range ids {
		if id != killed {
			checkIdleHolders(t, envs[id].h)
		}
	}
	for _, room := range rooms {
		truth := map[string]bool{}
		for _, cn := range conns {
			if !cn.dead && cn.rooms[room] {
				truth[cn.user] = true
			}
		}
		want := slices.Sorted(maps.Keys(truth))
		states := map[string]string{}
		for _, cn := range conns {
			if cn.dead || !cn.rooms[room] {
				continue
			}
			cn.c.events()
			v := cn.c.views[room]
			if v == nil {
				t.Errorf("%s on %s: no view of %s", cn.user, cn.node, room)
				continue
			}
			if got := slices.Sorted(maps.Keys(v.members)); !slices.Equal(got, want) {
				t.Errorf("%s on %s sees %s = %v, want %v", cn.user, cn.node, room, got, want)
			}
			if len(v.typing) != 0 {
				t.Errorf("%s on %s sees typing %v in %s after every TTL", cn.user, cn.node, v.typing, room)
			}
			for u, m := range v.members {
				if s, ok := states[u]; ok && s != m.S {
					t.Errorf("%s: %s shows as %s and as %s on different clients", room, u, s, m.S)
				}
				states[u] = m.S
			}
		}
	}
}
