// Package presence will be the domain core of presenced (issue T2): rooms,
// members, typing, leave grace, cursors, coalesced fan-out and the session
// state machine of protocol v1.
//
// It declares the interfaces it consumes (the connection it sends to, later
// the cluster bus) and never imports the poller, netpoll, gobwas/ws or
// go-redis: internal/server adapts the poller to it, internal/redisbus
// implements its bus. deps_test.go at the module root enforces this.
//
// Nothing is implemented yet: this file only reserves the package.
package presence
