package server

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/poller"
)

// TestLabelledSkipsUnnamed: a value that newLabelled gave no counter (its
// name is "", like RejectPage) is not counted, and does not panic; the
// others are counted under their names.
func TestLabelledSkipsUnnamed(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_total", Help: "h"}, []string{"reason"})
	l := newLabelled(vec, func(i int) string {
		if poller.RejectReason(i) == poller.RejectPage {
			return ""
		}
		return poller.RejectReason(i).String()
	})
	l.inc(int(poller.RejectPage), poller.RejectPage.String())
	l.inc(int(poller.RejectNotFound), poller.RejectNotFound.String())
	l.inc(250, "future")
	reg := prometheus.NewRegistry()
	reg.MustRegister(vec)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("gather: %v %v", mfs, err)
	}
	got := map[string]float64{}
	for _, m := range mfs[0].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	if got["not_found"] != 1 || got["future"] != 1 {
		t.Errorf("counted %v, want not_found and future at 1", got)
	}
	if v, ok := got[poller.RejectPage.String()]; ok {
		t.Errorf("page has a series (%v): it is not a handshake failure", v)
	}
}
