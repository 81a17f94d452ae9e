package redisbus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// ClientOptions say how to reach Redis: one server, a Cluster or a
// Sentinel-monitored master.
type ClientOptions struct {
	// Addrs are host:port addresses: the server, the Cluster seeds, or the
	// sentinels (Sentinel). Required.
	Addrs []string
	// Username and Password authenticate (ACL user, or password only).
	Username, Password string
	// DB is the database number; 0 in Cluster.
	DB int
	// TLS, when set, dials with TLS (rediss://).
	TLS *tls.Config
	// Cluster: Addrs are seeds of a Redis Cluster.
	Cluster bool
	// MasterName selects Sentinel: the name the sentinels know the master by.
	MasterName string
	// SentinelPassword authenticates to the sentinels (Sentinel only).
	SentinelPassword string
}

// ParseURL parses redis://[user:pass@]host:port[,host:port...][/db] and
// rediss:// (TLS). cluster makes the addresses Cluster seeds; master (a
// Sentinel master name) makes them sentinels. Several addresses need one
// of the two. A missing port is 6379.
func ParseURL(rawURL string, cluster bool, master string) (ClientOptions, error) {
	var o ClientOptions
	if cluster && master != "" {
		return o, errors.New("redisbus: Redis Cluster and Sentinel are exclusive")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return o, fmt.Errorf("redisbus: redis URL: %w", err)
	}
	switch u.Scheme {
	case "redis":
	case "rediss":
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	default:
		return o, fmt.Errorf("redisbus: redis URL %q: scheme must be redis:// or rediss://", rawURL)
	}
	if u.Opaque != "" || u.Host == "" {
		return o, fmt.Errorf("redisbus: redis URL %q: no host (want redis://host:port)", rawURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return o, fmt.Errorf("redisbus: redis URL %q: query and fragment are not supported", rawURL)
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	for _, h := range strings.Split(u.Host, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			if !strings.Contains(h, ":") || strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
				host, port = strings.Trim(h, "[]"), "6379"
			} else {
				return o, fmt.Errorf("redisbus: redis URL %q: address %q: %w", rawURL, h, err)
			}
		}
		if host == "" {
			return o, fmt.Errorf("redisbus: redis URL %q: address %q has no host", rawURL, h)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return o, fmt.Errorf("redisbus: redis URL %q: bad port %q", rawURL, port)
		}
		o.Addrs = append(o.Addrs, net.JoinHostPort(host, port))
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return o, fmt.Errorf("redisbus: redis URL %q: database %q is not a number >= 0", rawURL, db)
		}
		o.DB = n
	}
	if o.TLS != nil && !cluster && master == "" {
		host, _, _ := net.SplitHostPort(o.Addrs[0])
		o.TLS.ServerName = host
	}
	o.Cluster, o.MasterName = cluster, master
	return o, o.validate()
}

func (o ClientOptions) validate() error {
	switch {
	case len(o.Addrs) == 0:
		return errors.New("redisbus: no Redis address")
	case o.Cluster && o.MasterName != "":
		return errors.New("redisbus: Redis Cluster and Sentinel are exclusive")
	case o.Cluster && o.DB != 0:
		return fmt.Errorf("redisbus: Redis Cluster has database 0 only, not %d", o.DB)
	case len(o.Addrs) > 1 && !o.Cluster && o.MasterName == "":
		return fmt.Errorf("redisbus: %d Redis addresses need Cluster or a Sentinel master name", len(o.Addrs))
	}
	return nil
}

func (o ClientOptions) universal(name string) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:            o.Addrs,
		ClientName:       name,
		DB:               o.DB,
		Username:         o.Username,
		Password:         o.Password,
		SentinelPassword: o.SentinelPassword,
		TLSConfig:        o.TLS,
		MasterName:       o.MasterName,
		IsClusterMode:    o.Cluster,
		// No maintenance notifications (Redis Enterprise hitless
		// upgrades): they start background goroutines per node client.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// Client names, visible in CLIENT LIST.
const (
	liveClientName = "presenced-live"
	dataClientName = "presenced-data"
)

// newClients builds the two clients of the bus (no I/O). live runs the
// liveness script only: short timeouts derived from the lease ttl and no
// retries, so a slow Redis cannot stretch a lease; always on masters.
// data serves rooms, pipelines and Pub/Sub, with retries.
func newClients(o ClientOptions, ttl time.Duration) (live, data redis.UniversalClient, err error) {
	if err := o.validate(); err != nil {
		return nil, nil, err
	}
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("redisbus: node ttl %v must be > 0", ttl)
	}
	lo := o.universal(liveClientName)
	lo.ReadTimeout = ttl / 6
	lo.WriteTimeout = ttl / 6
	lo.DialTimeout = ttl / 3
	lo.MaxRetries = -1
	lo.ContextTimeoutEnabled = true
	lo.PoolSize = 4
	lo.ReadOnly, lo.RouteByLatency, lo.RouteRandomly = false, false, false
	// The liveness script's replies are small: small buffers, no pipelines.
	lo.ReadBufferSize, lo.WriteBufferSize, lo.PipelinePoolSize = 4<<10, 4<<10, -1

	do := o.universal(dataClientName)
	do.ReadTimeout = time.Second
	do.WriteTimeout = time.Second
	do.ContextTimeoutEnabled = true
	// Buffers are per connection, resident for its life (go-redis's
	// defaults, 32 KiB and 128 KiB for its pipeline pool, cost a node
	// about 1 MB): the pipelines are the writer's and the loads', whose
	// replies are small; bufio flushes larger writes as it goes.
	do.ReadBufferSize, do.WriteBufferSize = 8<<10, 8<<10
	do.PipelineReadBufferSize, do.PipelineWriteBufferSize, do.PipelinePoolSize = 8<<10, 16<<10, 2
	return redis.NewUniversalClient(lo), redis.NewUniversalClient(do), nil
}
