// Stand-in for helper C only: the public API of package redisbus as
// /work/wt/REDISBUS.md gives it, so that internal/server and the cluster
// tests compile before helpers A and B land the real code. The lead deletes
// this file at merge.

package redisbus

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/presence"
)

const (
	DefaultPrefix  = "presenced:"
	DefaultNodeTTL = 5 * time.Second
)

type Config struct {
	Redis            ClientOptions
	Node             string
	Prefix           string
	NodeTTL          time.Duration
	NoKeyspaceEvents bool
	WatchTimeout     time.Duration
	Addr             string
	Logger           *slog.Logger
	Registerer       prometheus.Registerer
}

type Hub interface {
	Apply(room, node string, hs []presence.Holding, full bool)
	Loaded(room string)
	NodeDown(node string)
	Republish(room string)
}

type Bus struct {
	cfg  Config
	left chan struct{}
}

var _ presence.Bus = (*Bus)(nil)

func New(cfg Config) (*Bus, error) {
	if len(cfg.Redis.Addrs) == 0 || cfg.Node == "" {
		return nil, errors.New("redisbus: stand-in: Addrs and Node required")
	}
	return &Bus{cfg: cfg, left: make(chan struct{})}, nil
}

func (b *Bus) Run(ctx context.Context, hub Hub) error {
	select {
	case <-ctx.Done():
	case <-b.left:
	}
	return nil
}

func (b *Bus) Up() bool                        { return false }
func (b *Bus) Leave(ctx context.Context) error { close(b.left); return nil }
func (b *Bus) ID() string                      { return b.cfg.Node + "#0000000000000000" }

func (b *Bus) Publish(room string, hs []presence.Holding, full bool) {}
func (b *Bus) Watch(room string)                                     {}
func (b *Bus) Unwatch(room string)                                   {}
