package server

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/presence"
)

// newHub builds the presence hub from cfg: token verification, framing,
// logger, metrics and, with Config.Redis, the bus to the other nodes.
func newHub(cfg Config, m *metrics, bus *redisbus.Bus) (*presence.Hub, error) {
	pc := cfg.Presence
	if pc.Auth == nil && (cfg.JWT.HS256Secret != nil || cfg.JWT.PublicKeyPEM != nil) {
		v, err := auth.New(cfg.JWT)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		pc.Auth = jwtAuth{v: v}
	}
	if pc.Auth == nil && !pc.Insecure {
		return nil, errNoAuth
	}
	pc.MaxMessage = cfg.MaxMessage // announced in welcome: the limit the poller enforces
	if pc.SyncBudget == 0 {
		pc.SyncBudget = syncBudget(cfg.Outbox)
	}
	// A sync is offered (poller.Conn.Offer): it must fit an empty outbox
	// with its frame header and the reply reserve kept free.
	if room := syncRoom(cfg.Outbox); pc.SyncBudget < 0 || pc.SyncBudget > room {
		return nil, fmt.Errorf("server: Presence.SyncBudget %d does not fit the outbox (%d bytes) beside its frame header and the reply reserve (at most %d): syncs could never be sent", pc.SyncBudget, cfg.Outbox, room)
	}
	pc.Frame = frame
	pc.Logger = cfg.Logger
	pc.Metrics = m.presence
	if bus != nil { // never a typed nil in the interface
		pc.Bus = bus
	}
	h, err := presence.New(pc)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := m.registerHubGauges(cfg.Registry, h); err != nil {
		return nil, err
	}
	return h, nil
}

// syncBudget is the default Presence.SyncBudget for an outbox of outbox
// bytes: half of it, so that a sync fits an outbox that is half full, or
// less when the reply reserve needs it (syncRoom). It is the only
// definition of that default: presence cannot know the transport's outbox,
// so it has none of its own.
func syncBudget(outbox int) int { return min(outbox/2, syncRoom(outbox)) }

// syncRoom is the largest sync payload an empty outbox of outbox bytes
// takes beside its frame header (at most 14 bytes, rounded up) and the
// reply reserve that offered frames leave free.
func syncRoom(outbox int) int { return outbox - presence.MaxReplyBytes - 16 }

// registerHubGauges exports the hub's gauges, read at scrape time.
func (m *metrics) registerHubGauges(reg prometheus.Registerer, h *presence.Hub) error {
	for _, g := range []struct {
		name, help string
		get        func(presence.Stats) int64
	}{
		{"presenced_rooms", "Rooms with at least one member on this node.", func(s presence.Stats) int64 { return s.Rooms }},
		{"presenced_members", "Room members on this node, summed over rooms (a user in two rooms counts twice).", func(s presence.Stats) int64 { return s.Members }},
		{"presenced_sessions", "Connections with a presence session (opened, not yet closed).", func(s presence.Stats) int64 { return s.Sessions }},
	} {
		get := g.get
		c := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help},
			func() float64 { return float64(get(h.Stats())) })
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("server: register metrics: %w", err)
		}
	}
	return nil
}
