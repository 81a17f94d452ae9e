package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// With -procs P the parent runs no connection itself: it re-executes its own
// binary P times with -child=<n> first and the same flags. A child runs
// worker n and talks to the parent in lines:
//
//	parent → child (stdin)   "go <t0 unix ns>": start the scenario at t0.
//	                         End of input: stop now and report (the parent
//	                         is stopping, or gone).
//	child → parent (stdout)  one JSON report a line: "progress" every
//	                         -progress, "ready" once, "final" last.
//
// Children die with the parent (Pdeathsig SIGKILL), so killing the parent
// kills them. With -procs 1 the worker runs in the parent and its reports
// travel on a channel.

// report is what a worker tells the parent.
type report struct {
	Type string `json:"type"` // "progress", "ready", "final"; "exit": a child ended without a final
	Proc int    `json:"proc"`
	counters
	Hist          histData    `json:"hist,omitempty"`     // progress: since the previous one; final: the whole run
	SendLag       histData    `json:"send_lag,omitempty"` // final: the changers' send lag
	Stale         int64       `json:"stale,omitempty"`
	FirstDialNs   int64       `json:"first_dial_ns,omitempty"`
	LastConnectNs int64       `json:"last_connect_ns,omitempty"`
	FirstLossNs   int64       `json:"first_loss_ns,omitempty"`
	ConvergedNs   int64       `json:"converged_ns,omitempty"` // -1: lost connections not all back and true
	Cuts          []cutReport `json:"cuts,omitempty"`
	Err           string      `json:"err,omitempty"`
}

// cutReport is one cut of the leave scenario as one process saw it.
type cutReport struct {
	CutNs  int64 `json:"cut_ns,omitempty"`  // when its owner cut it
	SeenNs int64 `json:"seen_ns,omitempty"` // the last of this process's observers saw it leave
	SeenN  int64 `json:"seen_n,omitempty"`  // how many of them did
}

// runChild is the main function of a child: worker cfg.child, reports as
// JSON lines on stdout, commands from stdin. The goroutine reading stdin
// is not joined: it returns when the parent closes stdin or the process
// exits.
func runChild(ctx context.Context, cfg *config, stdin io.Reader, stdout, stderr io.Writer) error {
	w, err := newWorker(cfg, cfg.child, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := make(chan int64, 1)
	go func() {
		defer cancel()
		in := bufio.NewScanner(stdin)
		for in.Scan() {
			if arg, ok := strings.CutPrefix(in.Text(), "go "); ok {
				if t0, err := strconv.ParseInt(arg, 10, 64); err == nil {
					start <- t0
				}
			}
		}
	}()
	enc := json.NewEncoder(stdout)
	var encErr error
	w.run(ctx, start, func(r report) {
		if err := enc.Encode(r); err != nil && encErr == nil {
			encErr = err
			cancel()
		}
	})
	return encErr
}

// proc is one worker as the parent sees it.
type proc struct {
	start func(t0 int64) // start the scenario at t0
	stop  func()         // stop now; safe to call more than once
}

// startProcs starts the workers: in this process with -procs 1, else
// children. Reports arrive on reports; wait returns once every worker has
// ended and reported.
func startProcs(ctx context.Context, cfg *config, reports chan<- report, stderr io.Writer) (procs []proc, wait func(), err error) {
	var wg sync.WaitGroup
	if cfg.procs == 1 {
		w, err := newWorker(cfg, 0, stderr)
		if err != nil {
			return nil, nil, err
		}
		start := make(chan int64, 1)
		ctx, cancel := context.WithCancel(ctx)
		wg.Go(func() {
			w.run(ctx, start, func(r report) { reports <- r })
		})
		p := proc{start: func(t0 int64) { start <- t0 }, stop: cancel}
		return []proc{p}, func() { wg.Wait(); cancel() }, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	for i := range cfg.procs {
		cmd := exec.Command(exe, append([]string{"-child=" + strconv.Itoa(i)}, cfg.args...)...)
		cmd.Stderr = stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			for _, p := range procs {
				p.stop()
			}
			wg.Wait()
			return nil, nil, fmt.Errorf("child %d: %w", i, err)
		}
		var once sync.Once
		var mu sync.Mutex // stdin writes
		procs = append(procs, proc{
			start: func(t0 int64) {
				mu.Lock()
				defer mu.Unlock()
				fmt.Fprintf(stdin, "go %d\n", t0)
			},
			stop: func() { once.Do(func() { stdin.Close() }) },
		})
		wg.Go(func() {
			final := false
			in := bufio.NewScanner(stdout)
			in.Buffer(make([]byte, 64<<10), 16<<20)
			for in.Scan() {
				var r report
				if err := json.Unmarshal(in.Bytes(), &r); err != nil {
					fmt.Fprintf(stderr, "presence-load: child %d: %v\n", i, err)
					continue
				}
				r.Proc = i
				final = final || r.Type == "final"
				reports <- r
			}
			io.Copy(io.Discard, stdout)
			err := cmd.Wait()
			if !final {
				reports <- report{Type: "exit", Proc: i, Err: fmt.Sprintf("child %d ended without a summary: %v", i, err)}
			}
		})
	}
	return procs, func() {
		for _, p := range procs {
			p.stop()
		}
		wg.Wait()
	}, nil
}
