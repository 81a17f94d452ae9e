package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are counted in a histogram of fixed, log-linear buckets of
// microseconds: exact below 64 µs (buckets 0-63), then 32 buckets per power
// of two (3 % wide) for 2^6 to 2^36 µs (buckets 64-1023: 30 powers), then
// one overflow bucket from 2^36 µs (19 hours). Every process uses the same
// buckets, so histograms merge by adding counts.
const (
	histSubBits = 5
	histMaxExp  = 36
	histBuckets = (histMaxExp-histSubBits+1)<<histSubBits + 1 // 1,024 + the overflow bucket
)

// histBucket returns the bucket of us microseconds.
func histBucket(us uint64) int {
	if us < 2<<histSubBits {
		return int(us)
	}
	if us >= 1<<histMaxExp {
		return histBuckets - 1
	}
	shift := bits.Len64(us) - histSubBits - 1
	return (shift+1)<<histSubBits + int(us>>shift) - 1<<histSubBits
}

// histLow returns the smallest value of bucket i, in microseconds.
func histLow(i int) uint64 {
	if i < 2<<histSubBits {
		return uint64(i)
	}
	shift := i>>histSubBits - 1
	return uint64(i-(shift+1)<<histSubBits+1<<histSubBits) << shift
}

// hist is a latency histogram, safe for concurrent use.
type hist [histBuckets]atomic.Uint64

func (h *hist) add(d time.Duration) {
	h[histBucket(uint64(max(d, 0)/time.Microsecond))].Add(1)
}

// histData is a histogram as it travels between processes: bucket → count,
// empty buckets left out.
type histData map[int]uint64

// snapshot returns the counts added since prev (nil: since the start) and
// updates prev.
func (h *hist) snapshot(prev *[histBuckets]uint64) histData {
	d := histData{}
	for i := range h {
		v := h[i].Load()
		if prev != nil {
			v, prev[i] = v-prev[i], v
		}
		if v > 0 {
			d[i] = v
		}
	}
	return d
}

// merge adds o into d.
func (d histData) merge(o histData) {
	for i, v := range o {
		d[i] += v
	}
}

func (d histData) count() uint64 {
	var n uint64
	for _, v := range d {
		n += v
	}
	return n
}

// quantile returns the q quantile (0..1) in milliseconds: the middle of its
// bucket, 0 for an empty histogram.
func (d histData) quantile(q float64) float64 {
	n := d.count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n-1)) + 1
	var seen uint64
	for i := range histBuckets {
		if seen += d[i]; seen >= rank {
			return bucketMidMS(i)
		}
	}
	return bucketMidMS(histBuckets - 1)
}

// max returns the largest value in milliseconds (the middle of its bucket).
func (d histData) max() float64 {
	top := -1
	for i := range d {
		top = max(top, i)
	}
	if top < 0 {
		return 0
	}
	return bucketMidMS(top)
}

func bucketMidMS(i int) float64 {
	lo := histLow(i)
	hi := lo + 1
	if i+1 < histBuckets {
		hi = histLow(i + 1)
	}
	return float64(lo+hi) / 2 / 1e3
}

// counters are what one process counts, summed over processes. Those
// marked "cumulative" only grow.
type counters struct {
	Connected  int64 `json:"connected"`  // connections that said hello (at least once)
	Joined     int64 `json:"joined"`     // connections that joined their room (at least once)
	Open       int64 `json:"open"`       // connections open now
	Joins      int64 `json:"joins"`      // cumulative: joins completed (sync received), resumes included
	Deliveries int64 `json:"deliveries"` // cumulative, measured phase: presence events received (see the doc)
	Messages   int64 `json:"messages"`   // cumulative, measured phase: messages received
	Sent       int64 `json:"sent"`       // cumulative, measured phase: scenario commands sent
	Errors     int64 `json:"errors"`     // cumulative
	Reconnects int64 `json:"reconnects"` // cumulative: sessions reopened after a loss
	Resumes    int64 `json:"resumes"`    // cumulative: rooms the server resumed from the cursor
	Partial    int64 `json:"partial"`    // cumulative: partial syncs (room over the server's list limit)
}

func (c *counters) add(o counters) {
	c.Connected += o.Connected
	c.Joined += o.Joined
	c.Open += o.Open
	c.Joins += o.Joins
	c.Deliveries += o.Deliveries
	c.Messages += o.Messages
	c.Sent += o.Sent
	c.Errors += o.Errors
	c.Reconnects += o.Reconnects
	c.Resumes += o.Resumes
	c.Partial += o.Partial
}

// liveCounters is counters for concurrent use.
type liveCounters struct {
	connected, joined, open, joins, deliveries, messages, sent atomic.Int64
	errors, reconnects, resumes, partial                       atomic.Int64
}

func (l *liveCounters) load() counters {
	return counters{
		Connected: l.connected.Load(), Joined: l.joined.Load(), Open: l.open.Load(),
		Joins: l.joins.Load(), Deliveries: l.deliveries.Load(), Messages: l.messages.Load(),
		Sent: l.sent.Load(), Errors: l.errors.Load(), Reconnects: l.reconnects.Load(),
		Resumes: l.resumes.Load(), Partial: l.partial.Load(),
	}
}

// atomicMax raises a to v if v is larger.
func atomicMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// atomicMin lowers a to v if v is smaller or a is 0 (unset).
func atomicMin(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if (old != 0 && v >= old) || a.CompareAndSwap(old, v) {
			return
		}
	}
}
