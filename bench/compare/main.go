// Command compare runs presenced (epoll and netpoll engines), the
// baseline (bench/baseline) and Centrifugo one after another on the same
// presence-load workloads and writes what each server cost, measured from
// outside through /proc, as raw JSON and a Markdown table of ratios
// (presenced epoll is 1×). `make bench-compare` runs it; it is never part
// of `make test`.
//
// Each measurement starts a fresh server process (pinned to CPU 0 with
// taskset when there are two CPUs; presence-load pinned to CPU 1):
//
//   - idle: N connections (-conns-curve), 15 per room; after presence-load
//     prints ready, they idle -idle at -accept-conns (the acceptance
//     figure) and -curve-idle at the other points. RSS per connection =
//     (VmRSS at the end − VmRSS of the fresh server) / N, no forced GC.
//     Idle CPU per connection per second = utime+stime over the last
//     -cpu-window of the idle period (the whole period when shorter) / N /
//     window. Connect rate from presence-load's summary. Past 15,000
//     connections the load runs as 2 processes from 127.0.0.10 and
//     127.0.0.11 (a process holds at most 20,000 open files; the server
//     holds them all, so ~19,000 is the top of the curve).
//   - fanout: L listeners (-fanout) in one room, -fanout-rate changes a
//     second over -changers members, -fanout-duration: server CPU per
//     change per listener (CPU from ready to the end of the changes plus
//     the 2 s settle, divided by the changes presence-load sent; fewer
//     than 90 % of the nominal fails the run), deliveries (the changers'
//     changes received) per server CPU-second, p99 scheduled change →
//     seen, stale listeners. presenced runs with -list-limit above L so
//     that its diffs carry member state. The baseline and Centrifugo
//     push every join to every member: filling a room of L costs L²/2
//     join frames, so they run only the rooms up to -peer-fanout-max
//     (default 5,000); presence-load's ready waits until the listeners
//     have seen the whole room, so that backlog is drained before the
//     window. -baseline-ramp slows the baseline's arrivals; more than
//     L/10 errors before ready fail the run early.
//   - leave: -leave-conns connections, 10 per room, one cut (RST) a second:
//     cut → every other member has seen the leave (p50, p99).
//
// presence-load gets -ready-timeout = the harness's own wait for ready +
// 30 s. Servers and loads run in process groups of their own and die with
// compare (Pdeathsig); on SIGINT or SIGTERM compare interrupts the
// running load and stops within about 30 s (the load's summary).
//
// Output: -out (default .cache/bench-compare/<UTC date-time>/) gets
// results.json (every run: presence-load's summary and the server's
// figures), table.md and logs/ (each process's output); the table is
// printed at the end.
//
//	go run ./bench/compare                   # the full run, about 30 min
//	go run ./bench/compare -quick            # a smoke run with small N, ~5 min
//	go run ./bench/compare -servers presenced-epoll,baseline -load-bin /path/presence-load
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
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	h, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	h.log = stderr
	if err := h.prepare(ctx); err != nil {
		return err
	}
	res, err := h.runAll(ctx)
	if res != nil {
		tbl := table(res.Runs, res.Servers, presencedEpoll, h.acceptConns)
		if werr := h.writeTable(tbl); werr != nil && err == nil {
			err = werr
		}
		fmt.Fprintf(stdout, "\n%s\n%s", h.header(res), tbl)
		fmt.Fprintf(stdout, "\nraw JSON: %s\n", h.resultsPath())
	}
	return err
}
