package webhook

import "github.com/prometheus/client_golang/prometheus"

// Event fates, the result label of presenced_webhook_events_total.
const (
	resultSent          = "sent"           // in a batch the receiver took (2xx)
	resultDroppedQueue  = "dropped_queue"  // the queue was full
	resultDroppedFailed = "dropped_failed" // its batch failed for good
)

// Request outcomes, the result label of presenced_webhook_requests_total.
const (
	reqOK       = "ok"       // 2xx
	reqRetry    = "retry"    // 5xx, 429, timeout, network error: tried again
	reqFailed   = "failed"   // the same on the last attempt (or at shutdown): the batch is dropped
	reqRejected = "rejected" // another 4xx, or a 3xx: the batch is dropped
)

// metrics are the sender's collectors.
type metrics struct {
	events   *prometheus.CounterVec // presenced_webhook_events_total{result}
	requests *prometheus.CounterVec // presenced_webhook_requests_total{result}
	duration prometheus.Histogram   // presenced_webhook_request_seconds
}

func newMetrics(reg prometheus.Registerer, queued func() float64) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_webhook_events_total",
			Help: "Webhook events by fate: sent, dropped_queue (the queue was full), dropped_failed (their batch failed for good)."},
			[]string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_webhook_requests_total",
			Help: "Webhook POSTs by outcome: ok, retry (5xx, 429, timeout, network error), failed (the same on the last attempt), rejected (another 4xx, or a 3xx)."},
			[]string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "presenced_webhook_request_seconds",
			Help: "Duration of webhook POSTs.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 9)}),
	}
	for _, r := range []string{resultSent, resultDroppedQueue, resultDroppedFailed} {
		m.events.WithLabelValues(r)
	}
	for _, r := range []string{reqOK, reqRetry, reqFailed, reqRejected} {
		m.requests.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "presenced_webhook_queue_events",
		Help: "Webhook events queued, not yet sent."}, queued)
	for _, c := range []prometheus.Collector{m.events, m.requests, m.duration, queue} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
