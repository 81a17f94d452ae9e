package redisbus

import (
	"strings"
	"time"
)

// Orphans are the peers' ids of a dataset Redis lost (RESET): absent from
// the new registry not because they were reaped but because Redis forgot
// them. They are alive until proven otherwise, like every lease after an
// outage of Redis for everyone (the judgement clock): an orphan is down
// when its node registers a new incarnation (DeathAnnounce: it retired
// itself), or when it has not done so one ttl after this node registered
// in the new dataset (DeathProbe: it died during the outage). Declaring
// them dead at once made a peer's members leave everywhere whenever that
// peer came back later than leave_grace after Redis did (its client's
// reconnection, a starved CPU).

// orphanLocked moves the ids live at the last round into orphans, when the
// round found that Redis lost its data (under roundMu). Deadlines start
// again at the next registration: Redis came back for everyone now.
func (l *liveness) orphanLocked() {
	l.mu.Lock()
	for id := range l.orphans {
		l.orphans[id] = time.Time{}
	}
	for id := range l.prevLive {
		if !l.self[id] && l.dead[id].IsZero() {
			l.orphans[id] = time.Time{}
		}
	}
	l.mu.Unlock()
	clear(l.prevLive)
}

// settleOrphansLocked runs after each successful round (under roundMu),
// live being the registry it returned: it reports down the orphans whose
// node registered again or whose deadline passed.
func (l *liveness) settleOrphansLocked(live map[string]bool, out *[]func()) {
	now := time.Now()
	var retired, expired []string
	l.mu.Lock()
	for id, deadline := range l.orphans {
		switch {
		case live[id]: // registered in this dataset after all
			delete(l.orphans, id)
		case liveIncarnation(live, id):
			delete(l.orphans, id)
			retired = append(retired, id)
		case deadline.IsZero():
			l.orphans[id] = now.Add(l.cfg.ttl)
		case now.After(deadline):
			delete(l.orphans, id)
			expired = append(expired, id)
		}
	}
	l.mu.Unlock()
	for _, id := range retired {
		l.declareLocked(id, DeathAnnounce, false, out)
	}
	// No node is the reaper of a lost dataset's id: every one tries, the
	// reaper's lock lets one delete what it wrote before it learnt.
	for _, id := range expired {
		l.declareLocked(id, DeathProbe, true, out)
	}
}

// retireOrphanLocked: id (a "hello" on ctl) is a new incarnation; the
// orphan of its node, if any, is down (under roundMu).
func (l *liveness) retireOrphanLocked(id string, out *[]func()) {
	var old []string
	l.mu.Lock()
	for o := range l.orphans {
		if o != id && nodeOf(o) == nodeOf(id) {
			delete(l.orphans, o)
			old = append(old, o)
		}
	}
	l.mu.Unlock()
	for _, o := range old {
		l.declareLocked(o, DeathAnnounce, false, out)
	}
}

// orphan: id is a peer's id of a dataset Redis lost, not yet settled. Its
// absence from a room in the new dataset says nothing of its members.
func (l *liveness) orphan(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.orphans[id]
	return ok
}

// hasOrphans: some orphan is not settled yet.
func (l *liveness) hasOrphans() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.orphans) > 0
}

// liveIncarnation: live holds another incarnation of id's node.
func liveIncarnation(live map[string]bool, id string) bool {
	for other := range live {
		if other != id && nodeOf(other) == nodeOf(id) {
			return true
		}
	}
	return false
}

// nodeOf is the node name of an id (node#epoch).
func nodeOf(id string) string {
	name, _, _ := strings.Cut(id, "#")
	return name
}
