package main

import (
	"os"
	"testing"
	"time"
)

func TestParseVmRSS(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int64
		err      bool
	}{
		{"status", "Name:\tpresenced\nVmPeak:\t  99 kB\nVmRSS:\t   23456 kB\nRssAnon:\t 1 kB\n", 23456 << 10, false},
		{"last line without newline", "Name:\tx\nVmRSS:\t1 kB", 1024, false},
		{"zombie", "Name:\tx\nState:\tZ (zombie)\n", 0, true},
		{"unit", "VmRSS:\t12 MB\n", 0, true},
		{"number", "VmRSS:\tmany kB\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("parseVmRSS = %d, %v; want %d, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseCPU(t *testing.T) {
	rest := " S 1 2 3 4 5 6 7 8 9 10 250 75 11 12 20 0 1 0 100 200 300"
	for _, tc := range []struct {
		name, in string
		want     time.Duration
		err      bool
	}{
		{"plain", "1234 (presenced)" + rest, 3250 * time.Millisecond, false},
		{"name with spaces and parens", "1234 (a) b (c)" + rest, 3250 * time.Millisecond, false},
		{"short", "1234 (x) S 1 2", 0, true},
		{"no name", "1234 x S", 0, true},
		{"bad number", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u 75", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCPU([]byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("parseCPU = %v, %v; want %v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// TestReadSelf reads this process's own figures: the real files parse.
func TestReadSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	rss, err := readRSS(os.Getpid())
	if err != nil || rss <= 0 {
		t.Errorf("readRSS = %d, %v", rss, err)
	}
	if _, err := readCPU(os.Getpid()); err != nil {
		t.Errorf("readCPU: %v", err)
	}
}

func TestProgressErrors(t *testing.T) {
	for line, want := range map[string]string{
		"t=12s conns=15000 joins/s=1200 deliveries/s=980000 p50=12.1ms p99=88.0ms errors=7": "7",
		"ready conns=15000": "",
		"presence-load: u1 ws://x: connection lost: errors=9": "",
	} {
		got := ""
		if m := progressErrors.FindStringSubmatch(line); m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("%q: %q, want %q", line, got, want)
		}
	}
}
