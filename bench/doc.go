// Package bench holds presenced's system benchmarks: servers started
// in-process, clients in a separate process (the test binary re-executed),
// and metrics per connection (heap-B/conn, rss-B/conn, goroutines/conn)
// and per second (handshakes/s). The cluster benchmarks (cluster_*_test.go,
// issue T3) run several nodes sharing a real redis-server, in-process or as
// presenced processes, and read Redis's side with INFO. Results, with the
// commands that reproduce them and the machine they ran on, are in
// RESULTS.md.
package bench
