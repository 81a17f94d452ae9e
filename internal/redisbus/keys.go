package redisbus

import (
	"hash/fnv"
	"strconv"
)

// partitions is the number of room partitions. A room's keys and channel
// carry its partition's hash tag, so they share one Cluster slot, and one
// sharded Pub/Sub connection serves every watched room of a partition.
const partitions = 64

// keys builds every Redis key and channel name of the bus. All liveness
// keys share the hash tag {n}, so the liveness script touches one slot
// (and one subscription to expired events serves Cluster too); a room's
// keys share the tag of its partition.
//
// Schema (P is Config.Prefix, id a node incarnation "node#epoch"):
//
//	P{n}:gen               random dataset id, SET NX at start; changed or gone: Redis lost its data
//	P{n}:reg               HASH id -> registration info
//	P{n}:lease:<id>        the lease, PX NodeTTL
//	P{n}:tomb:<id>         id ended (fence): bye (left), gone (retired by its restart), 1 (reaped), PX 1 h
//	P{n}:last:<node>       the newest incarnation id of node, PX 1 day past its last round
//	P{n}:rooms:<id>        SET of the rooms id wrote (the reaper's index)
//	P{n}:reap:<id>         the reaper's lock, SET NX
//	P{n}:clock             when a node last ran a liveness round (Redis TIME, ms), PX 4 NodeTTL
//	P{n}:grace             set for one NodeTTL when no round ran for NodeTTL/2: nobody is reaped meanwhile
//	P{n}:conns:<id>        id's open connections, PX NodeTTL, written every NodeTTL/3
//	P{n}:ctl               channel: node gone / bye announcements, operators' kicks
//	P{p<k>}:m:<room>|<id>  HASH user -> holding, id's part of the room
//	P{p<k>}:n:<room>       HASH id -> last seq id published for the room
//	P{p<k>}:c:<room>       channel: the room's messages
//	P{p<k>}:x              channel: partition k's marker and probes
type keys struct {
	prefix string // static
}

func (k keys) live(suffix string) string { return k.prefix + "{n}:" + suffix }

func (k keys) gen() string               { return k.live("gen") }
func (k keys) reg() string               { return k.live("reg") }
func (k keys) lease(id string) string    { return k.live("lease:" + id) }
func (k keys) tomb(id string) string     { return k.live("tomb:" + id) }
func (k keys) last(node string) string   { return k.live("last:" + node) }
func (k keys) rooms(id string) string    { return k.live("rooms:" + id) }
func (k keys) reapLock(id string) string { return k.live("reap:" + id) }
func (k keys) ctl() string               { return k.live("ctl") }
func (k keys) conns(id string) string    { return k.live("conns:" + id) }

// leasePrefix is what an expired event's key starts with for a lease.
func (k keys) leasePrefix() string { return k.live("lease:") }

// partition is the room's partition.
func partition(room string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(room))
	return int(h.Sum32() % partitions)
}

func (k keys) part(p int) string { return k.prefix + "{p" + strconv.Itoa(p) + "}:" }

func (k keys) members(room, id string) string {
	return k.part(partition(room)) + "m:" + room + "|" + id
}
func (k keys) seqs(room string) string    { return k.part(partition(room)) + "n:" + room }
func (k keys) channel(room string) string { return k.part(partition(room)) + "c:" + room }
func (k keys) marker(p int) string        { return k.part(p) + "x" }
