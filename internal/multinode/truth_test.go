package multinode

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
)

// eventually polls fn every 25 ms until it returns nil; after timeout the
// test fails with fn's last error.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// within is eventually returning how long it took instead of failing the
// test: ok false after timeout, with fn's last error.
func within(timeout time.Duration, fn func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := fn()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), err
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// during polls fn every 25 ms for d and fails the test at its first error:
// what must hold for a while (nobody leaves).
func during(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := fn(); err != nil {
			t.Fatalf("after %v of %v: %v", d-time.Until(deadline), d, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// truth is what every view should show: room -> user -> state, from the
// intents of the peers that are not gone (a user's newest intent wins).
func truth(peers []*peer) map[string]map[string]client.State {
	rooms := map[string]map[string]intent{} // the newest intent of each user
	for _, p := range peers {
		p.mu.Lock()
		if !p.gone {
			for room, in := range p.intent {
				if rooms[room] == nil {
					rooms[room] = map[string]intent{}
				}
				if b, ok := rooms[room][p.user]; !ok || in.seq > b.seq {
					rooms[room][p.user] = in
				}
			}
		}
		p.mu.Unlock()
	}
	out := map[string]map[string]client.State{}
	for room, users := range rooms {
		out[room] = map[string]client.State{}
		for u, b := range users {
			out[room][u] = b.st
		}
	}
	return out
}

// viewsMatch is an eventually condition: every live peer's view of every
// room it has joined equals the truth (members, their status and meta,
// count), and typing equals wantTyping[room] (nil: nobody types) unless
// ignoreTyping.
func viewsMatch(peers []*peer, wantTyping map[string][]string, ignoreTyping bool) error {
	want := truth(peers)
	var errs []error
	for _, p := range peers {
		if p.isGone() {
			continue
		}
		p.mu.Lock()
		rooms := slices.Sorted(maps.Keys(p.intent))
		p.mu.Unlock()
		for _, room := range rooms {
			v, ok := p.view(room)
			if !ok || !v.Synced {
				errs = append(errs, fmt.Errorf("%s@%s: %s not synced", p.user, p.via, room))
				continue
			}
			if err := viewEquals(v, want[room]); err != nil {
				errs = append(errs, fmt.Errorf("%s@%s: %s: %w", p.user, p.via, room, err))
			}
			// The view changes before its event is read off the client's
			// channel: a match counts once the events are there too, so a
			// time taken after it is after every event that made it.
			if cur := p.lastCursor(room); cur != v.Cursor {
				errs = append(errs, fmt.Errorf("%s@%s: %s: events up to %q, the view is at %q", p.user, p.via, room, cur, v.Cursor))
			}
			if !ignoreTyping {
				got := slices.Sorted(slices.Values(v.Typing))
				w := slices.Sorted(slices.Values(wantTyping[room]))
				if !slices.Equal(got, w) {
					errs = append(errs, fmt.Errorf("%s@%s: %s: typing %q, want %q", p.user, p.via, room, got, w))
				}
			}
		}
	}
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("and %d more", len(errs)-5))
	}
	return errors.Join(errs...)
}

// viewEquals compares a view with the truth of its room.
func viewEquals(v client.View, want map[string]client.State) error {
	var diffs []string
	for u, st := range want {
		m, ok := v.Members[u]
		switch {
		case !ok:
			diffs = append(diffs, "missing "+u)
		case m.Status != st.Status || string(m.Meta) != string(st.Meta):
			diffs = append(diffs, fmt.Sprintf("%s is %s %s, want %s %s", u, m.Status, m.Meta, st.Status, st.Meta))
		}
	}
	for u := range v.Members {
		if _, ok := want[u]; !ok {
			diffs = append(diffs, "ghost "+u)
		}
	}
	if v.Count != len(want) {
		diffs = append(diffs, fmt.Sprintf("count %d, want %d", v.Count, len(want)))
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

// members is an eventually condition: p's view of room has exactly users.
func members(p *peer, room string, users ...string) error {
	v, ok := p.view(room)
	if !ok || !v.Synced {
		return fmt.Errorf("%s: %s not synced", p.user, room)
	}
	got := slices.Sorted(maps.Keys(v.Members))
	want := slices.Sorted(slices.Values(users))
	if !slices.Equal(got, want) || v.Count != len(want) {
		return fmt.Errorf("%s@%s: %s has %q (count %d), want %q", p.user, p.via, room, got, v.Count, want)
	}
	return nil
}

// noChanges fails when any of peers saw one of users join or leave room
// since t0.
func noChanges(peers []*peer, room string, since time.Time, users ...string) error {
	var errs []error
	for _, p := range peers {
		for _, u := range users {
			if ch := p.changes(room, u, since); len(ch) > 0 {
				errs = append(errs, fmt.Errorf("%s@%s saw %s: %s", p.user, p.via, room, strings.Join(ch, ", ")))
			}
		}
	}
	return errors.Join(errs...)
}

// all runs an eventually condition over several peers.
func all(peers []*peer, fn func(p *peer) error) error {
	var errs []error
	for _, p := range peers {
		if err := fn(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
