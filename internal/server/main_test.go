package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/presenced/presenced/internal/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// netpoll keeps its poller goroutines for the life of the process.
		goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
		// go-redis redials a refused Redis in a goroutine that sleeps 1 s
		// between tries and ends at its next try once the client is closed:
		// a test that stops Redis under a node may end within that second.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	)
}

// node is a server started by startServer, with what its test observes.
type node struct {
	*server.Server
	reg  *prometheus.Registry
	logs *logRecorder
}

// startServer starts a whole server on 127.0.0.1:0 and stops it when the
// test ends. A netpoll engine that is not built yet skips the test.
func startServer(t *testing.T, cfg server.Config) *node {
	t.Helper()
	n, _ := startServerStop(t, cfg)
	return n
}

// startServerStop is startServer that also returns stop, which cancels the
// server's Run context (a drain: bye, then close 1001) and waits for Run to
// return, returning its error. The test's cleanup calls stop too; later
// calls return the first call's error.
func startServerStop(t *testing.T, cfg server.Config) (*node, func() error) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s, err := server.New(cfg)
	if err != nil {
		if strings.Contains(err.Error(), "not built yet") {
			t.Skipf("engine %q: %v", cfg.Engine, err)
		}
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Run did not return 10 s after cancel")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &node{Server: s, reg: cfg.Registry, logs: logs}, stop
}

// eventually calls fn until it returns nil or timeout passes, then fails
// with fn's last error.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metric returns the value of the counter or gauge name whose labels
// include want, or -1 when there is none.
func metric(t *testing.T, reg prometheus.Gatherer, name string, want ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, want) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				}
			}
		}
	}
	return -1
}

// sampleCount returns the number of observations of the histogram name,
// or -1 when there is none.
func sampleCount(t *testing.T, reg prometheus.Gatherer, name string) int64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				if h := m.GetHistogram(); h != nil {
					return int64(h.GetSampleCount())
				}
			}
		}
	}
	return -1
}

// hasLabels: want is name, value pairs.
func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// httpGet fetches url without keeping a connection (so no goroutine
// outlives the test) and returns the status and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// logRecorder is a slog.Handler keeping every record, for assertions.
type logRecorder struct {
	mu      sync.Mutex
	records []map[string]string // guarded by mu: "msg" and each attribute
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{"msg": rec.Message}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.records = append(r.records, m)
	r.mu.Unlock()
	return nil
}

// find returns the first record holding every key, value pair of kv.
func (r *logRecorder) find(kv ...string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
next:
	for _, rec := range r.records {
		for i := 0; i+1 < len(kv); i += 2 {
			if rec[kv[i]] != kv[i+1] {
				continue next
			}
		}
		return rec
	}
	return nil
}
