// Command presence-load is a load generator for presence servers: it opens
// many WebSocket connections (from several processes and source addresses
// when one process's 20,000 open files or one address's ports are not
// enough), runs a scenario (idle, churn, fanout, typing, reconnect, cluster,
// leave) against presenced's protocol v1 or another -target, prints a
// progress line every second on stderr and a JSON summary on stdout.
//
// Each connection is a lean client of its own (conn.go), not client/ (the
// Go SDK), and has one goroutine and a 1 KiB read buffer: measured, 9 KB
// of RSS per connection (15,000 idle connections in one process: 139 MB),
// 175 MB for the 19,000 one process can hold, which a load generator can
// afford; an epoll loop would save most of it at the cost of a harder
// program to read and change. Run `presence-load -h` for the flags; docs
// in README.md ("Load generator").
//
// Exit status: 0, or 1 when the run counted more errors than -max-errors,
// or on a bad flag (2) or a failure to run.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

// mainExit runs the program with args and returns its exit status.
func mainExit(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return exitStatus(run(ctx, args, stdout, stderr), stderr)
}

// exitStatus reports err on stderr and returns the exit status for it.
func exitStatus(err error, stderr io.Writer) int {
	var uerr usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "presence-load: %v\nRun 'presence-load -h' for usage.\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "presence-load: %v\n", err)
		return 1
	}
}

// errNotReady is run's answer when not every connection had joined
// -ready-timeout after the start; the summary is printed all the same.
var errNotReady = errors.New("not every connection joined within -ready-timeout")

// errTooManyErrors is run's answer when the run counted more errors than
// -max-errors; the summary is printed all the same.
var errTooManyErrors = errors.New("more errors than -max-errors")

// run is the whole program: parse args, run the load (in this process, or
// in -procs children), print the summary on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stdout)
	if err != nil || cfg == nil { // nil: -h
		return err
	}
	return execute(ctx, cfg, stdout, stderr)
}

// execute runs a parsed configuration.
func execute(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	stderr = &lockedWriter{w: stderr} // written by every connection's goroutine
	if cfg.child >= 0 {
		return runChild(ctx, cfg, os.Stdin, stdout, stderr)
	}
	sum, err := runParent(ctx, cfg, stderr)
	if err != nil && !errors.Is(err, errNotReady) {
		return err
	}
	if err := writeSummary(stdout, sum); err != nil {
		return err
	}
	if err != nil {
		return fmt.Errorf("%w: %d errors", err, sum.Errors)
	}
	if sum.Errors > int64(cfg.maxErrors) {
		return fmt.Errorf("%w: %d errors", errTooManyErrors, sum.Errors)
	}
	return nil
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer // guarded by mu
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
