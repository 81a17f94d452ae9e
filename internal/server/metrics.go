package server

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/poller"
)

// metrics are the server's collectors. They carry no room or user label.
// Static after construction; the collectors are safe for concurrent use.
type metrics struct {
	active       prometheus.Gauge
	opened       prometheus.Counter
	received     prometheus.Counter
	framesSent   prometheus.Counter
	bytesSent    prometheus.Counter
	sendFull     prometheus.Counter
	closed       labelled // by poller.CloseReason
	handshakeErr labelled // by poller.RejectReason
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
		opened:     counter("presenced_connections_opened_total", "WebSocket connections upgraded."),
		received:   counter("presenced_messages_received_total", "Complete messages received from clients, after reassembly."),
		framesSent: counter("presenced_frames_sent_total", "Frames the application queued to clients."),
		bytesSent:  counter("presenced_bytes_sent_total", "Bytes of the frames the application queued to clients."),
		sendFull:   counter("presenced_send_full_total", "Frames not queued because the connection's outbox was full."),
	}
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presenced_connections_closed_total",
		Help: "WebSocket connections closed, by reason (peer, reset, protocol, timeout, server, shutdown).",
	}, []string{"reason"})
	handshakeErr := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presenced_handshake_failures_total",
		Help: "Connections that failed before the WebSocket upgrade completed, by reason.",
	}, []string{"reason"})
	m.closed = newLabelled(closed, func(i int) string { return poller.CloseReason(i).String() })
	m.handshakeErr = newLabelled(handshakeErr, func(i int) string { return poller.RejectReason(i).String() })

	for _, c := range []prometheus.Collector{
		m.active, m.opened, closed, handshakeErr, m.received, m.framesSent, m.bytesSent, m.sendFull,
	} {
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
func newLabelled(vec *prometheus.CounterVec, name func(int) string) labelled {
	l := labelled{vec: vec, byEnum: []prometheus.Counter{nil}}
	for i := 1; i < 256 && name(i) != "unknown"; i++ {
		l.byEnum = append(l.byEnum, vec.WithLabelValues(name(i)))
	}
	return l
}

func (l labelled) inc(value int, name string) {
	if value > 0 && value < len(l.byEnum) {
		l.byEnum[value].Inc()
		return
	}
	l.vec.WithLabelValues(name).Inc()
}
