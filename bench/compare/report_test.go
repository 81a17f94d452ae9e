package main

import (
	"encoding/json"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFmtValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {3, "3"}, {0.934, "0.93"}, {9.999, "10.00"}, {12.34, "12.3"}, {123.6, "124"},
		{1234.4, "1,234"}, {17234567, "17,234,567"}, {-1500, "-1,500"}, {math.NaN(), "—"},
	} {
		if got := fmtValue(tc.v); got != tc.want {
			t.Errorf("fmtValue(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestFmtRatio(t *testing.T) {
	for _, tc := range []struct {
		r    float64
		want string
	}{
		{1, "1.0×"}, {17.4, "17×"}, {1234, "1,234×"}, {1.55, "1.6×"}, {0.523, "0.52×"}, {math.Inf(1), "—"},
	} {
		if got := fmtRatio(tc.r); got != tc.want {
			t.Errorf("fmtRatio(%v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestTable(t *testing.T) {
	sum := json.RawMessage(`{}`)
	runs := []measurement{
		{Server: presencedEpoll, Kind: kindIdle, Conns: 1000, RSSAfter: 1, RSSPerConn: 1200},
		{Server: presencedEpoll, Kind: kindIdle, Conns: 15000, RSSAfter: 1, RSSPerConn: 1000, IdleCPUUsConnS: 0.5, ConnectPerS: 4000},
		{Server: baselineName, Kind: kindIdle, Conns: 15000, RSSAfter: 1, RSSPerConn: 17000, IdleCPUUsConnS: 1, ConnectPerS: 2000},
		{Server: baselineName, Kind: kindIdle, Conns: 1000, Error: "boom"},
		{Server: presencedEpoll, Kind: kindFanout, Conns: 5000, CPUS: 1, CPUUsPerChangeL: 0.9, DeliveriesPerCPUS: 1e6, P99Ms: 120, Summary: sum},
		{Server: baselineName, Kind: kindFanout, Conns: 5000, CPUS: 1, CPUUsPerChangeL: 11, DeliveriesPerCPUS: 90000, P99Ms: 30000, Stale: 12, Summary: sum},
		{Server: presencedEpoll, Kind: kindLeave, LeaveP50Ms: 5100, LeaveP99Ms: 5200, Summary: sum},
	}
	got := table(runs, []string{presencedEpoll, baselineName}, presencedEpoll, 15000)
	want := `| measurement | presenced-epoll | baseline |
|---|---:|---:|
| idle RSS per conn, 15,000 conns (bytes) | 1,000 (1×) | 17,000 (17×) |
| idle CPU per conn, 15,000 conns (µs/s) | 0.50 (1×) | 1 (2.0×) |
| connect rate, 15,000 conns (conns/s) | 4,000 (1×) | 2,000 (0.50×) |
| idle RSS per conn, 1,000 conns (bytes) | 1,200 (1×) | failed [1] |
| fanout 5,000 listeners: CPU per change per listener (µs) | 0.90 (1×) | 11 (12×) |
| fanout 5,000 listeners: deliveries per CPU-second | 1,000,000 (1×) | 90,000 (0.09×) |
| fanout 5,000 listeners: p99 change → seen (ms) | 120 (1×) | 30,000 (250×) |
| fanout 5,000 listeners: stale listeners | 0 | 12 |
| cut → others learn, p50 (ms) | 5,100 (1×) | — |
| cut → others learn, p99 (ms) | 5,200 (1×) | — |

A server with stale listeners fell behind: its CPU per change per listener counts only the
window (changes plus a 2 s settle) and understates; deliveries per CPU-second does not.

[1] baseline idle 1,000: boom
`
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestTakeSummary(t *testing.T) {
	r := measurement{Kind: kindFanout, CPUS: 2, Conns: 1000, Rate: 100, DurationS: 20}
	r.takeSummary(json.RawMessage(`{"errors":0,"deliveries":500000,"p99_ms":88.5,"stale":3,"connect_per_s":900,"sent":1900,"send_lag_p99_ms":4.5}`), nil)
	if r.DeliveriesPerCPUS != 250000 || r.P99Ms != 88.5 || r.Stale != 3 || r.ConnectPerS != 900 || r.SendLagP99Ms != 4.5 || r.Error != "" {
		t.Errorf("%+v", r)
	}
	// CPU per change per listener divides by the changes sent, not rate × duration.
	if want := 2e6 / 1900.0 / 1000; r.Sent != 1900 || r.CPUUsPerChangeL != want {
		t.Errorf("sent %d, CPU per change per listener %v, want %v", r.Sent, r.CPUUsPerChangeL, want)
	}
	r = measurement{Kind: kindFanout, CPUS: 2, Conns: 1000, Rate: 100, DurationS: 20}
	r.takeSummary(json.RawMessage(`{"errors":0,"deliveries":500000,"sent":1700}`), nil)
	if !strings.Contains(r.Error, "sent 1700 changes of 2000") {
		t.Errorf("under 90%% of the changes sent, error %q", r.Error)
	}
	r = measurement{Kind: kindLeave}
	r.takeSummary(json.RawMessage(`{"errors":2,"leave_p50_ms":5100,"leave_p99_ms":5300}`), nil)
	if r.LeaveP50Ms != 5100 || r.LeaveP99Ms != 5300 || !strings.Contains(r.Error, "2 errors") {
		t.Errorf("%+v", r)
	}
}

func TestParseFlags(t *testing.T) {
	h, err := parseFlags([]string{"-quick", "-idle", "9s", "-servers", "baseline,presenced-epoll"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.curve, []int{200, 1000}) || h.acceptConns != 1000 || h.idleTime != 9*time.Second ||
		h.curveIdle != 3*time.Second || !slices.Equal(h.servers, []string{baselineName, presencedEpoll}) {
		t.Errorf("quick flags: %+v", h)
	}
	for _, bad := range [][]string{{"-servers", "nginx"}, {"-conns-curve", "1k"}, {"-servers", ""}, {"extra"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
