package redisbus

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// receive subscribes the ctl channel and the expired events on the master
// of the {n} slot, and forwards what matters to the loop: an expired lease
// key kicks a round, ctl messages go to onCtl. A broken subscription is
// made again (in Cluster, on the slot's master of the moment); every
// (re-)subscription kicks a round (announcements before it are lost).
func (l *liveness) receive(ctx context.Context) {
	expired := "__keyevent@" + strconv.Itoa(l.cfg.db) + "__:expired"
	channels := []string{l.k.ctl()}
	if !l.cfg.noEvents {
		channels = append(channels, expired)
	}
	warned := false
	for ctx.Err() == nil {
		c, addr, err := l.eventsClient(ctx)
		if err == nil && !l.cfg.noEvents { // again on every subscription: a failover may have lost it
			var refused bool
			refused, err = l.enableEvents(ctx, c)
			if refused {
				if !warned {
					l.log.Warn("redisbus: cannot enable expired events (CONFIG refused): dead-node detection by probing only", "err", err)
					warned = true
				}
				err = nil
			}
		}
		if err == nil {
			ps := c.Subscribe(ctx, channels...)
			l.listen(ctx, ps, addr, expired)
			_ = ps.Close()
		} else if ctx.Err() == nil {
			l.log.Debug("redisbus: liveness subscription", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(l.period):
		}
	}
}

// eventsClient is the client of the {n} slot's master (Cluster) or the
// live client itself, and its address.
func (l *liveness) eventsClient(ctx context.Context) (redis.UniversalClient, string, error) {
	cc, ok := l.c.(*redis.ClusterClient)
	if !ok {
		return l.c, "", nil
	}
	rctx, cancel := context.WithTimeout(ctx, l.period)
	defer cancel()
	mc, err := cc.MasterForKey(rctx, l.k.gen())
	if err != nil {
		return nil, "", err
	}
	return mc, mc.Options().Addr, nil
}

// enableEvents makes sure notify-keyspace-events has E and x (or A),
// keeping the flags already set. refused: CONFIG failed on the server's
// side (renamed, forbidden), as opposed to a network error.
func (l *liveness) enableEvents(ctx context.Context, c redis.UniversalClient) (refused bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, l.period)
	defer cancel()
	cur, err := c.ConfigGet(rctx, "notify-keyspace-events").Result()
	if err == nil {
		flags := cur["notify-keyspace-events"]
		if merged := mergeEventFlags(flags); merged != flags {
			err = c.ConfigSet(rctx, "notify-keyspace-events", merged).Err()
			if err == nil {
				l.log.Info("redisbus: enabled expired events", "notify-keyspace-events", merged)
			}
		}
	}
	var re redis.Error
	return err != nil && errors.As(err, &re), err
}

// mergeEventFlags adds E (keyevent) and x (expired) to notify-keyspace-events
// flags unless present (A includes x).
func mergeEventFlags(flags string) string {
	out := flags
	if !strings.ContainsRune(flags, 'E') {
		out += "E"
	}
	if !strings.ContainsAny(flags, "xA") {
		out += "x"
	}
	return out
}

// listen reads ps until it breaks, ctx is done or (Cluster) the {n} slot
// moved to another master.
func (l *liveness) listen(ctx context.Context, ps *redis.PubSub, addr, expired string) {
	wait := min(l.period, 500*time.Millisecond)
	recheck := time.Now().Add(l.cfg.ttl)
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if addr != "" && time.Now().After(recheck) {
					recheck = time.Now().Add(l.cfg.ttl)
					if _, now, err := l.eventsClient(ctx); err == nil && now != addr {
						l.log.Info("redisbus: liveness slot moved", "from", addr, "to", now)
						return
					}
				}
				continue
			}
			if ctx.Err() == nil {
				l.log.Debug("redisbus: liveness subscription broken", "err", err)
			}
			return
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Channel == l.k.ctl() {
				// Announcements before it are lost: a round catches up.
				l.kickRound(DeathProbe)
			}
		case *redis.Message:
			switch {
			case m.Channel == expired:
				if strings.HasPrefix(m.Payload, l.k.leasePrefix()) {
					l.kickRound(DeathEvent)
				}
			case m.Channel == l.k.ctl() && strings.HasPrefix(m.Payload, "kick "):
				if l.onKick != nil {
					l.onKick(m.Payload)
				}
			case m.Channel == l.k.ctl():
				select {
				case l.ctlc <- m.Payload:
				default:
					l.log.Debug("redisbus: ctl queue full: dropped", "msg", m.Payload)
				}
			}
		}
	}
}

// kickRound asks the loop for a round now; how: what a death found by it
// counts as.
func (l *liveness) kickRound(how string) {
	select {
	case l.kick <- how:
	default:
	}
}

// onCtl handles "hello <id>" (a new registration: alive before my next
// round), "bye <id>", "gone <id>" (announced ends: run a round now) and
// "dead <id> <how>" (a peer reaped id).
func (l *liveness) onCtl(ctx context.Context, msg string) {
	f := strings.Fields(msg)
	if len(f) < 2 {
		return
	}
	id := f[1]
	var out []func()
	l.roundMu.Lock()
	if l.leaving || l.self[id] {
		again := !l.leaving && id == l.id() && f[0] == "dead"
		l.roundMu.Unlock()
		if again { // a peer reaped me: learn DEAD and register again now
			l.round(ctx, DeathProbe)
		}
		return
	}
	switch {
	case f[0] == "hello":
		l.mu.Lock()
		if l.dead[id].IsZero() {
			l.live[id] = true
			l.prevLive[id] = true
		}
		l.mu.Unlock()
		l.retireOrphanLocked(id, &out)
	case f[0] == "bye" || f[0] == "gone":
		l.declareLocked(id, DeathAnnounce, false, &out)
	case f[0] == "dead" && len(f) == 3 && (f[2] == DeathProbe || f[2] == DeathEvent):
		l.declareLocked(id, f[2], false, &out)
	}
	l.roundMu.Unlock()
	for _, fn := range out {
		fn()
	}
	if f[0] == "bye" || f[0] == "gone" {
		l.round(ctx, DeathProbe)
	}
}

// hasPeers: the last round (or a hello since) found another node live.
func (l *liveness) hasPeers() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.live {
		if !l.self[id] && l.dead[id].IsZero() {
			return true
		}
	}
	return false
}
