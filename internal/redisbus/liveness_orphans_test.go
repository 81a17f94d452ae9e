package redisbus

import (
	"context"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/redistest"
)

// lostData stops b (a peer slow to come back), makes Redis lose its data
// and waits until a registered again; it returns b's old id and when a
// registered its new one.
func lostData(t *testing.T, s *redistest.Server, a, b *tnode) (oldB string, aBack time.Time) {
	t.Helper()
	waitRegistered(t, a, b)
	oldA, oldB := a.l.id(), b.l.id()
	b.stop()
	if err := s.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a registered again", func() bool {
		id := a.l.id()
		return id != oldA && !a.r.registeredAt(id).IsZero()
	})
	return oldB, a.r.registeredAt(a.l.id())
}

// Redis lost its data and a peer comes back after this node: its old id
// is not judged dead while it may still come back (the judgement clock's
// rule: after an outage of Redis for everyone, every node gets one ttl to
// renew); its new registration retires it (announce). Reporting it down at
// this node's registration made the peer's members leave everywhere when
// it came back later than leave_grace after Redis did.
func TestLivenessResetPeerBackLater(t *testing.T) {
	s := redistest.Start(t)
	const ttl = 3 * time.Second // generous: b must come back within it
	a := startNode(t, standalone(s), "a", ttl, nil)
	b := startNode(t, standalone(s), "b", ttl, nil)
	oldB, _ := lostData(t, s, a, b)
	if ds := a.r.downsOf(oldB); len(ds) != 0 {
		t.Fatalf("a reported b's old id down at its own registration, before b came back: %+v", ds)
	}
	bResumed := time.Now()
	b.resume()
	eventually(t, 10*time.Second, "a learns b's old id down", func() bool { return len(a.r.downsOf(oldB)) == 1 })
	d := a.r.downsOf(oldB)[0]
	if d.how != DeathAnnounce || d.reaper {
		t.Errorf("b's old id down as %+v, want announce, not the reaper", d)
	}
	if d.at.Before(bResumed) {
		t.Errorf("b's old id down at %v, before b came back (%v)", d.at.Format(time.StampMilli), bResumed.Format(time.StampMilli))
	}
	waitRegistered(t, a, b)
	if len(a.r.allDowns()) != 1 {
		t.Errorf("a's downs: %+v, want b's old id only", a.r.allDowns())
	}
}

// Redis lost its data and a peer never comes back (it died during the
// outage): its old id is down one ttl after this node registered again,
// no sooner.
func TestLivenessResetPeerGone(t *testing.T) {
	s := redistest.Start(t)
	const ttl = 600 * time.Millisecond
	a := startNode(t, standalone(s), "a", ttl, nil)
	b := startNode(t, standalone(s), "b", ttl, nil)
	oldB, aBack := lostData(t, s, a, b)
	eventually(t, 10*time.Second, "a learns b's old id down", func() bool { return len(a.r.downsOf(oldB)) == 1 })
	d := a.r.downsOf(oldB)[0]
	if d.how != DeathProbe || !d.reaper {
		t.Errorf("b's old id down as %+v, want probe, a reaper", d)
	}
	if waited := d.at.Sub(aBack); waited < ttl {
		t.Errorf("b's old id down %v after a registered again, want at least node ttl %v", waited, ttl)
	}
}
