package server

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// metrics are the server's collectors. They carry no room or user label.
// Static after construction; the collectors are safe for concurrent use.
type metrics struct {
	active       prometheus.Gauge
	draining     prometheus.Gauge // 1 from the drain's start until the process exits
	opened       prometheus.Counter
	received     prometheus.Counter
	framesSent   prometheus.Counter
	bytesSent    prometheus.Counter
	sendFull     prometheus.Counter
	pagesServed  prometheus.Counter
	panics       prometheus.Counter
	closed       closeCounts            // by presence.CloseReason
	handshakeErr labelled               // by poller.RejectReason
	adminReqs    *prometheus.CounterVec // admin API requests by endpoint and HTTP status
	presence     presence.Metrics
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presenced_connections_active",
			Help: "WebSocket connections open now (upgraded, not yet closed).",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presenced_draining",
			Help: "1 from the start of a drain (SIGTERM, SIGINT) until the process exits, 0 before: a node that stays at 1 is stuck in its drain.",
		}),
		opened:      counter("presenced_connections_opened_total", "WebSocket connections upgraded."),
		received:    counter("presenced_messages_received_total", "Complete messages received from clients, after reassembly."),
		framesSent:  counter("presenced_frames_sent_total", "Frames the application queued to clients."),
		bytesSent:   counter("presenced_bytes_sent_total", "Bytes of the frames the application queued to clients."),
		sendFull:    counter("presenced_send_full_total", "Frames not queued because the connection's outbox was full (or it was closing)."),
		panics:      counter("presenced_handler_panics_total", "Panics recovered from a connection's callbacks; each closed its connection with 1011."),
		pagesServed: counter("presenced_pages_served_total", "Plain HTTP GET and HEAD requests answered with a page of the public listener (the demo, -demo)."),
	}
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presenced_connections_closed_total",
		Help: "WebSocket connections closed, by reason (peer, reset, heartbeat, hello_timeout, slow, token_expired, auth, rate, protocol, drain, shutdown, internal, admin).",
	}, []string{"reason"})
	handshakeErr := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presenced_handshake_failures_total",
		Help: "Connections that failed before the WebSocket upgrade completed, by reason.",
	}, []string{"reason"})
	m.adminReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presenced_admin_requests_total",
		Help: "Admin API requests (/api/), by endpoint (members, rooms, user_rooms, disconnect, nodes, unknown; redirect: an unclean path) and HTTP status code.",
	}, []string{"endpoint", "code"})
	m.closed = newCloseCounts(closed)
	m.handshakeErr = newLabelled(handshakeErr, func(i int) string {
		if poller.RejectReason(i) == poller.RejectPage {
			return "" // not a failure: counted by pagesServed
		}
		return poller.RejectReason(i).String()
	})

	cs := []prometheus.Collector{m.active, m.draining, m.opened, closed, handshakeErr, m.received, m.framesSent, m.bytesSent, m.sendFull, m.panics, m.pagesServed, m.adminReqs}
	cs = append(cs, m.newPresenceMetrics(counter)...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("server: register metrics: %w", err)
		}
	}
	return m, nil
}

// labelled holds one counter per value of a small enum (a poller reason),
// created up front so every label appears at 0 and counting costs no
// label lookup.
type labelled struct {
	vec    *prometheus.CounterVec
	byEnum []prometheus.Counter // index: enum value; static after construction
}

// newLabelled creates the counters of the enum values 1, 2, ... until name
// says "unknown", so reasons added to the poller are picked up unchanged.
// A value whose name is "" gets no counter and must not be counted.
func newLabelled(vec *prometheus.CounterVec, name func(int) string) labelled {
	l := labelled{vec: vec, byEnum: []prometheus.Counter{nil}}
	for i := 1; i < 256 && name(i) != "unknown"; i++ {
		var c prometheus.Counter
		if n := name(i); n != "" {
			c = vec.WithLabelValues(n)
		}
		l.byEnum = append(l.byEnum, c)
	}
	return l
}

// inc counts value; one beyond the enum known at construction is counted
// under name. A value named "" at construction is not counted.
func (l labelled) inc(value int, name string) {
	if value > 0 && value < len(l.byEnum) {
		if c := l.byEnum[value]; c != nil {
			c.Inc()
		}
		return
	}
	l.vec.WithLabelValues(name).Inc()
}

// closeCounts is presence.Metrics.Closes: one counter per
// presence.CloseReason, created up front so every label appears at 0 and
// counting costs no label lookup. Static after construction.
type closeCounts []prometheus.Counter // index: presence.CloseReason

var _ presence.CloseCounter = closeCounts(nil)

func newCloseCounts(vec *prometheus.CounterVec) closeCounts {
	var c closeCounts
	for r := range presence.CloseReasons() {
		for len(c) <= int(r) {
			c = append(c, nil)
		}
		c[r] = vec.WithLabelValues(r.String())
	}
	return c
}

func (c closeCounts) Inc(r presence.CloseReason) {
	if int(r) < len(c) && c[r] != nil {
		c[r].Inc()
	}
}

// newPresenceMetrics fills m.presence and returns its collectors.
func (m *metrics) newPresenceMetrics(counter func(name, help string) prometheus.Counter) []prometheus.Collector {
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	}
	helloFailures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presenced_hello_failures_total",
		Help: "Connections closed before or at hello, by reason (timeout, bad_request, unauthorized, version, internal).",
	}, []string{"reason"})
	for _, r := range []string{"timeout", "bad_request", "unauthorized", "version", "internal"} {
		helloFailures.WithLabelValues(r)
	}
	seconds := []float64{.001, .0025, .005, .01, .025, .05, .1, .15, .2, .3, .5, 1, 2.5, 5, 10}
	p := presence.Metrics{
		HelloFailures:   counterVec{helloFailures},
		Closes:          m.closed,
		Joins:           counter("presenced_joins_total", "Members that joined a room (users, not connections)."),
		Leaves:          counter("presenced_leaves_total", "Members that left a room."),
		Updates:         counter("presenced_updates_total", "Member state changes published."),
		TypingEvents:    counter("presenced_typing_events_total", "Typing commands applied."),
		Diffs:           counter("presenced_diffs_total", "Room diffs published, each encoded once."),
		FramesSent:      m.framesSent,
		SendFailures:    m.sendFull,
		BytesSent:       m.bytesSent,
		Coalesced:       counter("presenced_events_coalesced_total", "Changes merged into a later change of the same member within one tick."),
		DroppedDiffs:    counter("presenced_diffs_dropped_total", "Diffs not delivered to a connection whose outbox was full (it gets a sync later)."),
		SlowCloses:      counter("presenced_slow_consumer_closes_total", "Connections closed with 4002: a room owed them a sync for slow_timeout."),
		ResumeAttempts:  counter("presenced_resume_attempts_total", "Rooms a hello asked to resume."),
		ResumeSuccesses: counter("presenced_resume_successes_total", "Rooms resumed with a diff rather than a full sync."),
		Refreshes:       counter("presenced_token_refreshes_total", "auth commands that renewed a token."),
		RefreshFailures: counter("presenced_token_refresh_failures_total", "auth commands refused."),
		RateLimited:     counter("presenced_rate_limited_total", "Commands refused (or typing held back) by the per-connection rate limit."),
		ConnLifetime: hist("presenced_connection_lifetime_seconds", "Time from upgrade to close.",
			[]float64{1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600}),
		HeartbeatRTT:  hist("presenced_heartbeat_rtt_seconds", "Round trip of server pings, from the clients' pongs.", seconds),
		FanoutLatency: hist("presenced_fanout_latency_seconds", "From a room's first change in a tick to its diff handed to every subscriber's socket.", seconds),
		OutboxDepth: hist("presenced_outbox_depth_bytes", "Bytes queued for a connection, sampled at each server ping.",
			[]float64{0, 256, 1024, 4096, 16384, 32768, 65536}),
	}
	m.presence = p
	cs := []prometheus.Collector{helloFailures}
	for _, c := range []any{p.Joins, p.Leaves, p.Updates, p.TypingEvents, p.Diffs, p.Coalesced, p.DroppedDiffs,
		p.SlowCloses, p.ResumeAttempts, p.ResumeSuccesses, p.Refreshes, p.RefreshFailures, p.RateLimited,
		p.ConnLifetime, p.HeartbeatRTT, p.FanoutLatency, p.OutboxDepth} {
		cs = append(cs, c.(prometheus.Collector))
	}
	return cs
}

// counterVec adapts a CounterVec to presence.LabeledCounter.
type counterVec struct{ vec *prometheus.CounterVec }

func (c counterVec) Inc(label string) { c.vec.WithLabelValues(label).Inc() }
