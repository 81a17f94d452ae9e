package server

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		name           string
		at             time.Duration // since t0
		wantOK         bool
		wantSuppressed int
	}{
		{"first", 0, true, 0},
		{"second in the same second", 100 * time.Millisecond, true, 0},
		{"over the limit", 200 * time.Millisecond, false, 0},
		{"still over", 900 * time.Millisecond, false, 0},
		{"next second reports the refused", 1100 * time.Millisecond, true, 2},
		{"count restarts", 1200 * time.Millisecond, true, 0},
		{"over again", 1300 * time.Millisecond, false, 0},
	}
	l := logLimiter{max: 2}
	for _, s := range steps {
		ok, suppressed := l.allow(t0.Add(s.at))
		if ok != s.wantOK || suppressed != s.wantSuppressed {
			t.Errorf("%s: allow = %v, %d; want %v, %d", s.name, ok, suppressed, s.wantOK, s.wantSuppressed)
		}
	}
}
