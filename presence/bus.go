package presence

import "time"

// Bus connects the hubs of several nodes (internal/redisbus implements it
// over Redis). A Hub without one (Config.Bus nil) is a single node, all in
// memory.
//
// What crosses the bus is each node's own holdings: per (room, user),
// whether this node holds the member (a local connection joined, or a lost
// one's leave grace runs), with the state and typing this node last set.
// Never the merged view: a user held by two nodes is one member, present
// until the last holder anywhere lets go.
//
// The Hub calls Publish, Watch and Unwatch with a room's lock (or its
// shard's) held, from a room flush or a command on an event loop, or from
// Republish: they must return at once
// (queue, never wait for Redis) and must not call back into the Hub. The
// bus calls the Hub's Apply, Loaded, NodeDown and Republish from its own
// goroutines, holding none of the locks Publish, Watch and Unwatch take.
type Bus interface {
	// Publish hands over the room's local holdings that changed in one
	// tick (at most one call per room per tick), or with full all of them
	// (after Hub.Republish): the node's whole part of the room, replacing
	// what was published before. The bus owns hs.
	Publish(room string, hs []Holding, full bool)
	// Watch: the room has its first local subscriber. The bus loads the
	// other nodes' holdings of the room (Apply with full), calls
	// Hub.Loaded, and keeps them current with Apply until Unwatch.
	Watch(room string)
	// Unwatch: the room has had no local subscriber for a while; the Hub
	// has forgotten its remote holdings.
	Unwatch(room string)
}

// Holding is one node's hold on a room member: the absolute state that
// node last published for (room, user).
type Holding struct {
	User   string
	Held   bool   // false: the node let go (the other fields are unset)
	Status string // as in wire.State
	Meta   string // compact JSON object; "" for {}
	// Version orders states of the same member across nodes: the newest
	// wins. It is a hybrid logical clock (Clock.Next).
	Version uint64
	// Typing is how long the member still types from the publish, 0 for
	// not typing.
	Typing time.Duration
}
