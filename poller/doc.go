// Package poller is presenced's WebSocket transport: it accepts TCP
// connections, performs the HTTP upgrade without blocking, enforces
// RFC 6455 on every frame, reassembles messages, queues outbound frames in
// a bounded outbox and runs per-connection deadlines. It knows nothing of
// presence: an application sees a Handler and Conns.
//
// Two engines share the protocol code: "epoll" (default), a few event
// loops over fd-indexed state with no goroutine and no buffer per idle
// connection, and "netpoll" (cloudwego/netpoll, tuned buffers). See
// docs/transport.md for the design and bench/RESULTS.md for their costs.
//
// Usage:
//
//	s, err := poller.New(poller.Config{Addr: "127.0.0.1:8080"}, handler)
//	if err != nil {
//		return err
//	}
//	go s.Run(ctx) // serves until ctx is done, then closes every connection with 1001
//
//	// In a Handler callback or from any goroutine:
//	frame := poller.AppendTextFrame(nil, payload) // encode once...
//	for _, c := range subscribers {
//		_ = c.Send(frame) // ...send the same bytes to many; never blocks, ErrFull when the outbox is full
//	}
//	_ = c.SendCopy(scratch) // a reply in a buffer the caller reuses: queued as a copy
//
// Concurrency: Server methods, Conn.Send, Conn.Close, Conn.SetDeadline and
// Conn.OutboxLen are safe for concurrent use. Handler callbacks for one
// connection never overlap and must not block.
//
// Replies are not dropped for lack of room: the reader hands OnMessage a
// message only while the connection's outbox has Config.ReplyReserve free
// (default 1 KiB). Otherwise the connection is paused: its unprocessed
// input is kept and processed, in order, once the peer has read enough.
// The epoll engine stops reading a paused socket (TCP pushes back on the
// client; at most one 64 KiB read and one incomplete frame are kept). The
// netpoll engine cannot stop reading: it keeps what arrives, up to
// max(64 KiB, 2*MaxMessage) — room for a burst of commands and two whole
// messages — and beyond that closes with 1008. Deadlines, and close frames
// sent by the server, work while paused; the peer's own frames (a ping, a
// close) are handled in their turn.
//
// Pages: the listener can also answer plain GET and HEAD requests for a
// few paths with responses encoded once (Config.Pages, for a demo page):
// the bytes are written without a copy and the connection is closed.
//
// Panics: a panic in a Handler callback is recovered on both engines. It
// is logged with its stack, reported to Config.OnPanic, and closes that
// connection with 1011 (ClosePanic); the other connections are unaffected.
//
// Goroutines: Run starts them (the acceptor, the epoll loops or the
// netpoll sweep and write retrier) and joins them before it returns.
// netpoll's own poller goroutines live as long as the process.
//
// Lock order (outermost first): npConn.mu (netpoll engine), Conn.mu, then
// netpollEngine.mu, netpollEngine.wmu or limits.mu. No Handler callback is
// made with Conn.mu held.
package poller
