// Package multinode holds the tests of whole presenced nodes sharing a
// Redis: each node is a process of the presenced binary (built once per
// test run, with the race detector when the tests have it), started with
// -redis on free ports; Redis, Redis Cluster and Sentinel are real
// redis-server processes (internal/redistest); clients are the public Go
// SDK (client/) with insecure users. The package has no code of its own:
// only its tests.
//
// The tests use short settings (-node-ttl 1500ms, -leave-grace 1s, -tick
// 50ms, -typing-ttl 1s) and derive every bound from them, for instance a
// node's death shows as leaves within node_ttl + node_ttl/3 + leave_grace
// + 1 s, + node_ttl when a starved CPU delays every round (the judgement
// clock). They poll (eventually, during) rather than sleep.
package multinode
