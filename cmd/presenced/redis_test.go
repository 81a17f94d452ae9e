package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redisbus"
)

// TestRedisFlags: -redis and the flags that go with it reach
// server.Config.Redis, from the command line or the environment; without
// -redis the node is alone (Redis nil).
func TestRedisFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		env   env
		check func(t *testing.T, o options)
	}{
		{
			name: "no redis: a single node",
			check: func(t *testing.T, o options) {
				if o.server.Redis != nil || o.server.ReadyNeedsRedis {
					t.Errorf("Redis %+v, ReadyNeedsRedis %v: want nil, false", o.server.Redis, o.server.ReadyNeedsRedis)
				}
			},
		},
		{
			name: "defaults",
			args: []string{"-redis", "redis://127.0.0.1:6390"},
			check: func(t *testing.T, o options) {
				r := o.server.Redis
				if r == nil {
					t.Fatal("Redis nil")
				}
				if r.Prefix != redisbus.DefaultPrefix || r.NodeTTL != redisbus.DefaultNodeTTL || r.NoKeyspaceEvents ||
					o.server.ReadyNeedsRedis || r.Redis.Cluster || r.Redis.MasterName != "" ||
					len(r.Redis.Addrs) != 1 || r.Redis.Addrs[0] != "127.0.0.1:6390" {
					t.Errorf("Redis %+v, ReadyNeedsRedis %v", r, o.server.ReadyNeedsRedis)
				}
			},
		},
		{
			name: "every flag",
			args: []string{"-redis", "redis://a:1,b:2", "-redis-cluster", "-redis-prefix", "app1:",
				"-node-ttl", "1500", "-redis-no-keyspace-events", "-ready-needs-redis", "-node", "eu-1"},
			check: func(t *testing.T, o options) {
				r := o.server.Redis
				if r.Prefix != "app1:" || r.NodeTTL != 1500*time.Millisecond || !r.NoKeyspaceEvents ||
					!o.server.ReadyNeedsRedis || !r.Redis.Cluster || len(r.Redis.Addrs) != 2 ||
					o.server.Presence.Node != "eu-1" {
					t.Errorf("Redis %+v, ReadyNeedsRedis %v, node %q", r, o.server.ReadyNeedsRedis, o.server.Presence.Node)
				}
			},
		},
		{
			name: "environment",
			env: env{"PRESENCED_REDIS": "redis://s1:26379,s2:26379", "PRESENCED_REDIS_SENTINEL_MASTER": "mymaster",
				"PRESENCED_REDIS_PREFIX": "x:", "PRESENCED_NODE_TTL": "2s", "PRESENCED_REDIS_NO_KEYSPACE_EVENTS": "true",
				"PRESENCED_READY_NEEDS_REDIS": "1"},
			check: func(t *testing.T, o options) {
				r := o.server.Redis
				if r == nil || r.Redis.MasterName != "mymaster" || len(r.Redis.Addrs) != 2 || r.Prefix != "x:" ||
					r.NodeTTL != 2*time.Second || !r.NoKeyspaceEvents || !o.server.ReadyNeedsRedis {
					t.Errorf("Redis %+v, ReadyNeedsRedis %v", r, o.server.ReadyNeedsRedis)
				}
			},
		},
		{
			name: "the floor of -node-ttl",
			args: []string{"-redis", "redis://127.0.0.1:6390", "-node-ttl", minNodeTTL.String()},
			check: func(t *testing.T, o options) {
				if o.server.Redis.NodeTTL != minNodeTTL {
					t.Errorf("NodeTTL %v, want %v", o.server.Redis.NodeTTL, minNodeTTL)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(append([]string{"-insecure"}, tc.args...), tc.env.lookup, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

// TestBadRedisFlags: bad Redis settings are usage errors (exit 2) that
// name the flag, and never show the password of -redis.
func TestBadRedisFlags(t *testing.T) {
	const url = "redis://127.0.0.1:6390"
	cases := []struct {
		name string
		args []string
		env  env
		want []string
	}{
		{"cluster without redis", []string{"-redis-cluster"}, nil, []string{"-redis-cluster: needs -redis"}},
		{"ttl and prefix without redis", []string{"-node-ttl", "2s", "-redis-prefix", "p:"}, nil, []string{"-node-ttl and -redis-prefix: needs -redis"}},
		{"ready without redis, from the environment", nil, env{"PRESENCED_READY_NEEDS_REDIS": "true"}, []string{"-ready-needs-redis: needs -redis"}},
		{"sentinel master without redis", []string{"-redis-sentinel-master", "m"}, nil, []string{"-redis-sentinel-master: needs -redis"}},
		{"cluster and sentinel", []string{"-redis", url, "-redis-cluster", "-redis-sentinel-master", "m"}, nil, []string{"-redis-cluster and -redis-sentinel-master"}},
		{"prefix with a hash tag", []string{"-redis", url, "-redis-prefix", "a{b}:"}, nil, []string{`-redis-prefix "a{b}:"`, "{ or }"}},
		{"empty prefix", []string{"-redis", url, "-redis-prefix", ""}, nil, []string{"-redis-prefix: must not be empty"}},
		{"ttl below the floor", []string{"-redis", url, "-node-ttl", "100ms"}, nil, []string{"-node-ttl 100ms: must be at least 500ms"}},
		{"ttl not a duration", []string{"-redis", url, "-node-ttl", "soon"}, nil, []string{"-node-ttl", "want a Go duration"}},
		{"cluster not a bool", []string{"-redis", url, "-redis-cluster=maybe"}, nil, []string{"-redis-cluster"}},
		{"not a redis URL", []string{"-redis", "http://127.0.0.1:6390"}, nil, []string{"-redis: "}},
		{"no host", []string{"-redis", "redis://"}, nil, []string{"-redis: "}},
		{"environment", nil, env{"PRESENCED_REDIS": "ftp://x:1"}, []string{"-redis: "}},
		{"cluster with a db", []string{"-redis", "redis://a:1,b:2/3", "-redis-cluster"}, nil, []string{"-redis: ", "database"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(append([]string{"-insecure"}, tc.args...), tc.env.lookup, io.Discard)
			checkUsageError(t, err, tc.want...)
		})
	}

	// A bad URL's message never shows its password.
	for _, u := range []string{"redis://user:hunter2-secret@127.0.0.1:notaport/x/y", "http://user:hunter2-secret@h:1",
		"redis://:hunter2-secret@%zz"} {
		_, err := parseFlags([]string{"-insecure", "-redis", u}, env{}.lookup, io.Discard)
		if err == nil {
			continue // the parser took it; nothing to show
		}
		if strings.Contains(err.Error(), "hunter2-secret") {
			t.Errorf("-redis %s: the error shows the password: %v", u, err)
		}
	}
}

func TestRedact(t *testing.T) {
	cases := []struct{ msg, url, want string }{
		{"bad redis://u:pw@h:1/x", "redis://u:pw@h:1/x", "bad redis://u:xxxxx@h:1/x"},
		{"bad redis://u:pw@h:x", "redis://u:pw@h:x", "bad redis://xxxxx@h:x"},
		{"no password", "redis://h:1", "no password"},
		{"bad redis://u:p w@%zz", "redis://u:p w@%zz", "bad redis://xxxxx@%zz"},
	}
	for _, tc := range cases {
		if got := redact(tc.msg, tc.url); got != tc.want {
			t.Errorf("redact(%q, %q) = %q, want %q", tc.msg, tc.url, got, tc.want)
		}
	}
}
