// Package server is the glue of presenced: it wires the poller's callbacks
// to the application, counts what happens in Prometheus metrics and serves
// the admin HTTP listener (/healthz, /readyz, /metrics, /debug/pprof/).
// cmd/presenced is a thin main around it; tests and benchmarks start a whole
// server in-process through it.
//
// Until the presence core (issue T2) lands, /ws runs a temporary
// application: text messages are echoed back unchanged and a binary message
// closes the connection with 1003, as protocol v1 requires.
//
// Usage:
//
//	reg := prometheus.NewRegistry()
//	s, err := server.New(server.Config{Addr: "127.0.0.1:0", Registry: reg})
//	if err != nil {
//		return err
//	}
//	return s.Run(ctx) // serves until ctx is done, then drains and returns
//
// Run is called once. The other methods of Server are safe for concurrent
// use.
//
// Lock order: the package holds no lock while calling into the poller, so
// it adds nothing to the poller's order.
package server
