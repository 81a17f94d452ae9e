// Package client will be the public Go SDK of presenced: it dials /ws,
// speaks protocol v1 (hello, join, leave, set, typing, sync, auth), keeps
// each room's member list from sync and diff events, follows cursors,
// resumes after a reconnect with jittered backoff and answers heartbeats.
// cmd/presence-load, the load generator, is built on it.
//
// It imports internal/wire for the protocol and nothing of the server
// (enforced by deps_test.go at the module root). Nothing is implemented
// yet: this file only reserves the package.
package client
