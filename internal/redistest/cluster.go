package redistest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	nodes []*Server // static
}

// StartCluster starts masters redis-server processes with
// --cluster-enabled yes, joins them with redis-cli --cluster create
// (no replicas) and waits for cluster_state:ok on every node.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: a cluster needs at least 3 masters, got %d", masters)
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redistest: redis-cli not on PATH (make deps installs redis-tools): %v", err)
	}
	c := &Cluster{}
	for i := 0; i < masters; i++ {
		c.nodes = append(c.nodes, newServer(t, func(s *Server, port int) []string {
			return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
				"--save", "", "--appendonly", "no", "--dir", s.dir,
				"--logfile", s.logPathLocked(), "--daemonize", "no",
				"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "2000"}
		}, 10000))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "redis-cli", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s\n%s", strings.Join(args, " "), err, out.String(), c.nodes[0].LogTail())
	}
	for i, n := range c.nodes {
		err := eventually(20*time.Second, func() error {
			v, err := do(n.Addr(), "cluster", "info")
			if err != nil {
				return err
			}
			if s, _ := v.(string); !strings.Contains(s, "cluster_state:ok") {
				return fmt.Errorf("not ok yet: %.80q", s)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("redistest: cluster node %d (%s): %v\n%s", i, n.Addr(), err, n.LogTail())
		}
	}
	return c
}

// Addrs are the masters' "127.0.0.1:PORT" addresses.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		a[i] = n.Addr()
	}
	return a
}

// Node is the i-th master.
func (c *Cluster) Node(i int) *Server { return c.nodes[i] }
