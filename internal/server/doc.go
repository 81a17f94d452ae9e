// Package server is the glue of presenced: it wires the poller's callbacks
// to the application, counts what happens in Prometheus metrics and serves
// the admin HTTP listener (/healthz, /readyz, /metrics, /debug/pprof/ and
// the admin API under /api/: adminapi.go, docs/admin.md).
// cmd/presenced is a thin main around it; tests and benchmarks start a whole
// server in-process through it.
//
// /ws serves protocol v1 (docs/protocol.md): each connection's
// presence.Session lives in its poller.Conn value (app.go), the hub is
// built from Config.Presence and Config.JWT (hub.go), and Run drains on
// shutdown: bye with retry_ms spread over Config.Drain, close 1001.
//
// With Config.Redis the node joins the others sharing that Redis: the
// server builds an internal/redisbus.Bus, hands it to the hub
// (presence.Config.Bus), runs it beside the hub and, on a drain, keeps it
// running (the drained members still held, the lease renewed) until
// Config.Drain has passed since the drain began, then calls its Leave so
// the other nodes act at once: a drained client that comes back elsewhere
// after its retry_ms is never seen leaving. Without it the node is alone,
// holds everything in memory and does not wait out Config.Drain.
//
// With Config.Webhook the server builds an internal/webhook.Sender, hands
// it to the hub (presence.Config.Events) on a single node or to the bus
// (redisbus.Config.Events) with Redis, and runs it until the hub has
// stopped (docs/webhooks.md).
//
// Usage:
//
//	reg := prometheus.NewRegistry()
//	s, err := server.New(server.Config{
//		Addr:     "127.0.0.1:0",
//		Registry: reg,
//		JWT:      auth.Config{HS256Secret: secret}, // or Presence: presence.Config{Insecure: true}
//	})
//	if err != nil {
//		return err
//	}
//	return s.Run(ctx) // serves until ctx is done, then drains and returns
//
// Run is called once. The other methods of Server are safe for concurrent
// use.
//
// Lock order: the package holds no lock while calling into the poller or
// presence; presence calls the poller (Send, Close, SetDeadline) with a
// room lock held, which the poller never calls back under (see the
// presence package doc).
package server
