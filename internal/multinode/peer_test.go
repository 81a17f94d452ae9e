package multinode

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
)

// intentSeq orders the peers' state changes: the newest intent of a user
// wins when two of its peers disagree (as the nodes' versions do).
var intentSeq atomic.Uint64

// peer is one client of the Go SDK with an insecure user, the record of
// every event it got, and the state its test meant to give it (its
// intent), from which the truth is computed. Safe for concurrent use.
type peer struct {
	t    *testing.T
	user string         // static
	c    *client.Client // static
	via  string         // static: the URL dialled
	done chan struct{}  // closed when the event recorder has ended

	mu     sync.Mutex
	events []stamped         // guarded by mu
	intent map[string]intent // guarded by mu: room -> the state meant
	gone   bool              // guarded by mu: closed, or its node is dead: not part of the truth
}

type intent struct {
	st  client.State
	seq uint64
}

type stamped struct {
	at time.Time
	ev client.Event
}

// dial connects user to url (a node's /ws or a proxy in front of it).
// The client is closed in t's Cleanup.
func dial(t *testing.T, url, user string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{
		URL: url, User: user,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		DialTimeout: 3 * time.Second,
		EventBuffer: 1 << 15,
	})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", url, user, err)
	}
	p := &peer{t: t, user: user, c: c, via: url, done: make(chan struct{}), intent: map[string]intent{}}
	go func() {
		defer close(p.done)
		for ev := range c.Events() {
			p.mu.Lock()
			p.events = append(p.events, stamped{time.Now(), ev})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.close)
	return p
}

// close stops the client; the peer leaves the truth.
func (p *peer) close() {
	p.mu.Lock()
	p.gone = true
	p.mu.Unlock()
	_ = p.c.Close()
	<-p.done
}

// drop takes the peer out of the truth without closing it (its node died).
func (p *peer) drop() {
	p.mu.Lock()
	p.gone = true
	p.mu.Unlock()
}

func (p *peer) isGone() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone
}

// state is a state with a status and meta {"n":n}.
func state(status string, n int) client.State {
	return client.State{Status: status, Meta: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

func cmdCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// join joins room with st and waits for the ack; it fails the test on an
// error.
func (p *peer) join(room string, st client.State) {
	p.t.Helper()
	if err := p.tryJoin(room, st); err != nil {
		p.t.Fatalf("%s: join %s: %v", p.user, room, err)
	}
}

// tryJoin is join returning the error. The intent follows the SDK: the
// room is the client's from the call on, unless the server refused it.
func (p *peer) tryJoin(room string, st client.State) error {
	p.mu.Lock()
	old, had := p.intent[room]
	p.intent[room] = intent{st, intentSeq.Add(1)}
	p.mu.Unlock()
	ctx, cancel := cmdCtx()
	defer cancel()
	err := p.c.Join(ctx, room, &st)
	if _, refused := err.(*client.CommandError); refused {
		p.mu.Lock()
		if had {
			p.intent[room] = old
		} else {
			delete(p.intent, room)
		}
		p.mu.Unlock()
	}
	return err
}

func (p *peer) set(room string, st client.State) {
	p.t.Helper()
	if err := p.trySet(room, st); err != nil {
		p.t.Fatalf("%s: set %s: %v", p.user, room, err)
	}
}

func (p *peer) trySet(room string, st client.State) error {
	p.mu.Lock()
	old, had := p.intent[room]
	if had {
		p.intent[room] = intent{st, intentSeq.Add(1)}
	}
	p.mu.Unlock()
	ctx, cancel := cmdCtx()
	defer cancel()
	err := p.c.Set(ctx, room, st)
	if _, refused := err.(*client.CommandError); refused && had {
		p.mu.Lock()
		p.intent[room] = old
		p.mu.Unlock()
	}
	return err
}

func (p *peer) leave(room string) {
	p.t.Helper()
	if err := p.tryLeave(room); err != nil {
		p.t.Fatalf("%s: leave %s: %v", p.user, room, err)
	}
}

// tryLeave: the client forgets the room at once, and re-sends the leave
// after a reconnect.
func (p *peer) tryLeave(room string) error {
	p.mu.Lock()
	delete(p.intent, room)
	p.mu.Unlock()
	ctx, cancel := cmdCtx()
	defer cancel()
	return p.c.Leave(ctx, room)
}

func (p *peer) typing(room string, on bool) {
	p.t.Helper()
	if err := p.c.Typing(room, on); err != nil {
		p.t.Fatalf("%s: typing %s %v: %v", p.user, room, on, err)
	}
}

// view is the peer's view of room.
func (p *peer) view(room string) (client.View, bool) { return p.c.Room(room) }

// firstSync is the first sync of room the peer got, if any.
func (p *peer) firstSync(room string) (*client.Sync, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.events {
		if s.ev.Kind == client.EventSynced && s.ev.Room == room && s.ev.Sync != nil {
			return s.ev.Sync, true
		}
	}
	return nil, false
}

// lastCursor is the cursor of the last sync or diff of room the peer
// recorded.
func (p *peer) lastCursor(room string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.events) - 1; i >= 0; i-- {
		ev := p.events[i].ev
		if ev.Room != room {
			continue
		}
		switch {
		case ev.Kind == client.EventSynced && ev.Sync != nil:
			return ev.Sync.Cursor
		case ev.Kind == client.EventChanged && ev.Diff != nil:
			return ev.Diff.Cursor
		}
	}
	return ""
}

// changes describes every event of room since t0 that shows user leaving
// or joining: a diff listing them, or a full sync without them after they
// were seen (a sync with them after one without is a join).
func (p *peer) changes(room, user string, since time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	present, synced := false, false
	for _, s := range p.events {
		if s.ev.Room != room {
			continue
		}
		switch {
		case s.ev.Kind == client.EventSynced && s.ev.Sync != nil && !s.ev.Sync.Partial:
			in := slices.ContainsFunc(s.ev.Sync.Members, func(m client.Member) bool { return m.User == user })
			if synced && !s.at.Before(since) && in != present { // the first sync is where the view starts
				out = append(out, fmt.Sprintf("%s: sync with %s %v", s.at.Format("15:04:05.000"), user, in))
			}
			present, synced = in, true
		case s.ev.Kind == client.EventChanged && s.ev.Diff != nil:
			d := s.ev.Diff
			if slices.ContainsFunc(d.Join, func(m client.Member) bool { return m.User == user }) {
				if !s.at.Before(since) {
					out = append(out, fmt.Sprintf("%s: diff joins %s", s.at.Format("15:04:05.000"), user))
				}
				present = true
			}
			if slices.Contains(d.Leave, user) {
				if !s.at.Before(since) {
					out = append(out, fmt.Sprintf("%s: diff leaves %s", s.at.Format("15:04:05.000"), user))
				}
				present = false
			}
		}
	}
	return out
}

// disconnects counts the peer's lost connections.
func (p *peer) disconnects() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.events {
		if s.ev.Kind == client.EventDisconnected {
			n++
		}
	}
	return n
}

// awaitClose waits until the peer's connection was closed with code.
func (p *peer) awaitClose(timeout time.Duration, code client.CloseCode) {
	p.t.Helper()
	eventually(p.t, timeout, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, s := range p.events {
			if s.ev.Kind == client.EventDisconnected && s.ev.Close == code {
				return nil
			}
		}
		return fmt.Errorf("%s: no disconnect with close %d yet", p.user, code)
	})
}

// history lists p's events of room since t0, one line each, for failure
// reports.
func (p *peer) history(room string, since time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, s := range p.events {
		if s.at.Before(since) || (s.ev.Room != room && s.ev.Room != "") {
			continue
		}
		fmt.Fprintf(&b, "  %s %s %s", p.user, s.at.Format("15:04:05.000"), s.ev.Kind)
		switch {
		case s.ev.Sync != nil:
			var us []string
			for _, m := range s.ev.Sync.Members {
				us = append(us, m.User+"="+m.Status)
			}
			fmt.Fprintf(&b, " members %v count %d typing %v", us, s.ev.Sync.Count, s.ev.Sync.Typing)
		case s.ev.Diff != nil:
			d := s.ev.Diff
			var js, up []string
			for _, m := range d.Join {
				js = append(js, m.User+"="+m.Status)
			}
			for _, m := range d.Update {
				up = append(up, m.User+"="+m.Status)
			}
			fmt.Fprintf(&b, " join %v update %v leave %v count %d", js, up, d.Leave, d.Count)
			if d.TypingChanged {
				fmt.Fprintf(&b, " typing %v", d.Typing)
			}
		case s.ev.Err != nil:
			fmt.Fprintf(&b, " %v", s.ev.Err)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// histories is the history of rooms of every peer since t0.
func histories(peers []*peer, since time.Time, rooms ...string) string {
	var b strings.Builder
	for _, room := range rooms {
		fmt.Fprintf(&b, "events of %s since %s:\n", room, since.Format("15:04:05.000"))
		for _, p := range peers {
			b.WriteString(p.history(room, since))
		}
	}
	return b.String()
}
