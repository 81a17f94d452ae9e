// Stand-in for helper C only: the API of package redistest as
// /work/wt/REDISBUS.md and helper C's brief give it, so that the cluster
// tests compile before the lead lands the real package. The lead deletes
// this file at merge.

// Package redistest starts real redis-server processes for tests.
package redistest

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

type Server struct{}

func Start(t testing.TB, args ...string) *Server {
	t.Fatal("redistest: stand-in")
	return nil
}

func (s *Server) Addr() string                      { return "" }
func (s *Server) URL() string                       { return "" }
func (s *Server) Client(t testing.TB) *redis.Client { return nil }
func (s *Server) Kill()                             {}
func (s *Server) Restart()                          {}
func (s *Server) Stop()                             {}
func (s *Server) Cont()                             {}
func (s *Server) PID() int                          { return 0 }

type Cluster struct{}

func StartCluster(t testing.TB, masters int) *Cluster {
	t.Fatal("redistest: stand-in")
	return nil
}

func (c *Cluster) Addrs() []string { return nil }

type Sentinel struct{}

func StartSentinel(t testing.TB) *Sentinel {
	t.Fatal("redistest: stand-in")
	return nil
}

func (s *Sentinel) MasterName() string      { return "" }
func (s *Sentinel) SentinelAddrs() []string { return nil }
func (s *Sentinel) Master() *Server         { return nil }
func (s *Sentinel) Replica() *Server        { return nil }
