// Command baseline is the typical presence server that presenced is
// compared with (make bench-compare): a goroutine per connection with
// github.com/gorilla/websocket, a hub of rooms each guarded by a mutex, a
// writer goroutine per connection fed by a growable queue (a connection
// with more than -send-buffer messages queued is dropped), and every
// change broadcast at once to every member of the room: no coalescing,
// one diff per join, leave, set and typing change.
//
// It speaks the subset of protocol v1 (docs/protocol.md) that
// presence-load's scenarios use: hello (an insecure user, or a token that
// is accepted unverified: its sub is the user), welcome, join (ack, then a
// full sync with its cursor; resume in hello re-joins), leave, set, sync,
// typing, diffs with from/cur cursors forming one chain per room, client
// pings, server pings every -hb (the first at a random point in [hb/2,
// hb]), close 4001 after hb + 10 s of silence, a clean close leaving at
// once and a lost connection leaving after leave_grace (5 s). Not spoken:
// list_limit (syncs list every member), token refresh, drain, rate limits.
//
//	baseline -addr 127.0.0.1:8080 -hb 25s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "listen `address`; clients connect to ws://ADDR/ws")
	fs.DurationVar(&cfg.HB, "hb", 25e9, "server ping `interval`")
	fs.DurationVar(&cfg.HBTimeout, "hb-timeout", 10e9, "silence beyond hb before close 4001")
	fs.DurationVar(&cfg.LeaveGrace, "leave-grace", 5e9, "how long a lost connection's member stays")
	fs.IntVar(&cfg.SendBuffer, "send-buffer", DefaultSendBuffer, "most queued `messages` per connection (a growable queue); one more drops the connection")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	s, err := New(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "baseline: listening on ws://%s/ws\n", s.Addr())
	return s.Run(ctx)
}
