package main

import (
	"context"
	"fmt"
	"time"
)

// The fan-out scenarios (fanout, typing, cluster) measure the changers'
// changes only: not the joins of the room's fill, which some servers push
// to every member, nor the backlog of them. A listener's view records the
// members it has seen; ready waits until the views are complete.

// markSeen records that listener c has seen member user of its room; the
// view is complete once it has seen them all.
func (sc *scenario) markSeen(c *client, user []byte) {
	cfg := sc.w.cfg
	r := c.g % cfg.rooms
	var i int
	if g, ok := memberIndex(user); ok && g < cfg.conns && g%cfg.rooms == r {
		i = g / cfg.rooms
	} else if k, ok := changerIndex(user); ok && k < cfg.changers && k%cfg.rooms == r {
		i = membersIn(cfg, r) + k/cfg.rooms
	} else {
		return
	}
	v := &c.view
	word, bit := i/64, uint64(1)<<(i%64)
	if v.seen[word]&bit != 0 {
		return
	}
	v.seen[word] |= bit
	v.nSeen++
	if !v.complete && v.nSeen == membersIn(cfg, r)+changersIn(cfg, r) {
		v.complete = true
		sc.viewsComplete.Add(1)
	}
}

// isDelivery reports whether a listener's member event counts as a
// delivery. With changers only their status changes count (typing counts
// its transitions in afterMessage): the joins of the room's fill, which
// some servers push to every member, are not what is measured.
func (sc *scenario) isDelivery(ev *event) bool {
	if sc.changers == 0 {
		return true
	}
	_, ok := changerIndex(ev.user)
	return ok && ev.kind == evChange
}

// awaitViews waits, in the scenarios with changers, until every owned
// listener has seen every member of its room, or until a second passes
// without a join event (a view that cannot complete: a room over
// presenced's -list-limit, a failed connection). Servers that push every
// join to every member (the baseline, Centrifugo) have then delivered the
// room's fill, which the measured phase would otherwise count and queue
// the changes behind.
func (sc *scenario) awaitViews(ctx context.Context) {
	w := sc.w
	if sc.changers == 0 {
		return
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last, quietSince := w.joinEvents.Load(), time.Now()
	for sc.viewsComplete.Load() < sc.listeners {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := w.joinEvents.Load(); n != last {
				last, quietSince = n, now
			} else if now.Sub(quietSince) >= time.Second {
				// Said, so that a run whose fill was cut short shows it
				// (Centrifugo always ends here: its subscribe reply lists
				// no members).
				fmt.Fprintf(w.stderr, "presence-load: ready after a quiet second: %d of %d listeners' views are complete\n",
					sc.viewsComplete.Load(), sc.listeners)
				return
			}
		}
	}
}
