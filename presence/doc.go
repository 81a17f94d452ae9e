// Package presence is the domain core of presenced: rooms, members, typing,
// leave grace, cursors and history, coalesced fan-out, and the session state
// machine of protocol v1 (docs/protocol.md).
//
// A Hub owns the rooms and sessions of one node. The transport opens a
// Session per connection and feeds it the connection's events; the Session
// answers through the Sink it was opened with:
//
//	hub, err := presence.New(presence.Config{Insecure: true})
//	go hub.Run(ctx)               // flushes rooms once per tick
//	s := hub.Open(sink)           // on upgrade
//	s.HandleText(msg)             // on each text message
//	s.HandleDeadline()            // when the deadline s asked for passes
//	s.HandleClose(end)            // once, when the connection is gone
//
// Members are users, not connections: a user is a member of a room while at
// least one of its connections has joined it (or during the leave grace of
// the last one). Changes are collected per room in a coalesce.Changes and
// published once per tick as one diff holding the net change, encoded once
// and handed as the same bytes to every subscriber. A subscriber whose
// outbox is full misses diffs and gets a full sync once it drains; one that
// stays full for Config.SlowTimeout is closed with 4002.
//
// Every close a session starts (hello failures, 4001, 4002, 4003, 4029,
// 41xx, 1003, 1007, the drain's 1001) goes through one path that records
// its code and CloseReason, first close wins. HandleClose combines that
// record with what the transport saw (a ConnEnd) into the connection's
// CloseReason and the leave mode of its members.
//
// It declares the interfaces it consumes (Sink, Authenticator, the metric
// interfaces; later the cluster bus) and never imports the poller, netpoll,
// gobwas/ws or go-redis: internal/server adapts the poller to it.
// deps_test.go at the module root enforces this.
//
// # Concurrency
//
// Hub methods are safe for concurrent use. A Session's Handle methods must
// not run concurrently with each other (the poller calls them from one
// connection's callbacks, which never overlap); room flushers, running on
// the Hub's scheduler goroutines, only use a Session's sink and its close
// path (closeWith, first close wins). Goroutines: Hub.Run runs Config.Workers flushers and
// the history sweep (history.go) and joins them before returning; the flush of a room with 4,096 subscribers or
// more hands its diff to the sinks on up to Config.Workers goroutines,
// joined before that flush returns. Nothing else starts goroutines.
//
// Lock order: room.mu, then either roomShard.mu (dropping an empty room,
// listing or unlisting a room with history),
// the scheduler's lock (coalesce.Scheduler.Mark) or a sink's own lock
// (poller.Conn.mu: Send, Close, SetDeadline). Session registry shard locks
// are taken alone. Sink methods must not block or call back into presence.
package presence
