package bench

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/internal/wire"
)

// BenchmarkClusterDeath measures the time from a node's SIGKILL to the
// leave of its members on another node's client: three presenced
// processes (built with go build) on one redis-server; envDeathMembers
// (default 5) members on n1 and a listener on n2 in one room; n1 is
// killed, the time until the listener's room counts only itself is taken,
// then n1 is started again, and so on envDeathRuns times (default 3).
// Sub-benchmarks: keyspace events on (the default), off
// (-redis-no-keyspace-events), and on with -node-ttl 2s. Expected at the
// defaults (docs/cluster.md): node_ttl − ttl/3 … node_ttl + ttl/3 +
// leave_grace + tick = 8.4–11.8 s.
//
//	go test ./bench -run '^$' -bench ClusterDeath -benchtime 1x
func BenchmarkClusterDeath(b *testing.B) {
	runs := envInt(os.Getenv, envDeathRuns, 3)
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"events", nil},
		{"no-events", []string{"-redis-no-keyspace-events"}},
		{"events/node-ttl=2s", []string{"-node-ttl", "2s"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ds := runClusterDeath(b, envInt(os.Getenv, envDeathMembers, 5), runs, tc.flags...)
			slices.Sort(ds)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(len(ds)), "runs")
			b.ReportMetric(ds[0].Seconds(), "min-s")
			b.ReportMetric(ds[len(ds)/2].Seconds(), "median-s")
			b.ReportMetric(ds[len(ds)-1].Seconds(), "max-s")
		})
	}
}

const (
	envDeathRuns    = "PRESENCED_BENCH_DEATH_RUNS"    // BenchmarkClusterDeath: kills per sub-benchmark; default 3
	envDeathMembers = "PRESENCED_BENCH_DEATH_MEMBERS" // BenchmarkClusterDeath: members on the killed node; default 5
)

// runClusterDeath runs the kill experiment runs times and returns the
// death-to-leave times.
func runClusterDeath(tb testing.TB, members, runs int, flags ...string) []time.Duration {
	tb.Helper()
	const room = "death"
	rs := redistest.Start(tb)
	bin := buildPresenced(tb)
	args := append([]string{"-insecure", "-redis", rs.URL()}, flags...)
	var nodes []*presencedProc
	for i := range 3 {
		nodes = append(nodes, startPresenced(tb, bin, "n"+strconv.Itoa(i+1), args...))
	}
	for _, n := range nodes {
		eventually(tb, 30*time.Second, "3 nodes registered", func() bool { return n.metric(tb, "presenced_cluster_nodes") == 3 })
	}
	var count atomic.Int64 // the listener's room count
	l := dialMember(tb, nodes[1].addr, "listener")
	sync := l.joinAndRead(tb, room, &wire.State{Status: "online"}, func(p []byte, at time.Time) {
		if c, ok := intField(p, `"count":`); ok && strings.HasPrefix(string(p), `{"t":"diff"`) {
			count.Store(c)
		}
	})
	count.Store(int64(sync.Count))

	var ds []time.Duration
	for run := range runs {
		if run > 0 {
			nodes[0] = startPresenced(tb, bin, "n1", args...)
		}
		for j := range members {
			m := dialMember(tb, nodes[0].addr, "m"+strconv.Itoa(j))
			m.joinAndRead(tb, room, &wire.State{Status: "online"}, nil)
		}
		eventually(tb, 10*time.Second, "the listener sees n1's members", func() bool { return count.Load() == int64(members+1) })
		time.Sleep(time.Second)
		t0 := time.Now()
		nodes[0].kill()
		eventually(tb, time.Minute, "the listener sees n1's members leave", func() bool { return count.Load() == 1 })
		d := time.Since(t0)
		tb.Logf("run %d: SIGKILL of n1 to the leave of its %d members on n2's client: %v (deaths seen by n2, by event: %v, by probe: %v)",
			run+1, members, d.Round(time.Millisecond),
			nodes[1].metric(tb, `presenced_cluster_node_deaths_total{how="event"}`),
			nodes[1].metric(tb, `presenced_cluster_node_deaths_total{how="probe"}`))
		ds = append(ds, d)
	}
	return ds
}

// buildPresenced builds cmd/presenced into a temporary directory.
func buildPresenced(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "presenced")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/presenced/presenced/cmd/presenced").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build ./cmd/presenced: %v\n%s", err, out)
	}
	return bin
}

// presencedProc is a presenced process on free ports.
type presencedProc struct {
	cmd         *exec.Cmd
	addr, admin string
	done        chan struct{} // closed once reaped
}

var servingRE = regexp.MustCompile(`msg=serving addr=(\S+) admin_addr=(\S+)`)

// startPresenced starts bin as node name with args and waits for its
// "serving" log line. It is killed when tb ends.
func startPresenced(tb testing.TB, bin, name string, args ...string) *presencedProc {
	tb.Helper()
	cmd := exec.Command(bin, append([]string{"-node", name, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &presencedProc{cmd: cmd, done: make(chan struct{})}
	tb.Cleanup(p.kill)
	serving := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				serving <- m
				break
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(p.done)
	}()
	select {
	case m := <-serving:
		p.addr, p.admin = m[1], m[2]
	case <-p.done:
		tb.Fatalf("presenced %s exited at start", name)
	case <-time.After(30 * time.Second):
		tb.Fatalf("presenced %s: no serving line within 30s", name)
	}
	return p
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *presencedProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// metric is the value of the sample named exactly name (with its labels)
// on /metrics; 0 when absent.
func (p *presencedProc) metric(tb testing.TB, name string) float64 {
	tb.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.admin + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
