package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// masterName is the name the sentinel monitors the master under.
const masterName = "presenced"

// Sentinel is a master, its replica and one sentinel monitoring them
// (quorum 1, down-after-milliseconds 1000, failover-timeout 3000).
type Sentinel struct {
	master, replica, sentinel *Server // static
}

// StartSentinel starts a master, a replica (--replicaof) and one sentinel
// (redis-server <conf> --sentinel), and waits until the replica is in sync
// and the sentinel knows both.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	s := &Sentinel{master: Start(t)}
	s.replica = Start(t, "--replicaof", "127.0.0.1", portOf(s.master))
	err := eventually(10*time.Second, func() error {
		v, err := do(s.replica.Addr(), "info", "replication")
		if err != nil {
			return err
		}
		if str, _ := v.(string); !strings.Contains(str, "master_link_status:up") {
			return fmt.Errorf("replica link not up")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("redistest: replica of %s: %v\n%s", s.master.Addr(), err, s.replica.LogTail())
	}
	s.sentinel = newServer(t, func(srv *Server, port int) []string {
		conf := filepath.Join(srv.dir, "sentinel.conf")
		text := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %s 1
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 3000
`, port, srv.dir, srv.logPathLocked(), masterName, portOf(s.master), masterName, masterName)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Errorf("redistest: sentinel conf: %v", err)
		}
		return []string{conf, "--sentinel"}
	}, 0)
	err = eventually(15*time.Second, func() error {
		v, err := do(s.sentinel.Addr(), "sentinel", "replicas", masterName)
		if err != nil {
			return err
		}
		if rs, _ := v.([]any); len(rs) == 0 {
			return fmt.Errorf("sentinel has not discovered the replica yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("redistest: sentinel: %v\n%s", err, s.sentinel.LogTail())
	}
	return s
}

// MasterName is the name the sentinel knows the master by.
func (s *Sentinel) MasterName() string { return masterName }

// SentinelAddrs are the sentinels' addresses (one).
func (s *Sentinel) SentinelAddrs() []string { return []string{s.sentinel.Addr()} }

// Master is the initial master.
func (s *Sentinel) Master() *Server { return s.master }

// Replica is the initial replica.
func (s *Sentinel) Replica() *Server { return s.replica }

// SentinelServer is the sentinel process.
func (s *Sentinel) SentinelServer() *Server { return s.sentinel }

// KillMaster SIGKILLs the initial master (the sentinel fails over to the
// replica after about a second).
func (s *Sentinel) KillMaster() { s.master.Kill() }

func portOf(s *Server) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strconv.Itoa(s.port)
}
