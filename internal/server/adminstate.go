package server

import (
	"context"
	"net/netip"

	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// adminState is what the admin API reads and does: the presence of this
// node alone (localState) or of every node sharing its Redis
// (clusterState). Its methods are called from HTTP handlers, never from
// an event loop, and may read Redis.
type adminState interface {
	// RoomMembers: the room's members sorted by user; empty if none.
	RoomMembers(ctx context.Context, room string) ([]presence.MemberInfo, error)
	// RoomNames: the rooms with members whose name starts with prefix, sorted.
	RoomNames(ctx context.Context, prefix string) ([]string, error)
	// RoomCounts: the member count of each of rooms.
	RoomCounts(ctx context.Context, rooms []string) (map[string]int, error)
	// UserRooms: the rooms user is a member of, sorted.
	UserRooms(ctx context.Context, user string) ([]string, error)
	// Nodes: the live nodes, sorted by id, with their connection counts.
	Nodes(ctx context.Context) ([]presence.NodeInfo, error)
	// Disconnect closes user's connections everywhere with code, their
	// memberships ending without leave grace for 4100-4199 (keeping it
	// for 4000-4099); it returns how many closes it started on this node,
	// how many of this node's draining connections it took over and how
	// many memberships this node held only for a leave grace it ended
	// (presence.Hub.Disconnect), also with an error (the other nodes may
	// not have been told).
	Disconnect(ctx context.Context, user string, code wire.CloseCode) (closed, draining, held int, _ error)
}

// localState is a single node's view: the hub holds everything.
type localState struct {
	hub  *presence.Hub         // static
	addr func() netip.AddrPort // static: the public listener's address (bound before the API serves)
}

var _ adminState = localState{}

func (l localState) RoomMembers(_ context.Context, room string) ([]presence.MemberInfo, error) {
	return l.hub.RoomMembers(room), nil
}

func (l localState) RoomNames(_ context.Context, prefix string) ([]string, error) {
	return l.hub.RoomNames(prefix), nil
}

func (l localState) RoomCounts(_ context.Context, rooms []string) (map[string]int, error) {
	out := make(map[string]int, len(rooms))
	for _, r := range rooms {
		out[r] = l.hub.RoomCount(r) // not RoomMembers: no copy under the room's lock
	}
	return out, nil
}

func (l localState) UserRooms(_ context.Context, user string) ([]string, error) {
	return l.hub.UserRooms(user), nil
}

func (l localState) Nodes(context.Context) ([]presence.NodeInfo, error) {
	ni := l.hub.NodeInfo()
	ni.Addr = l.addr().String()
	return []presence.NodeInfo{ni}, nil
}

func (l localState) Disconnect(_ context.Context, user string, code wire.CloseCode) (closed, draining, held int, _ error) {
	closed, draining, held = l.hub.Disconnect(user, code)
	return closed, draining, held, nil
}

// clusterState is the view of every node: reads go to Redis (the bus),
// a disconnect closes this node's connections and asks the others to.
type clusterState struct {
	*redisbus.Bus               // static: RoomMembers, RoomNames, RoomCounts, UserRooms, Nodes
	hub           *presence.Hub // static
}

var _ adminState = clusterState{}

func (c clusterState) Disconnect(ctx context.Context, user string, code wire.CloseCode) (closed, draining, held int, _ error) {
	closed, draining, held = c.hub.Disconnect(user, code)
	return closed, draining, held, c.Kick(ctx, user, code)
}
