package server_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/webhook"
	"github.com/presenced/presenced/internal/webhook/webhooktest"
)

// hookReceiver is a real HTTP receiver of webhooks.
type hookReceiver struct{ *webhooktest.Receiver }

func newHookReceiver(t *testing.T) *hookReceiver {
	return &hookReceiver{webhooktest.New(t, []byte("hook-secret"))}
}

// got lists the events received as "type room user".
func (r *hookReceiver) got() []string {
	var out []string
	for _, e := range r.Events() {
		out = append(out, strings.TrimSpace(e.Type+" "+e.Room+" "+e.User))
	}
	return out
}

func (r *hookReceiver) await(t *testing.T, want ...string) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		if got := r.got(); !slices.Equal(got, want) {
			return fmt.Errorf("events %q, want %q", got, want)
		}
		return nil
	})
}

// TestWebhooksSingleNode: a real receiver gets the room's transitions,
// signed, in order; a connection lost and back within leave_grace produces
// nothing; an explicit leave removes at once.
func TestWebhooksSingleNode(t *testing.T) {
	r := newHookReceiver(t)
	cfg := quickConfig("")
	cfg.Presence.LeaveGrace = 500 * time.Millisecond
	cfg.Webhook = &webhook.Config{URL: r.URL, Secret: r.Secret}
	n := startServer(t, cfg)
	join := func(c *wsClient) {
		c.send(`{"t":"join","id":1,"room":"r1"}`)
		c.expectMsg("ack")
	}
	ann := login(t, n, "ann")
	join(ann)
	r.await(t, "room_occupied r1", "member_added r1 ann")
	bob := login(t, n, "bob")
	join(bob)
	ann2 := login(t, n, "ann") // a second connection of ann: not a new member
	join(ann2)
	r.await(t, "room_occupied r1", "member_added r1 ann", "member_added r1 bob")

	// bob's connection is lost and back within the grace: no event.
	bob.drop()
	bob = login(t, n, "bob")
	join(bob)
	time.Sleep(cfg.Presence.LeaveGrace + 300*time.Millisecond)
	// ann's first connection leaves: ann2 holds her.
	ann.close()
	bob.close()
	ann2.close()
	r.await(t, "room_occupied r1", "member_added r1 ann", "member_added r1 bob",
		"member_removed r1 bob", "member_removed r1 ann", "room_vacated r1")
	ids := map[string]bool{}
	for _, e := range r.Events() {
		if ids[e.ID] || e.TS == 0 {
			t.Errorf("event %+v: id seen twice or no ts", e)
		}
		ids[e.ID] = true
	}
	// The receiver records a batch before the sender reads its answer and
	// counts it: wait for the count.
	eventually(t, 5*time.Second, func() error {
		if v := metric(t, n.reg, "presenced_webhook_events_total", "result", "sent"); v != 6 {
			return fmt.Errorf("presenced_webhook_events_total{result=sent} = %v, want 6", v)
		}
		return nil
	})
}
