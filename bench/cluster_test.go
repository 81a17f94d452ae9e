package bench

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/redistest"
	"github.com/presenced/presenced/internal/server"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/presence"
)

// The cluster benchmarks (issue T3) run several internal/server nodes in
// this process sharing one real redis-server (internal/redistest), or, to
// SIGKILL one, presenced processes (cluster_death_test.go). Their clients
// are wsClients (presence_load_test.go) in this process, except where
// thousands of connections are needed (load processes). Redis's side is
// read with INFO: commandstats (calls per command, those made by scripts
// included) and memory.

// benchNodeConfig is the presence config of the cluster nodes: the
// defaults (tick 100 ms, leave grace 5 s), insecure hellos, and a rate
// limit high enough for the benchmark's changers.
func benchNodeConfig() presence.Config {
	return presence.Config{Insecure: true, Rate: 1000, Burst: 1000}
}

// startCluster starts n nodes n1..nN sharing r, with pc (its Node
// replaced), and waits until each sees all n.
func startCluster(tb testing.TB, r *redistest.Server, n int, pc presence.Config) []*presenceServer {
	tb.Helper()
	var nodes []*presenceServer
	for i := range n {
		c := pc
		c.Node = "n" + strconv.Itoa(i+1)
		nodes = append(nodes, startPresenceServer(tb, server.Config{
			Presence: c,
			Redis:    &redisbus.Config{Redis: redisbus.ClientOptions{Addrs: []string{r.Addr()}}},
		}))
	}
	for _, s := range nodes {
		eventually(tb, 30*time.Second, fmt.Sprintf("%d nodes registered", n), func() bool {
			return s.value(tb, "presenced_cluster_nodes") == float64(n) && s.value(tb, "presenced_redis_up") == 1
		})
	}
	return nodes
}

// redisInfo is the parsed output of INFO section: "key:value" lines.
func redisInfo(tb testing.TB, rdb *redis.Client, section string) map[string]string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := rdb.Info(ctx, section).Result()
	if err != nil {
		tb.Fatalf("INFO %s: %v", section, err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// cmdCalls is INFO commandstats: calls by command (lower case, "evalsha",
// "publish", ...) and their total under "".
type cmdCalls map[string]int64

func commandCalls(tb testing.TB, rdb *redis.Client) cmdCalls {
	tb.Helper()
	c := cmdCalls{}
	for k, v := range redisInfo(tb, rdb, "commandstats") {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(v, ",") // calls=N,usec=...
		n, err := strconv.ParseInt(strings.TrimPrefix(calls, "calls="), 10, 64)
		if err != nil {
			tb.Fatalf("commandstats %s:%s: %v", k, v, err)
		}
		c[name] = n
		c[""] += n
	}
	return c
}

// sub is c - o, command by command.
func (c cmdCalls) sub(o cmdCalls) cmdCalls {
	d := cmdCalls{}
	for k, v := range c {
		if v != o[k] {
			d[k] = v - o[k]
		}
	}
	return d
}

// String lists the non-zero calls, sorted by name ("" is the total).
func (c cmdCalls) String() string {
	var b strings.Builder
	for _, k := range sortedKeys(c) {
		if k != "" {
			fmt.Fprintf(&b, "%s=%d ", k, c[k])
		}
	}
	fmt.Fprintf(&b, "total=%d", c[""])
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// usedMemory is INFO memory's used_memory, bytes.
func usedMemory(tb testing.TB, rdb *redis.Client) int64 {
	tb.Helper()
	v, err := strconv.ParseInt(redisInfo(tb, rdb, "memory")["used_memory"], 10, 64)
	if err != nil {
		tb.Fatalf("used_memory: %v", err)
	}
	return v
}

// member is a wsClient in this process, hello'd as user, whose messages
// after the join go to onMsg (called on its reader goroutine, with the
// receipt time; pings are answered first). Closed when tb ends.
type member struct {
	*wsClient
	user string
}

func dialMember(tb testing.TB, addr, user string) *member {
	tb.Helper()
	m, err := openMember(tb, addr, user)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// openMember is dialMember for other goroutines than the test's: it
// returns the error.
func openMember(tb testing.TB, addr, user string) (*member, error) {
	c, err := dialWS(addr, netip.Addr{}, sockOpts{})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tb.Cleanup(func() { c.conn.Close() })
	if err := c.hello(user); err != nil {
		return nil, err
	}
	return &member{wsClient: c, user: user}, nil
}

// joinAndRead joins room with st, then reads on a goroutine until the
// connection ends, handing every data message but pings to onMsg. It
// returns the sync.
func (m *member) joinAndRead(tb testing.TB, room string, st *wire.State, onMsg func(p []byte, at time.Time)) wire.Event {
	tb.Helper()
	sync, err := m.joinRead(room, st, onMsg)
	if err != nil {
		tb.Fatal(err)
	}
	return sync
}

// joinRead is joinAndRead for other goroutines than the test's.
func (m *member) joinRead(room string, st *wire.State, onMsg func(p []byte, at time.Time)) (wire.Event, error) {
	sync, err := m.join(room, st)
	if err == nil {
		go m.readLoop(onMsg)
	}
	return sync, err
}

func (m *member) readLoop(onMsg func(p []byte, at time.Time)) {
	for {
		p, err := m.read()
		at := time.Now()
		if err != nil {
			return
		}
		if ts, ok := pingTS(p); ok {
			m.pong(ts)
			continue
		}
		if onMsg != nil {
			onMsg(p, at)
		}
	}
}

// latencies collects durations from several goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// ms is quantile q (1: the max) in milliseconds; -1 when empty.
func (l *latencies) ms(q float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return -1
	}
	s := slices.Sorted(slices.Values(l.d))
	return float64(quantile(s, q)) / float64(time.Millisecond)
}

func (l *latencies) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}
