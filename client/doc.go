// Package client is the Go SDK of presenced. A Client owns one logical
// presence connection: it dials the server's /ws endpoint, speaks protocol
// v1 (docs/protocol.md; hello, join, leave, set, typing, sync, auth, ping),
// keeps a view of every joined room from the server's sync and diff
// messages, answers heartbeats, renews its token, and survives connection
// losses by reconnecting with jittered backoff and resuming its rooms.
// Its Stats are meant for load generators and metrics.
//
// It uses gobwas/ws for WebSocket framing and imports nothing of the
// server (deps_test.go at the module root enforces it). The types of its
// API are its own (State, Member, Sync, Diff, CloseCode, the close and
// error codes), converted from and to the protocol's messages, so that
// programs outside the module can name them all.
//
// # Usage
//
//	c, err := client.Dial(ctx, client.Config{
//		URL:       "ws://127.0.0.1:8080/ws",
//		TokenFunc: func(ctx context.Context) (string, error) { return issuer.Token(ctx, "alice") },
//	})
//	if err != nil {
//		return err // a *client.CloseError when the server refused the hello (4101...)
//	}
//	defer c.Close()
//
//	go func() {
//		for ev := range c.Events() { // closed when the client stops
//			switch ev.Kind {
//			case client.EventSynced, client.EventChanged: // ev.Sync, ev.Diff
//				v, _ := c.Room(ev.Room)
//				render(v.Members, v.Typing, v.Count)
//			case client.EventDisconnected:
//				if ev.Terminal {
//					log.Print(ev.Err)
//				}
//			}
//		}
//	}()
//
//	err = c.Join(ctx, "chat:42", &client.State{Status: "online", Meta: json.RawMessage(`{"name":"Alice"}`)})
//	var cerr *client.CommandError
//	if errors.As(err, &cerr) && cerr.Code == client.ErrCodeTooManyRooms { ... }
//	_ = c.Typing("chat:42", true)
//	_ = c.Set(ctx, "chat:42", client.State{Status: "away"})
//
// # Rooms and cursors
//
// Join adds a room to the client's state at once; the server's ack returns
// from Join and the server's sync then fills the room's view. A sync
// replaces the view (members, typing, count, partial, cursor). A diff is
// applied only when its from equals the view's cursor: joins and updates
// upsert members, leaves delete them, typing (present only when it
// changed) replaces the typing set, count and cursor are taken. Any other
// diff is ignored, counted in Stats.Gaps, and the client sends a sync
// command for the room (one at a time per room). Room returns a copy of a
// view.
//
// # Commands
//
// Every command carries an id, a positive integer increasing over the life
// of the Client. Join, Leave, Set and Sync wait for the matching ack or err
// (err becomes a *CommandError) or for ctx. A command pending when the
// connection drops is re-sent after the next welcome, with the same id (the
// protocol's commands are idempotent). Typing is fire and forget and fails
// with ErrDisconnected while no connection is up. Commands of a stopped
// client fail with ErrClosed.
//
// # Events
//
// Events are delivered in order on the bounded channel returned by Events
// (Config.EventBuffer, default 256). A sync applied to a room is an
// EventSynced carrying the Sync, a diff applied is an EventChanged
// carrying the Diff; Room has the view they produced. The client never blocks on it: when it
// is full the oldest event is dropped and Stats.DroppedEvents counts it, so
// a slow application loses old notifications, never the room state, which
// Room always has current. The channel closes when the client stops, after
// a final EventDisconnected with Terminal set.
//
// # Reconnecting
//
// After a connection loss the client reconnects after a backoff with full
// jitter: attempt n sleeps a uniform random duration in
// [0, min(MaxBackoff, MinBackoff·2ⁿ)] (500 ms doubling to 30 s by
// default), so a fleet of clients cut off at once spreads its returns. The
// attempt counter resets when a welcomed connection is lost after living at
// least 30 s; a reconnect after a shorter connection keeps growing the
// delay, so a server that welcomes and then kicks at once is not hammered.
// The close code decides, per the contract's table:
//
//   - 1000, 1002, 1003, 1007, 1009 and 4100–4199: no reconnect. The client
//     stops: Err returns a *CloseError, Done closes, a terminal
//     EventDisconnected is sent.
//   - 4003 (token expired) and 4101 (unauthorized): with a TokenFunc, one
//     more attempt with a fresh token (for 4101 only when TokenFunc returns
//     a token different from the refused one); a second refusal before a
//     welcome, or no TokenFunc, is terminal.
//   - 1001 after a bye: reconnect after the bye's retry_ms plus a random
//     jitter in [0, MinBackoff], without counting a failure.
//   - anything else (4001, 4002, 4004, 4029, a dropped TCP connection, a
//     silent server, a failed dial or upgrade, no welcome within
//     DialTimeout): reconnect with backoff. Only the first connection,
//     made by Dial, is not retried: Dial returns its error.
//
// A server is silent when nothing arrives for the heartbeat interval of its
// welcome plus Config.HeartbeatTimeout; the client then drops the
// connection and reconnects. Server pings {"t":"ping","ts":N} are answered
// with {"t":"pong","ts":N}.
//
// Resume: the hello of a reconnect carries resume, every joined room with
// the cursor of its view ("" before its first sync), and state, the state
// most of those rooms share (ties go to the alphabetically first room's).
// Right after the welcome the client sends a set for each room whose last
// state differs, carrying the whole state (status and meta, defaults
// included: the server keeps what a set leaves out, here the hello's), then
// re-sends the pending commands. Each resumed room
// answers with a diff continuing its cursor (the view just goes on) or a
// full sync.
//
// Token refresh: on {"t":"refresh"} the client calls TokenFunc, sends auth
// and waits for the ack (EventRefreshed; a failure is an EventError). Each
// connection calls TokenFunc for its hello; without one, Token is sent.
//
// # Concurrency and goroutines
//
// All Client methods are safe for concurrent use. A Client owns one
// goroutine, started by Dial, that reads the connection, processes every
// server message, and runs the reconnect loop; a token refresh runs in a
// short-lived goroutine of its own. Close sends a close frame 1000, waits up
// to a second for the server's close frame, and returns once every
// goroutine has finished. TokenFunc must return when its ctx is done.
//
// Locks: Client.mu guards the rooms, the pending commands and the current
// connection; session.wmu serializes the frames written to one connection;
// Client.evMu serializes event delivery. No two of them are ever held
// together: nothing writes to a connection or emits an event with
// Client.mu held.
package client
