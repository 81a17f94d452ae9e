package coalesce

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
)

// member is a presence-like value: absent is the zero value.
type member struct {
	present bool
	s       string
}

var (
	absent = member{}
	online = member{present: true, s: "online"}
	away   = member{present: true, s: "away"}
	busy   = member{present: true, s: "busy"}
)

// put is one Changes.Put and the merged flag it must return.
type put struct {
	k          string
	old, new   member
	wantMerged bool
}

// drained is one call of Drain's fn.
type drained struct {
	k        string
	old, new member
}

func drainAll(c *Changes[string, member]) []drained {
	var got []drained
	c.Drain(func(k string, old, new member) { got = append(got, drained{k, old, new}) })
	return got
}

func TestChangesNetChange(t *testing.T) {
	tests := []struct {
		name string
		puts []put
		want []drained // in Drain order
	}{
		{
			name: "empty window",
		},
		{
			name: "join",
			puts: []put{{"alice", absent, online, false}},
			want: []drained{{"alice", absent, online}},
		},
		{
			name: "join then leave nets to absent to absent",
			puts: []put{
				{"alice", absent, online, false},
				{"alice", online, absent, true},
			},
			want: []drained{{"alice", absent, absent}},
		},
		{
			name: "leave then rejoin keeps the first old and the last new",
			puts: []put{
				{"alice", online, absent, false},
				{"alice", absent, away, true},
			},
			want: []drained{{"alice", online, away}},
		},
		{
			name: "several updates keep the first old and the last new",
			puts: []put{
				{"alice", online, away, false},
				{"alice", away, busy, true},
				{"alice", busy, online, true},
				{"alice", online, away, true},
			},
			want: []drained{{"alice", online, away}},
		},
		{
			name: "drain order is first-Put order",
			puts: []put{
				{"carol", absent, online, false},
				{"alice", absent, online, false},
				{"bob", absent, online, false},
				{"alice", online, away, true},   // does not move alice
				{"carol", online, absent, true}, // nor carol
			},
			want: []drained{
				{"carol", absent, absent},
				{"alice", absent, away},
				{"bob", absent, online},
			},
		},
		{
			name: "merged only for a key already in the window",
			puts: []put{
				{"alice", absent, online, false},
				{"bob", absent, online, false},
				{"bob", online, busy, true},
				{"alice", online, away, true},
				{"dave", absent, online, false},
			},
			want: []drained{
				{"alice", absent, away},
				{"bob", absent, busy},
				{"dave", absent, online},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Changes[string, member]
			// Two windows on the same Changes: Drain must fully empty the
			// first, so the second behaves like a fresh one.
			for window := range 2 {
				for i, p := range tt.puts {
					if merged := c.Put(p.k, p.old, p.new); merged != p.wantMerged {
						t.Errorf("window %d: Put #%d (%s): merged = %v, want %v", window, i, p.k, merged, p.wantMerged)
					}
				}
				if got := c.Len(); got != len(tt.want) {
					t.Errorf("window %d: Len = %d, want %d", window, got, len(tt.want))
				}
				for _, w := range tt.want {
					old, new, ok := c.Get(w.k)
					if !ok || old != w.old || new != w.new {
						t.Errorf("window %d: Get(%q) = %v, %v, %v; want %v, %v, true", window, w.k, old, new, ok, w.old, w.new)
					}
				}
				if got := drainAll(&c); !slices.Equal(got, tt.want) {
					t.Errorf("window %d: Drain = %v, want %v", window, got, tt.want)
				}
				if got := c.Len(); got != 0 {
					t.Errorf("window %d: Len after Drain = %d, want 0", window, got)
				}
				for _, w := range tt.want {
					if old, new, ok := c.Get(w.k); ok {
						t.Errorf("window %d: Get(%q) after Drain = %v, %v, true; want absent", window, w.k, old, new)
					}
				}
				if got := drainAll(&c); len(got) != 0 {
					t.Errorf("window %d: second Drain = %v, want nothing", window, got)
				}
			}
		})
	}
}

func TestChangesZeroValue(t *testing.T) {
	var c Changes[int, *member]
	if old, new, ok := c.Get(1); ok || old != nil || new != nil {
		t.Errorf("Get on zero Changes = %v, %v, %v; want nil, nil, false", old, new, ok)
	}
	if n := c.Len(); n != 0 {
		t.Errorf("Len on zero Changes = %d, want 0", n)
	}
	c.Drain(func(k int, old, new *member) { t.Errorf("Drain on zero Changes called fn(%d)", k) })

	// Pointer values: a join then a leave nets to nil → nil.
	m := &member{present: true}
	c.Put(1, nil, m)
	c.Put(1, m, nil)
	if old, new, ok := c.Get(1); !ok || old != nil || new != nil {
		t.Errorf("Get after join+leave = %v, %v, %v; want nil, nil, true", old, new, ok)
	}
}

// TestChangesDrainReleasesValues checks that drained slots are zeroed, so a
// Changes kept across windows does not keep old values alive.
func TestChangesDrainReleasesValues(t *testing.T) {
	var c Changes[string, *member]
	for i := range 10 {
		c.Put(strconv.Itoa(i), &member{}, &member{})
	}
	c.Drain(func(string, *member, *member) {})
	for i, ch := range c.changes[:cap(c.changes)] {
		if ch.k != "" || ch.old != nil || ch.new != nil {
			t.Fatalf("slot %d after Drain = %+v, want zero", i, ch)
		}
	}
}

func TestChangesSteadyStateAllocs(t *testing.T) {
	const n = 100
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	sink := 0
	fn := func(k string, old, new member) { sink += len(k) }

	tests := []struct {
		name   string
		window func(c *Changes[string, member]) // one window, Drain included
	}{
		{
			name: "Put each key once then Drain",
			window: func(c *Changes[string, member]) {
				for _, k := range keys {
					c.Put(k, absent, online)
				}
				c.Drain(fn)
			},
		},
		{
			name: "Put each key three times then Drain",
			window: func(c *Changes[string, member]) {
				for _, k := range keys {
					c.Put(k, absent, online)
					c.Put(k, online, away)
					c.Put(k, away, absent)
				}
				c.Drain(fn)
			},
		},
		{
			name: "busy window then empty window", // must not reallocate on every busy one
			window: func(c *Changes[string, member]) {
				for _, k := range keys {
					c.Put(k, absent, online)
				}
				c.Drain(fn)
				c.Drain(fn)
			},
		},
		{
			name: "window with half the keys then a full one",
			window: func(c *Changes[string, member]) {
				for _, k := range keys[:n/2] {
					c.Put(k, absent, online)
				}
				c.Drain(fn)
				for _, k := range keys {
					c.Put(k, absent, online)
				}
				c.Drain(fn)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Changes[string, member]
			for range 3 { // warm-up: grow to the steady size
				tt.window(&c)
			}
			if allocs := testing.AllocsPerRun(100, func() { tt.window(&c) }); allocs != 0 {
				t.Errorf("allocs per window = %v, want 0", allocs)
			}
		})
	}
}

func TestChangesShrink(t *testing.T) {
	tests := []struct {
		name    string
		windows []int // number of distinct keys Put in each window, in order
		// wantCap checks cap of the change list after the last window.
		wantCap func(c int) bool
		want    string
	}{
		{
			name:    "steady big windows keep capacity",
			windows: []int{1000, 1000, 1000},
			wantCap: func(c int) bool { return c >= 1000 },
			want:    ">= 1000",
		},
		{
			name:    "one small window after a big one keeps capacity",
			windows: []int{1000, 10},
			wantCap: func(c int) bool { return c >= 1000 },
			want:    ">= 1000",
		},
		{
			name:    "two small windows after a big one release it",
			windows: []int{1000, 10, 10},
			wantCap: func(c int) bool { return c == 10 },
			want:    "== 10 (the recent peak)",
		},
		{
			name:    "shrinks to the recent peak",
			windows: []int{1000, 30, 20},
			wantCap: func(c int) bool { return c == 30 },
			want:    "== 30",
		},
		{
			name:    "two empty windows after a big one drop it",
			windows: []int{1000, 0, 0},
			wantCap: func(c int) bool { return c == 0 },
			want:    "== 0",
		},
		{
			name:    "moderate drop keeps capacity",
			windows: []int{1000, 300, 300},
			wantCap: func(c int) bool { return c >= 1000 },
			want:    ">= 1000",
		},
		{
			name:    "small capacity is never released",
			windows: []int{30, 0, 0, 0},
			wantCap: func(c int) bool { return c >= 30 && c <= shrinkFloor },
			want:    "in [30, 64]",
		},
		{
			name:    "alternating busy and empty windows keep capacity",
			windows: []int{100, 0, 100, 0, 100, 0},
			wantCap: func(c int) bool { return c >= 100 },
			want:    ">= 100",
		},
		{
			name:    "regrows after a release",
			windows: []int{1000, 0, 0, 500},
			wantCap: func(c int) bool { return c >= 500 },
			want:    ">= 500",
		},
	}
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Changes[string, int]
			got := 0
			check := func(k string, old, new int) {
				if k != keys[got] || new != got {
					t.Fatalf("Drain gave %s: %d→%d, want %s: 0→%d", k, old, new, keys[got], got)
				}
				got++
			}
			window := func(n int) {
				for i := range n {
					c.Put(keys[i], 0, i)
				}
				got = 0
				c.Drain(check)
				if got != n {
					t.Fatalf("Drain gave %d changes, want %d", got, n)
				}
			}
			for _, n := range tt.windows {
				window(n)
			}
			if c := cap(c.changes); !tt.wantCap(c) {
				t.Errorf("cap after windows %v = %d, want %s", tt.windows, c, tt.want)
			}
			if c.changes == nil && c.index != nil || c.changes != nil && c.index == nil {
				t.Errorf("index and change list released separately: index nil %v, changes nil %v", c.index == nil, c.changes == nil)
			}
			// Whatever the capacity now, repeating the last window is steady
			// state: it allocates nothing.
			last := tt.windows[len(tt.windows)-1]
			if allocs := testing.AllocsPerRun(10, func() { window(last) }); allocs != 0 {
				t.Errorf("allocs per window of %d after windows %v = %v, want 0", last, tt.windows, allocs)
			}
		})
	}
}

func BenchmarkChangesPutDrain(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			keys := make([]string, n)
			for i := range keys {
				keys[i] = "user-" + strconv.Itoa(i)
			}
			var c Changes[string, member]
			sink := 0
			fn := func(k string, old, new member) {
				if old != new {
					sink++
				}
			}
			window := func() {
				for _, k := range keys {
					c.Put(k, absent, online)
					c.Put(k, online, away)
				}
				c.Drain(fn)
			}
			window() // grow to the steady size
			b.ReportAllocs()
			for b.Loop() {
				window()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
		})
	}
}
