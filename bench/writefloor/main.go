// Command writefloor measures the floor of a fan-out's CPU: what writing
// the same number of equal frames to the same number of loopback sockets,
// at the same rate, costs with nothing else, no WebSocket, no presence.
//
// It starts a reader (itself, run again with -role reader) that accepts
// -conns connections and reads everything, one goroutine per connection,
// pinned to -reader-cpu; the writer, pinned to -cpu, opens the
// connections and every -tick writes one -size byte frame to each with a
// non-blocking write(2) (a raw syscall, as the server's epoll engine
// makes it), like the server's fan-out of one diff per tick.
// After -warmup it measures its own CPU (getrusage) for -duration and
// prints one line:
//
//	writefloor conns=5000 size=200 tick=100ms writes=500000 eagain=0 cpu=3.1s us/write=6.2 writes/cpu-s=161000
//
// Usage (compare with BenchmarkFanout's deliveries per server CPU-second):
//
//	go run ./bench/writefloor -conns 5000 -size 200
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "writefloor:", err)
		os.Exit(1)
	}
}

type options struct {
	role      string
	conns     int
	size      int
	tick      time.Duration
	warmup    time.Duration
	duration  time.Duration
	cpu       int
	readerCPU int
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("writefloor", flag.ContinueOnError)
	fs.StringVar(&o.role, "role", "writer", "writer, or reader (started by the writer)")
	fs.IntVar(&o.conns, "conns", 5000, "loopback connections (the fan-out's listeners)")
	fs.IntVar(&o.size, "size", 200, "bytes of each frame (the fan-out's diff frame)")
	fs.DurationVar(&o.tick, "tick", 100*time.Millisecond, "one frame to every connection this often")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "writing before the measurement")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of the measurement")
	fs.IntVar(&o.cpu, "cpu", 0, "CPU the writer is pinned to (-1: not pinned)")
	fs.IntVar(&o.readerCPU, "reader-cpu", 1, "CPU the reader is pinned to (-1: not pinned)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.role == "reader" {
		if err := pin(o.readerCPU); err != nil {
			return err
		}
		return reader(o.conns, os.Stdin, stdout)
	}
	if err := pin(o.cpu); err != nil {
		return err
	}
	return writer(ctx, o, stdout)
}

// pin binds every thread of the process to cpu; threads started later
// inherit it.
func pin(cpu int) error {
	if cpu < 0 {
		return nil
	}
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("pin to CPU %d: %w", cpu, err)
		}
	}
	return nil
}

// reader accepts n connections on a loopback port it prints, reads
// everything until stdin closes, then exits.
func reader(n int, stdin io.Reader, stdout io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Fprintln(stdout, ln.Addr())
	go func() {
		for range n {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	_, err = io.Copy(io.Discard, stdin)
	return err
}

func writer(ctx context.Context, o options, stdout io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	rd := exec.Command(exe, "-role", "reader", "-conns", strconv.Itoa(o.conns), "-reader-cpu", strconv.Itoa(o.readerCPU))
	rd.Stderr = os.Stderr
	in, err := rd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := rd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := rd.Start(); err != nil {
		return err
	}
	defer rd.Wait()
	defer in.Close()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reader: %w", err)
	}
	addr, err := net.ResolveTCPAddr("tcp", strings.TrimSpace(line))
	if err != nil {
		return err
	}
	fds := make([]int, 0, o.conns)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for range o.conns {
		fd, err := dial(addr)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	frame := make([]byte, o.size)
	frame[0], frame[1] = 0x81, 126 // a text frame header; the content does not matter
	var writes, eagain int
	tick := func() error {
		for _, fd := range fds {
			switch _, err := rawWrite(fd, frame); {
			case err == nil:
				writes++
			case errors.Is(err, unix.EAGAIN):
				eagain++
			default:
				return err
			}
		}
		return nil
	}
	var cpu0 time.Duration
	var t0 time.Time
	start := time.Now()
	for next := start; ; next = next.Add(o.tick) {
		if t0.IsZero() && time.Since(start) >= o.warmup {
			t0, cpu0, writes, eagain = time.Now(), cpuTime(), 0, 0
		}
		if !t0.IsZero() && time.Since(t0) >= o.duration {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(next)):
		}
		if err := tick(); err != nil {
			return err
		}
	}
	cpu := cpuTime() - cpu0
	fmt.Fprintf(stdout, "writefloor conns=%d size=%d tick=%v writes=%d eagain=%d cpu=%.3fs us/write=%.2f writes/cpu-s=%.0f\n",
		o.conns, o.size, o.tick, writes, eagain, cpu.Seconds(),
		float64(cpu.Microseconds())/float64(max(writes, 1)), float64(writes)/cpu.Seconds())
	return nil
}

// rawWrite is write(2) without the scheduler's syscall bookkeeping, as the
// server's epoll engine makes it (the socket never blocks).
func rawWrite(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// dial opens a non-blocking TCP_NODELAY socket to addr, like the sockets
// the server accepts.
func dial(addr *net.TCPAddr) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	sa := &unix.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To4())
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
