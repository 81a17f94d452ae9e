// Package webhook sends presence's room and member transitions to an HTTP
// receiver (docs/webhooks.md): batched once per tick as a JSON array,
// signed with HMAC-SHA256 over the timestamp and the body, retried with
// exponential backoff and full jitter on 5xx, 429, timeouts and network
// errors (no sooner than a 429's or 503's Retry-After, up to the ceiling).
//
// A Sender implements presence.Events: RoomEvents only appends to a
// bounded queue (a call's events that do not all fit are dropped, all of
// them, and counted) and never blocks, so it may be called with a room's
// lock held. One goroutine,
// Run's, takes the queue every tick and POSTs it; while a batch is
// retried, later events wait, so the receiver gets them in order.
//
// Usage:
//
//	s, err := webhook.New(webhook.Config{URL: u, Secret: key, Node: "n1", Registerer: reg})
//	hubCfg.Events = s      // or redisbus.Config.Events, in a cluster
//	go s.Run(ctx)          // returns once ctx is done and the last batch had its try
//
// RoomEvents is safe for concurrent use; Run is called once.
package webhook
