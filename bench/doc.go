// Package bench holds presenced's system benchmarks: servers started
// in-process, clients in a separate process (the test binary re-executed),
// and metrics per connection (heap-B/conn, rss-B/conn, goroutines/conn)
// and per second (handshakes/s). The cluster benchmarks (cluster_*_test.go,
// issue T3) run several nodes sharing a real redis-server, in-process or as
// presenced processes, and read Redis's side with INFO. Results, with the
// commands that reproduce them and the machine they ran on, are in
// RESULTS.md.
//
// Beside it (issue T4): bench/baseline is the typical presence server
// presenced is compared with, bench/compare the harness of `make
// bench-compare` (servers as processes, presence-load as the client,
// figures from /proc), bench/plot a module of its own that draws RSS per
// connection from bench/compare's JSON.
package bench
