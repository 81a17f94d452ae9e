package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// envPin pins BenchmarkFanout's processes: "S,L" runs the benchmark
// process (the server) on CPU S and the load processes on CPU L, so that
// the server's CPU is measured without the listeners competing for it.
// The pinned benchmark runs with GOMAXPROCS 1 and unpins when it ends.
// Unset: nothing is pinned.
const envPin = "PRESENCED_BENCH_PIN"

// pinCPUs parses envPin: the server's CPU and the load processes'.
func pinCPUs(getenv func(string) string) (server, load int, ok bool) {
	s, l, found := strings.Cut(getenv(envPin), ",")
	if !found {
		return 0, 0, false
	}
	server, err1 := strconv.Atoi(s)
	load, err2 := strconv.Atoi(l)
	return server, load, err1 == nil && err2 == nil
}

// pinProcess binds every thread of this process to cpu (threads started
// later inherit it) and returns what gives them back the CPUs they had.
func pinProcess(cpu int) (restore func(), err error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, err
	}
	set.Set(cpu)
	if err := setAffinity(&set); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return func() { _ = setAffinity(&old) }, nil
}

// setAffinity binds every thread of this process to set.
func setAffinity(set *unix.CPUSet) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil {
			return err
		}
	}
	return nil
}
