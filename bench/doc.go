// Package bench holds presenced's system benchmarks: servers started
// in-process, clients in a separate process (the test binary re-executed),
// and metrics per connection (heap-B/conn, rss-B/conn, goroutines/conn)
// and per second (handshakes/s). Results, with the commands that reproduce
// them and the machine they ran on, are in RESULTS.md.
package bench
