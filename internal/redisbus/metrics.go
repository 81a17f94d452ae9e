package redisbus

import "github.com/prometheus/client_golang/prometheus"

// Resync reasons: why a node's part of a room was read again from Redis.
const (
	ResyncGap          = "gap"          // a message's seq skipped some
	ResyncEpoch        = "epoch"        // a message from a node incarnation not seen before in the room
	ResyncReconnect    = "reconnect"    // a Pub/Sub connection was (re)established: messages may be lost
	ResyncProbe        = "probe"        // a quiet subscription did not echo its probe: recreated
	ResyncUnsubscribed = "unsubscribed" // Redis dropped a subscription (Cluster slot moved)
	ResyncOverflow     = "overflow"     // the receive queue was full: messages dropped
	ResyncReset        = "reset"        // Redis lost its data, or this node was reaped
)

// Death detection: how a node's death was learnt.
const (
	DeathProbe    = "probe"    // the liveness script found its lease gone
	DeathEvent    = "event"    // an expired event ran the script early, which found it gone
	DeathAnnounce = "announce" // the node announced its end (drain) or a restart retired it
)

// errorOps are the values of presenced_redis_errors_total's op label:
// liveness rounds, writes (publish), reaping a dead node (reap), webhook
// events' scripts (events), the reconcile and registry check (reconcile),
// Pub/Sub (subscribe, probe), reading a room or a part (load, decode),
// anti-entropy, and the admin API (kick, conns).
var errorOps = []string{"liveness", "publish", "reap", "events", "reconcile",
	"subscribe", "probe", "load", "decode", "antientropy", "kick", "conns"}

// metrics are the bus's collectors, registered on Config.Registerer.
type metrics struct {
	up          prometheus.Gauge       // presenced_redis_up
	published   prometheus.Counter     // presenced_bus_messages_published_total
	received    prometheus.Counter     // presenced_bus_messages_received_total
	resyncs     *prometheus.CounterVec // presenced_bus_resyncs_total{reason}
	drops       prometheus.Counter     // presenced_bus_queue_drops_total
	nodes       prometheus.Gauge       // presenced_cluster_nodes
	deaths      *prometheus.CounterVec // presenced_cluster_node_deaths_total{how}
	propagation prometheus.Histogram   // presenced_bus_propagation_seconds
	errors      *prometheus.CounterVec // presenced_redis_errors_total{op}
	events      prometheus.Counter     // presenced_bus_webhook_events_total
	mismatch    prometheus.Gauge       // presenced_cluster_webhook_mismatched_nodes
	reconnects  prometheus.Counter     // presenced_bus_subscriber_reconnects_total
	resets      prometheus.Counter     // presenced_redis_resets_total
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "presenced_redis_up",
			Help: "1 while this node's lease renewals succeed, 0 while Redis is unreachable or the lease is lost."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "presenced_bus_messages_published_total",
			Help: "Room messages this node published on the bus (at most one per room per tick)."}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "presenced_bus_messages_received_total",
			Help: "Room messages received from other nodes."}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_bus_resyncs_total",
			Help: "Reads of a node's part of a room from Redis, by reason."}, []string{"reason"}),
		drops: prometheus.NewCounter(prometheus.CounterOpts{Name: "presenced_bus_queue_drops_total",
			Help: "Room publishes or received messages dropped because a bounded queue was full (the room is republished or resynced)."}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "presenced_cluster_nodes",
			Help: "Live nodes registered in Redis, this one included, at the last liveness round."}),
		deaths: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_cluster_node_deaths_total",
			Help: "Other nodes this node learnt were dead, by how."}, []string{"how"}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "presenced_bus_propagation_seconds",
			Help:    "From a remote node's publish (its timestamp) to the change applied here.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_redis_errors_total",
			Help: "Redis commands that failed, by operation."}, []string{"op"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "presenced_bus_webhook_events_total",
			Help: "Membership transitions (webhook events) this node's scripts returned to it, replays included (a retry after a lost reply, a kept result run by a sweep): each is decided once in the cluster."}),
		mismatch: prometheus.NewGauge(prometheus.GaugeOpts{Name: "presenced_cluster_webhook_mismatched_nodes",
			Help: "Live nodes whose webhook setting (-webhook-url set or not) differs from this node's, at the last registry check: all nodes or none must produce events."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "presenced_bus_subscriber_reconnects_total",
			Help: "Times a Pub/Sub subscriber connection was lost and re-established (Redis restarted, or cut it: client-output-buffer-limit pubsub); each resyncs the rooms it carries (reason reconnect)."}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{Name: "presenced_redis_resets_total",
			Help: "Times this node found Redis's dataset replaced (an empty restart, FLUSHALL) and registered again under a new id: the other nodes then count its old id, and it theirs, as a death (how probe or event)."}),
	}
	for _, r := range []string{ResyncGap, ResyncEpoch, ResyncReconnect, ResyncProbe, ResyncUnsubscribed, ResyncOverflow, ResyncReset} {
		m.resyncs.WithLabelValues(r)
	}
	for _, h := range []string{DeathProbe, DeathEvent, DeathAnnounce} {
		m.deaths.WithLabelValues(h)
	}
	// Every op counted in errors exists at 0 (TestErrorOpsPrecreated).
	for _, op := range errorOps {
		m.errors.WithLabelValues(op)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.up, m.published, m.received, m.resyncs, m.drops, m.nodes, m.deaths, m.propagation, m.errors, m.events, m.mismatch, m.reconnects, m.resets} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
