package presence

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presenced/presenced/internal/wire"
)

// summary lists a diff's changes as sorted strings: "join u s {meta}",
// "update u s {meta}", "leave u", and "typing [a b]" when present.
func summary(e wire.Event) []string {
	var s []string
	for _, m := range e.Join {
		s = append(s, "join "+m.U+" "+m.S+" "+compact(m.M))
	}
	for _, m := range e.Update {
		s = append(s, "update "+m.U+" "+m.S+" "+compact(m.M))
	}
	for _, u := range e.Leave {
		s = append(s, "leave "+u)
	}
	if e.Typing != nil {
		s = append(s, fmt.Sprint("typing ", *e.Typing))
	}
	slices.Sort(s)
	return s
}

// diffs takes c's events, which must all be diffs, and returns their
// summaries.
func (c *client) diffs() [][]string {
	c.t.Helper()
	var out [][]string
	for _, e := range c.events() {
		if e.T != wire.TDiff {
			c.t.Fatalf("%s: got %s, want only diffs: %+v", c.name, e.T, e)
		}
		out = append(out, summary(e))
	}
	return out
}

// expectDiff checks that c got exactly one diff, with these changes.
func (c *client) expectDiff(want ...string) wire.Event {
	c.t.Helper()
	evs := c.expect("diff")
	slices.Sort(want)
	if got := summary(evs[0]); !slices.Equal(got, want) {
		c.t.Errorf("%s: diff %q, want %q", c.name, got, want)
	}
	return evs[0]
}

// checkView compares c's view of room with the room's actual state.
func (c *client) checkView(h *Hub, room string) {
	c.t.Helper()
	v := c.views[room]
	if v == nil {
		c.t.Errorf("%s: no view of %s", c.name, room)
		return
	}
	members, typing := roomState(h, room)
	if !sameMembers(v.members, members) {
		c.t.Errorf("%s: view of %s is %s, the room has %s", c.name, room, describe(v.members), describe(members))
	}
	if v.count != len(members) {
		c.t.Errorf("%s: view of %s counts %d, the room has %d members", c.name, room, v.count, len(members))
	}
	if fmt.Sprint(v.typing) != fmt.Sprint(typing) {
		c.t.Errorf("%s: view of %s has typing %v, the room published %v", c.name, room, v.typing, typing)
	}
}

func TestJoinAckThenSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		joins := &counter{}
		e := startHub(t, Config{Insecure: true, Metrics: Metrics{Joins: joins}})
		alice := dial(t, e.h, "alice")
		alice.join("r", 1, `{"status":"online","meta":{"name":"Alice"}}`)
		alice.expectNone() // the sync shows the published state: after the tick

		e.tick()
		s := alice.expect("sync")[0]
		if s.Room != "r" || s.Count != 1 || s.Partial || s.Typing == nil || len(*s.Typing) != 0 {
			t.Errorf("sync = %+v, want room r, count 1, typing [], not partial", s)
		}
		if got := fmt.Sprint(users(s.Members)); got != "[alice]" || compact(s.Members[0].M) != `{"name":"Alice"}` || s.Members[0].S != "online" {
			t.Errorf("sync members = %+v, want alice online {name: Alice}", s.Members)
		}
		c0, ok := wire.ParseCursor(s.Cur)
		if !ok {
			t.Fatalf("sync cur %q does not parse", s.Cur)
		}

		bob := dial(t, e.h, "bob")
		bob.join("r", 1, "")
		e.tick()
		d := alice.expectDiff(`join bob online {}`)
		if d.From != s.Cur || d.Count != 2 {
			t.Errorf("diff from %s count %d, want from %s count 2", d.From, d.Count, s.Cur)
		}
		c1, _ := wire.ParseCursor(d.Cur)
		if c1.Epoch != c0.Epoch || c1.Seq != c0.Seq+1 {
			t.Errorf("diff cur %v after %v, want the next seq of the same epoch", c1, c0)
		}
		bs := bob.expect("sync")[0]
		if bs.Cur != d.Cur || bs.Count != 2 || fmt.Sprint(users(bs.Members)) != "[alice bob]" {
			t.Errorf("bob's sync = %+v, want cur %s with alice and bob", bs, d.Cur)
		}
		if joins.value() != 2 {
			t.Errorf("Joins = %v, want 2", joins.value())
		}

		// A sync command answers at once when nothing is pending.
		bob.send(`{"t":"sync","id":2,"room":"r"}`)
		if evs := bob.expect("ack", "sync"); evs[1].Cur != d.Cur {
			t.Errorf("sync cur %s, want %s", evs[1].Cur, d.Cur)
		}
		// ...and after the diff that publishes what is.
		alice.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		alice.expect("ack")
		bob.send(`{"t":"sync","id":3,"room":"r"}`)
		bob.expect("ack")
		e.tick()
		alice.expectDiff(`update alice away {"name":"Alice"}`)
		evs := bob.expect("sync") // instead of the diff
		bob.checkView(e.h, "r")
		if evs[0].Cur != alice.views["r"].cur {
			t.Errorf("bob's sync cur %s, alice's cur %s", evs[0].Cur, alice.views["r"].cur)
		}
	})
}

func TestMultiConnectionUser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true})
		obs := dial(t, e.h, "obs")
		obs.join("r", 1, "")
		a1 := dial(t, e.h, "alice")
		a1.join("r", 1, `{"status":"busy"}`)
		e.tick()
		obs.events()
		a1.expect("sync")

		// The second connection adds no member and changes nothing: its
		// sync comes at once.
		a2 := dial(t, e.h, "alice")
		a2.send(`{"t":"join","id":1,"room":"r"}`)
		if s := a2.expect("ack", "sync")[1]; s.Count != 2 || a2.views["r"].members["alice"].S != "busy" {
			t.Errorf("second connection's sync = %+v, want 2 members, alice busy", s)
		}
		e.tick()
		obs.expectNone()
		if s := e.h.Stats(); s.Members != 2 || s.Sessions != 3 {
			t.Errorf("Stats = %+v, want 2 members, 3 sessions", s)
		}

		// The state is the one set last by any connection.
		a2.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		a2.expect("ack")
		e.tick()
		obs.expectDiff(`update alice away {}`)
		a1.expectDiff(`update alice away {}`)
		a2.expectDiff(`update alice away {}`)

		a1.send(`{"t":"leave","id":2,"room":"r"}`)
		a1.expect("ack")
		e.tick()
		obs.expectNone()
		a2.expectNone()

		a2.send(`{"t":"leave","id":3,"room":"r"}`)
		a2.expect("ack")
		e.tick()
		if d := obs.expectDiff(`leave alice`); d.Count != 1 {
			t.Errorf("count = %d, want 1", d.Count)
		}
		obs.checkView(e.h, "r")
	})
}

func TestCommandsIdempotent(t *testing.T) {
	tests := []struct {
		name    string
		join    string   // alice's state when she joined, in an earlier tick
		msgs    []string // alice's commands within one tick; each is acked
		wantObs []string // the observer's diff; nil: no diff
	}{
		{
			name:    "status only keeps meta",
			join:    `{"status":"online","meta":{"a":1}}`,
			msgs:    []string{`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`},
			wantObs: []string{`update alice away {"a":1}`},
		},
		{
			name:    "meta only keeps status",
			join:    `{"status":"busy","meta":{"a":1}}`,
			msgs:    []string{`{"t":"set","id":2,"room":"r","state":{"meta":{"b":[2]}}}`},
			wantObs: []string{`update alice busy {"b":[2]}`},
		},
		{
			name: "same state again",
			join: `{"status":"online","meta":{"a":1}}`,
			msgs: []string{`{"t":"set","id":2,"room":"r","state":{"status":"online","meta":{"a":1}}}`},
		},
		{
			name: "same meta with other spacing",
			join: `{"meta":{"a":1}}`,
			msgs: []string{`{"t":"set","id":2,"room":"r","state":{"meta":{ "a" : 1 }}}`},
		},
		{
			name: "set twice",
			join: `{"status":"online"}`,
			msgs: []string{
				`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`,
				`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`,
			},
			wantObs: []string{`update alice away {}`},
		},
		{
			name: "several updates send the last state",
			join: `{"status":"online"}`,
			msgs: []string{
				`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`,
				`{"t":"set","id":3,"room":"r","state":{"status":"busy","meta":{"x":1}}}`,
				`{"t":"set","id":4,"room":"r","state":{"status":"dnd"}}`,
			},
			wantObs: []string{`update alice dnd {"x":1}`},
		},
		{
			name: "updates back to the first state",
			join: `{"status":"online"}`,
			msgs: []string{
				`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`,
				`{"t":"set","id":3,"room":"r","state":{"status":"online"}}`,
			},
		},
		{
			name: "empty meta is no meta",
			join: `{"status":"online"}`,
			msgs: []string{`{"t":"set","id":2,"room":"r","state":{"meta":{}}}`},
		},
		{
			name:    "empty meta clears meta",
			join:    `{"meta":{"a":1}}`,
			msgs:    []string{`{"t":"set","id":2,"room":"r","state":{"meta":{ }}}`},
			wantObs: []string{`update alice online {}`},
		},
		{
			name: "null meta keeps meta",
			join: `{"meta":{"a":1}}`,
			msgs: []string{`{"t":"set","id":2,"room":"r","state":{"meta":null}}`},
		},
		{
			name: "duplicate join",
			join: `{"status":"online"}`,
			msgs: []string{`{"t":"join","id":2,"room":"r","state":{"status":"online"}}`},
		},
		{
			name:    "duplicate join with a new state",
			join:    `{"status":"online"}`,
			msgs:    []string{`{"t":"join","id":2,"room":"r","state":{"status":"away"}}`},
			wantObs: []string{`update alice away {}`},
		},
		{
			name: "leave twice",
			msgs: []string{
				`{"t":"leave","id":2,"room":"r"}`,
				`{"t":"leave","id":3,"room":"r"}`,
			},
			wantObs: []string{`leave alice`},
		},
		{
			name: "leave then join again",
			join: `{"status":"online"}`,
			msgs: []string{
				`{"t":"leave","id":2,"room":"r"}`,
				`{"t":"join","id":3,"room":"r"}`,
			},
		},
		{
			name: "leave then join again with a new state",
			join: `{"status":"online"}`,
			msgs: []string{
				`{"t":"leave","id":2,"room":"r"}`,
				`{"t":"join","id":3,"room":"r","state":{"status":"away"}}`,
			},
			wantObs: []string{`update alice away {}`},
		},
		{
			name: "leave of a room not joined",
			msgs: []string{`{"t":"leave","id":2,"room":"elsewhere"}`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := startHub(t, Config{Insecure: true})
				obs := dial(t, e.h, "obs")
				obs.join("r", 1, "")
				alice := dial(t, e.h, "alice")
				alice.join("r", 1, tt.join)
				e.tick()
				obs.events()
				alice.events()
				before := obs.views["r"].cur

				for _, m := range tt.msgs {
					alice.send(m)
					var c wire.Command
					if err := wire.DecodeCommand([]byte(m), &c); err != nil {
						t.Fatal(err)
					}
					if evs := alice.events(); len(evs) == 0 || evs[0].T != wire.TAck || evs[0].ID != c.ID {
						t.Fatalf("%s: %+v, want ack %d", m, evs, c.ID)
					}
				}
				e.tick()
				got := obs.diffs()
				switch {
				case tt.wantObs == nil && len(got) != 0:
					t.Errorf("observer got diffs %q, want none", got)
				case tt.wantObs != nil && (len(got) != 1 || !slices.Equal(got[0], tt.wantObs)):
					t.Errorf("observer got diffs %q, want one: %q", got, tt.wantObs)
				}
				if tt.wantObs == nil && obs.views["r"].cur != before {
					t.Errorf("cursor moved from %s to %s without a diff", before, obs.views["r"].cur)
				}
				obs.checkView(e.h, "r")
				if alice.s.findSub("r") != nil {
					alice.events()
					alice.checkView(e.h, "r")
				}
			})
		})
	}
}

func TestCoalescing(t *testing.T) {
	type step struct {
		who string // bob or carol
		msg string
	}
	tests := []struct {
		name      string
		before    []step // applied in an earlier tick
		steps     []step // applied within one tick
		wantObs   []string
		wantCount int
		merged    bool // changes of one member merged within the tick (Coalesced)
	}{
		{
			name:      "join then leave sends nothing",
			steps:     []step{{"bob", `{"t":"join","id":1,"room":"r"}`}, {"bob", `{"t":"leave","id":2,"room":"r"}`}},
			wantCount: 1,
			merged:    true,
		},
		{
			name:      "two joins in one diff",
			steps:     []step{{"bob", `{"t":"join","id":1,"room":"r"}`}, {"carol", `{"t":"join","id":1,"room":"r","state":{"status":"away"}}`}},
			wantObs:   []string{"join bob online {}", "join carol away {}"},
			wantCount: 3,
		},
		{
			name:      "join then set is a join with the last state",
			steps:     []step{{"bob", `{"t":"join","id":1,"room":"r"}`}, {"bob", `{"t":"set","id":2,"room":"r","state":{"status":"busy","meta":{"k":"v"}}}`}},
			wantObs:   []string{`join bob busy {"k":"v"}`},
			wantCount: 2,
			merged:    true,
		},
		{
			name:      "leave then join again sends nothing",
			before:    []step{{"bob", `{"t":"join","id":1,"room":"r"}`}},
			steps:     []step{{"bob", `{"t":"leave","id":2,"room":"r"}`}, {"bob", `{"t":"join","id":3,"room":"r"}`}},
			wantCount: 2,
			merged:    true,
		},
		{
			name:   "update then leave is a leave",
			before: []step{{"bob", `{"t":"join","id":1,"room":"r"}`}, {"carol", `{"t":"join","id":1,"room":"r"}`}},
			steps: []step{
				{"bob", `{"t":"set","id":2,"room":"r","state":{"status":"away"}}`},
				{"bob", `{"t":"leave","id":3,"room":"r"}`},
				{"carol", `{"t":"set","id":2,"room":"r","state":{"status":"away"}}`},
			},
			wantObs:   []string{"leave bob", "update carol away {}"},
			wantCount: 2,
			merged:    true,
		},
		{
			name:   "typing flaps send the final set",
			before: []step{{"bob", `{"t":"join","id":1,"room":"r"}`}},
			steps: []step{
				{"bob", `{"t":"typing","room":"r","on":true}`},
				{"bob", `{"t":"typing","room":"r","on":false}`},
				{"bob", `{"t":"typing","room":"r","on":true}`},
			},
			wantObs:   []string{"typing [bob]"},
			wantCount: 2,
		},
		{
			name:   "typing on then off sends nothing",
			before: []step{{"bob", `{"t":"join","id":1,"room":"r"}`}},
			steps: []step{
				{"bob", `{"t":"typing","room":"r","on":true}`},
				{"bob", `{"t":"typing","room":"r","on":false}`},
			},
			wantCount: 2,
		},
		{
			name:   "join with typing",
			before: []step{{"carol", `{"t":"join","id":1,"room":"r"}`}},
			steps: []step{
				{"bob", `{"t":"join","id":1,"room":"r"}`},
				{"bob", `{"t":"typing","room":"r","on":true}`},
				{"carol", `{"t":"typing","room":"r","on":true}`},
			},
			wantObs:   []string{"join bob online {}", "typing [bob carol]"},
			wantCount: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				coalesced := &counter{}
				e := startHub(t, Config{Insecure: true, Metrics: Metrics{Coalesced: coalesced}})
				obs := dial(t, e.h, "obs")
				obs.join("r", 1, "")
				cs := map[string]*client{"bob": dial(t, e.h, "bob"), "carol": dial(t, e.h, "carol")}
				run := func(steps []step) {
					for _, s := range steps {
						cs[s.who].send(s.msg)
					}
				}
				run(tt.before)
				e.tick()
				obs.events()
				before := obs.views["r"].cur

				run(tt.steps)
				e.tick()
				got := obs.diffs()
				switch {
				case tt.wantObs == nil && len(got) != 0:
					t.Errorf("observer got diffs %q, want none", got)
				case tt.wantObs != nil && (len(got) != 1 || !slices.Equal(got[0], tt.wantObs)):
					t.Errorf("observer got diffs %q, want one: %q", got, tt.wantObs)
				}
				if tt.wantObs == nil && obs.views["r"].cur != before {
					t.Errorf("cursor moved from %s to %s without a diff", before, obs.views["r"].cur)
				}
				if c := obs.views["r"].count; c != tt.wantCount {
					t.Errorf("count = %d, want %d", c, tt.wantCount)
				}
				obs.checkView(e.h, "r")
				if got := coalesced.value() > 0; got != tt.merged {
					t.Errorf("Coalesced = %v, want merges counted: %v", coalesced.value(), tt.merged)
				}
			})
		})
	}
}

func TestTyping(t *testing.T) {
	const ttl = time.Second
	setup := func(t *testing.T, typing *counter) (*env, *client, *client) {
		e := startHub(t, Config{Insecure: true, TypingTTL: ttl, Metrics: Metrics{TypingEvents: typing}})
		obs := dial(t, e.h, "obs")
		obs.join("r", 1, "")
		bob := dial(t, e.h, "bob")
		bob.join("r", 1, "")
		e.tick()
		obs.events()
		bob.events()
		return e, obs, bob
	}

	t.Run("expires after the TTL", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			typing := &counter{}
			e, obs, bob := setup(t, typing)
			start := time.Now()
			bob.send(`{"t":"typing","room":"r","on":true}`)
			bob.expectNone() // typing has no answer
			e.tick()
			obs.expectDiff("typing [bob]")
			// A joiner's sync shows who types.
			carol := dial(t, e.h, "carol")
			carol.join("r", 1, "")
			e.tick()
			if s := carol.expect("sync")[0]; fmt.Sprint(*s.Typing) != "[bob]" {
				t.Errorf("sync typing = %v, want [bob]", *s.Typing)
			}
			obs.expectDiff("join carol online {}")

			e.sleep(ttl - time.Since(start) - e.h.cfg.Tick/2) // the last tick before the TTL
			obs.expectNone()
			e.tick()
			obs.expectDiff("typing []")
			carol.expectDiff("typing []")
			if typing.value() != 1 {
				t.Errorf("TypingEvents = %v, want 1", typing.value())
			}
		})
	})

	t.Run("typing on again extends it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e, obs, bob := setup(t, nil)
			bob.send(`{"t":"typing","room":"r","on":true}`)
			e.tick()
			obs.expectDiff("typing [bob]")
			e.sleep(ttl / 2)
			bob.send(`{"t":"typing","room":"r","on":true}`)
			e.sleep(ttl / 2) // past the first typing's TTL
			obs.expectNone()
			e.sleep(ttl / 2) // the second one's TTL: the last tick was just before
			obs.expectNone()
			e.tick()
			obs.expectDiff("typing []")
		})
	})

	t.Run("explicit off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e, obs, bob := setup(t, nil)
			bob.send(`{"t":"typing","room":"r","on":true}`)
			e.tick()
			obs.expectDiff("typing [bob]")
			bob.send(`{"t":"typing","room":"r","on":false}`)
			e.tick()
			obs.expectDiff("typing []")
			bob.send(`{"t":"typing","room":"r","on":false}`)
			e.tick()
			obs.expectNone()
		})
	})

	t.Run("leave clears typing", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e, obs, bob := setup(t, nil)
			bob.send(`{"t":"typing","room":"r","on":true}`)
			e.tick()
			obs.expectDiff("typing [bob]")
			bob.send(`{"t":"leave","id":2,"room":"r"}`)
			e.tick()
			obs.expectDiff("leave bob", "typing []")
			obs.checkView(e.h, "r")
		})
	})

	t.Run("at most 10 typing users", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e, obs, _ := setup(t, nil)
			var names []string
			var cs []*client
			for i := range 12 {
				n := fmt.Sprintf("t%02d", i)
				c := dial(t, e.h, n)
				c.join("r", 1, "")
				names = append(names, n)
				cs = append(cs, c)
			}
			e.tick()
			obs.events()
			for _, c := range cs {
				c.send(`{"t":"typing","room":"r","on":true}`)
			}
			e.tick()
			d := obs.expect("diff")[0]
			if d.Typing == nil || !slices.Equal(*d.Typing, names[:10]) {
				t.Errorf("typing = %v, want the first 10 to start: %v", d.Typing, names[:10])
			}
			// One stops: the 11th shows up.
			cs[0].send(`{"t":"typing","room":"r","on":false}`)
			e.tick()
			d = obs.expect("diff")[0]
			if d.Typing == nil || !slices.Equal(*d.Typing, names[1:11]) {
				t.Errorf("typing = %v, want %v", d.Typing, names[1:11])
			}
			// The 12th stopping changes nothing visible.
			cs[11].send(`{"t":"typing","room":"r","on":false}`)
			e.tick()
			obs.expectNone()
			late := dial(t, e.h, "late")
			late.join("r", 1, "")
			e.tick()
			if s := late.expect("sync")[0]; len(*s.Typing) != 10 {
				t.Errorf("sync typing = %v, want 10 users", *s.Typing)
			}
		})
	})
}

func TestLeaveGrace(t *testing.T) {
	const grace = 2 * time.Second
	tests := []struct {
		name      string
		lose      func(c *client) // how bob's connection ends; HandleClose follows
		clean     bool            // the client closed with 1000 (else the connection is lost)
		wantClose wire.CloseCode  // the code bob's session closed with, 0 if none
		rejoin    string          // "" none; else the state (or "{}") of a new connection of bob within the grace
		wantObs   [][]string      // the observer's diffs, in order, over 5 s
		wantGrace bool            // the leave comes after the grace, not at the next tick
	}{
		{
			name:      "connection lost",
			lose:      func(*client) {},
			wantObs:   [][]string{{"leave bob"}},
			wantGrace: true,
		},
		{
			name:   "connection lost, rejoined with the same state",
			lose:   func(*client) {},
			rejoin: `{"status":"online"}`,
		},
		{
			name:   "connection lost, rejoined without state",
			lose:   func(*client) {},
			rejoin: `{}`,
		},
		{
			name:    "connection lost, rejoined with a new state",
			lose:    func(*client) {},
			rejoin:  `{"status":"away"}`,
			wantObs: [][]string{{"update bob away {}"}},
		},
		{
			name:    "clean close",
			lose:    func(*client) {},
			clean:   true,
			wantObs: [][]string{{"leave bob"}},
		},
		{
			name:    "clean close, rejoined",
			lose:    func(*client) {},
			clean:   true,
			rejoin:  `{"status":"online"}`,
			wantObs: [][]string{{"leave bob"}, {"join bob online {}"}},
		},
		{
			name:      "binary message closes 1003",
			lose:      func(c *client) { c.s.HandleBinary() },
			wantClose: wire.CloseUnsupported,
			wantObs:   [][]string{{"leave bob"}},
		},
		{
			name:      "invalid JSON closes 1007",
			lose:      func(c *client) { c.send(`{"t":`) },
			wantClose: wire.CloseInvalidPayload,
			wantObs:   [][]string{{"leave bob"}},
		},
		{
			name:      "drain closes 1001",
			lose:      func(c *client) { c.s.bye() }, // what Drain does to each session (no window: retry_ms 0)
			wantClose: wire.CloseGoingAway,
			wantObs:   [][]string{{"leave bob"}},
			wantGrace: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				leaves := &counter{}
				e := startHub(t, Config{Insecure: true, LeaveGrace: grace, Metrics: Metrics{Leaves: leaves}})
				obs := dial(t, e.h, "obs")
				obs.join("r", 1, "")
				bob := dial(t, e.h, "bob")
				bob.join("r", 1, `{"status":"online"}`)
				e.tick()
				obs.events()

				tt.lose(bob)
				if got := bob.lastClose(); got != tt.wantClose {
					t.Errorf("bob's close = %v, want %v", got, tt.wantClose)
				}
				lost := time.Now()
				bob.s.HandleClose(endOf(tt.clean))
				obs.events() // a drain's bye

				var got [][]string
				var leaveAt time.Duration
				for range 50 { // 5 s
					if tt.rejoin != "" && time.Since(lost) == grace/2 {
						b2 := dial(t, e.h, "bob")
						b2.join("r", 1, tt.rejoin)
					}
					e.tick()
					for _, d := range obs.diffs() {
						got = append(got, d)
						if slices.Contains(d, "leave bob") {
							leaveAt = time.Since(lost)
						}
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.wantObs) {
					t.Errorf("observer's diffs %q, want %q", got, tt.wantObs)
				}
				if leaveAt != 0 {
					// Observed once per tick, half a tick after it ran.
					wantAt := e.h.cfg.Tick // the next tick
					if tt.wantGrace {
						wantAt = grace + e.h.cfg.Tick // the first tick at or after the grace ends
					}
					if leaveAt != wantAt {
						t.Errorf("leave published %v after the loss, want %v", leaveAt, wantAt)
					}
				}
				wantLeaves := 0
				for _, d := range tt.wantObs {
					if slices.Contains(d, "leave bob") {
						wantLeaves++
					}
				}
				if leaves.value() != float64(wantLeaves) {
					t.Errorf("Leaves = %v, want %d", leaves.value(), wantLeaves)
				}
				obs.checkView(e.h, "r")
			})
		})
	}
}

// TestModel drives random commands from several connections over many
// ticks, with outboxes that fill up and drain and connections that are lost
// and resumed: each connection's diffs chain (from equals its previous cur,
// checked by client.apply), and the view of every connection whose outbox
// is not full, built from its syncs and diffs, equals the room's actual
// members and published typing after every tick.
func TestModel(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 42))
				attempts, successes := &counter{}, &counter{}
				e := startHub(t, Config{Insecure: true, Rate: 1e6, Burst: 1e6, SlowTimeout: time.Hour,
					LeaveGrace: 500 * time.Millisecond, TypingTTL: 300 * time.Millisecond, History: 8,
					Metrics: Metrics{ResumeAttempts: attempts, ResumeSuccesses: successes}})
				rooms := []string{"a", "b"}
				statuses := []string{"online", "away", "busy"}
				metas := []string{``, `{}`, `{"n":1}`, `{"n":2,"x":"y"}`}
				var live []*client
				state := func() string {
					if rng.IntN(4) == 0 {
						return ""
					}
					var parts []string
					if rng.IntN(2) == 0 {
						parts = append(parts, fmt.Sprintf(`"status":%q`, statuses[rng.IntN(len(statuses))]))
					}
					if m := metas[rng.IntN(len(metas))]; m != "" {
						parts = append(parts, `"meta":`+m)
					}
					return "{" + strings.Join(parts, ",") + "}"
				}
				id := 0
				for tick := range 600 {
					for range rng.IntN(6) {
						if len(live) == 0 || rng.IntN(8) == 0 && len(live) < 8 {
							live = append(live, dial(t, e.h, fmt.Sprintf("u%d", rng.IntN(5))))
							continue
						}
						i := rng.IntN(len(live))
						c := live[i]
						room := rooms[rng.IntN(len(rooms))]
						id++
						switch op := rng.IntN(24); {
						case op < 6:
							if st := state(); st == "" {
								c.send(`{"t":"join","id":%d,"room":%q}`, id, room)
							} else {
								c.send(`{"t":"join","id":%d,"room":%q,"state":%s}`, id, room, st)
							}
						case op < 10:
							c.send(`{"t":"leave","id":%d,"room":%q}`, id, room)
						case op < 14:
							st := state()
							if st == "" {
								st = "{}"
							}
							c.send(`{"t":"set","id":%d,"room":%q,"state":%s}`, id, room, st)
						case op < 16:
							c.send(`{"t":"typing","room":%q,"on":%v}`, room, rng.IntN(3) != 0)
						case op < 17:
							c.send(`{"t":"sync","id":%d,"room":%q}`, id, room)
						case op < 19:
							c.sink.setFull(!c.sink.isFull())
						case op < 21:
							// Lost, and back at once with the cursors it has.
							var resume []string
							for _, r := range rooms {
								if v := c.views[r]; v != nil && c.s.findSub(r) != nil {
									resume = append(resume, fmt.Sprintf("%q:%q", r, v.cur))
								}
							}
							c.s.HandleClose(endLost)
							nc := open(t, e.h, c.name)
							nc.views = c.views
							nc.send(`{"t":"hello","v":1,"user":%q,"resume":{%s}}`, c.name, strings.Join(resume, ","))
							live[i] = nc
						default:
							c.s.HandleClose(endOf(rng.IntN(2) == 0))
							live = slices.Delete(live, i, i+1)
						}
					}
					e.tick()
					for _, c := range live {
						for _, ev := range c.events() {
							if ev.T == wire.TErr && ev.Code != wire.ErrCodeNotJoined {
								t.Fatalf("tick %d: %s got %+v", tick, c.name, ev)
							}
						}
						if c.sink.isFull() {
							continue // its view is behind, marked for a sync
						}
						for _, room := range rooms {
							if c.s.findSub(room) != nil {
								c.checkView(e.h, room)
							}
						}
					}
					if t.Failed() {
						t.Fatalf("tick %d: views differ from the rooms", tick)
					}
				}
				t.Logf("resumed %v of %v rooms with a diff", successes.value(), attempts.value())
				if successes.value() == 0 {
					t.Errorf("resumes: none of %v with a diff", attempts.value())
				}
				for _, c := range live {
					c.s.HandleClose(endNormal)
				}
				e.sleep(time.Second)
				if s := e.h.Stats(); s != (Stats{}) {
					t.Errorf("Stats after everyone left = %+v, want zero", s)
				}
			})
		})
	}
}

func TestResume(t *testing.T) {
	tests := []struct {
		name       string
		history    int
		cleanClose bool                    // bob's connection closes with 1000 (no grace)
		between    func(e *env, c *client) // changes while bob is away; c is alice
		cursor     func(saved string) string
		state      string // hello's state, "" for none
		wantDiff   bool   // resumed with a diff; else a sync
		wantResume []string
		wantAlice  [][]string // alice's diffs after the resume; nil: none
	}{
		{
			name: "missed changes",
			between: func(e *env, alice *client) {
				carol := dial(e.t, e.h, "carol")
				carol.join("r", 1, `{"meta":{"c":3}}`)
				dave := dial(e.t, e.h, "dave")
				dave.join("r", 1, "")
				e.tick()
				alice.send(`{"t":"set","id":5,"room":"r","state":{"status":"away"}}`)
				dave.send(`{"t":"leave","id":2,"room":"r"}`)
				e.tick()
				alice.send(`{"t":"typing","room":"r","on":true}`)
				e.tick()
			},
			wantDiff:   true,
			wantResume: []string{`join carol online {"c":3}`, "update alice away {}", "typing [alice]"},
		},
		{
			name:       "nothing missed",
			between:    func(e *env, _ *client) { e.ticks(3) },
			wantDiff:   true,
			wantResume: []string{"typing []"},
		},
		{
			name: "a member left and came back",
			between: func(e *env, alice *client) {
				alice.send(`{"t":"leave","id":5,"room":"r"}`)
				e.tick()
				alice.send(`{"t":"join","id":6,"room":"r","state":{"status":"busy"}}`)
				e.tick()
			},
			wantDiff:   true,
			wantResume: []string{"update alice busy {}", "typing []"},
		},
		{
			name: "history older than HistoryAge",
			between: func(e *env, alice *client) {
				alice.send(`{"t":"set","id":5,"room":"r","state":{"status":"away"}}`)
				e.sleep(e.h.cfg.HistoryAge + time.Second)
				alice.send(`{"t":"set","id":6,"room":"r","state":{"status":"busy"}}`) // the change that drops old versions
				e.tick()
			},
			wantDiff:  false,
			wantAlice: [][]string{{"join bob online {}"}}, // his grace ended meanwhile
		},
		{
			// No change in the room: the history sweep drops the
			// versions once HistoryAge passes, so the cursor is no longer
			// covered (bob's leave would resume with a diff otherwise).
			name:       "idle room's history older than HistoryAge",
			cleanClose: true,
			between:    func(e *env, _ *client) { e.sleep(e.h.cfg.HistoryAge + sweepEvery(&e.h.cfg) + time.Second) },
			wantDiff:   false,
		},
		{
			name:     "garbage cursor",
			between:  func(e *env, _ *client) { e.tick() },
			cursor:   func(string) string { return "not a cursor" },
			wantDiff: false,
		},
		{
			name:     "no cursor",
			between:  func(e *env, _ *client) { e.tick() },
			cursor:   func(string) string { return "" },
			wantDiff: false,
		},
		{
			name:    "cursor from the future",
			between: func(e *env, _ *client) { e.tick() },
			cursor: func(s string) string {
				c, _ := wire.ParseCursor(s)
				c.Seq += 5
				return c.String()
			},
			wantDiff: false,
		},
		{
			name:       "history just covers the cursor",
			history:    4,
			between:    toggles(4),
			wantDiff:   true,
			wantResume: []string{"update alice s3 {}", "typing []"},
		},
		{
			name:     "cursor evicted from the history",
			history:  4,
			between:  toggles(5),
			wantDiff: false,
		},
		{
			name:       "room emptied and created again",
			cleanClose: true,
			between: func(e *env, alice *client) {
				alice.send(`{"t":"leave","id":5,"room":"r"}`)
				e.tick() // the room is dropped
				alice.send(`{"t":"join","id":6,"room":"r"}`)
				e.tick()
			},
			wantDiff: false,
		},
		{
			name:       "resume with a new state",
			between:    func(e *env, _ *client) { e.tick() },
			state:      `{"status":"away"}`,
			wantDiff:   true,
			wantResume: []string{"typing []"},
			wantAlice:  [][]string{{"update bob away {}"}},
		},
		{
			// The resume diff shows the published state: bob's leave, and
			// the count without him; his join follows with the next tick.
			name:       "leave grace over before the resume",
			between:    func(e *env, _ *client) { e.sleep(e.h.cfg.LeaveGrace + time.Second) },
			wantDiff:   true,
			wantResume: []string{"leave bob", "typing []"},
			wantAlice:  [][]string{{"join bob online {}"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				attempts, successes := &counter{}, &counter{}
				e := startHub(t, Config{Insecure: true, History: tt.history,
					Metrics: Metrics{ResumeAttempts: attempts, ResumeSuccesses: successes}})
				alice := dial(t, e.h, "alice")
				alice.join("r", 1, "")
				bob := dial(t, e.h, "bob")
				bob.join("r", 1, "")
				e.tick()
				alice.events()
				bob.events()
				saved := bob.views["r"].cur
				bob.s.HandleClose(endOf(tt.cleanClose))
				tt.between(e, alice)
				alice.events()

				cursor := saved
				if tt.cursor != nil {
					cursor = tt.cursor(saved)
				}
				b2 := open(t, e.h, "bob2")
				b2.views = bob.views // it continues from bob's cursor
				hello := fmt.Sprintf(`{"t":"hello","v":1,"user":"bob","resume":{"r":%q}}`, cursor)
				if tt.state != "" {
					hello = hello[:len(hello)-1] + `,"state":` + tt.state + `}`
				}
				b2.send(hello)
				first := b2.events()
				// The resume diff shows the published state at its cur.
				if v := b2.views["r"]; tt.wantDiff && v.count != len(v.members) {
					t.Errorf("after the resume diff: count %d with %d members %s", v.count, len(v.members), describe(v.members))
				}
				e.tick()
				next := b2.events()
				if tt.wantDiff {
					if got := typesOf(first); !slices.Equal(got, []string{"welcome", "diff"}) {
						t.Fatalf("after hello: %v, want welcome then a diff", got)
					}
					d := first[1]
					if d.From != saved {
						t.Errorf("resume diff from %s, want the client's cursor %s", d.From, saved)
					}
					want := slices.Clone(tt.wantResume)
					slices.Sort(want)
					if got := summary(d); !slices.Equal(got, want) {
						t.Errorf("resume diff %q, want %q", got, want)
					}
					if successes.value() != 1 {
						t.Errorf("ResumeSuccesses = %v, want 1", successes.value())
					}
				} else {
					all := append(first, next...)
					if len(all) < 2 || all[0].T != wire.TWelcome || all[1].T != wire.TSync {
						t.Fatalf("after hello: %v, want welcome then a sync", typesOf(all))
					}
					if successes.value() != 0 {
						t.Errorf("ResumeSuccesses = %v, want 0", successes.value())
					}
				}
				if attempts.value() != 1 {
					t.Errorf("ResumeAttempts = %v, want 1", attempts.value())
				}
				b2.checkView(e.h, "r")

				// Bob never left: alice saw no leave or join of bob, only
				// the update of his new state.
				if got := alice.diffs(); fmt.Sprint(got) != fmt.Sprint(tt.wantAlice) && !tt.cleanClose {
					t.Errorf("alice's diffs after the resume %q, want %q", got, tt.wantAlice)
				}
				alice.checkView(e.h, "r")

				// The chain goes on.
				alice.send(`{"t":"set","id":9,"room":"r","state":{"status":"dnd"}}`)
				e.tick()
				b2.expectDiff("update alice dnd {}")
				b2.checkView(e.h, "r")
			})
		})
	}
}

// toggles makes alice change her status n times, one version per tick:
// s0, s1, ...
func toggles(n int) func(e *env, alice *client) {
	return func(e *env, alice *client) {
		for i := range n {
			alice.send(`{"t":"set","id":%d,"room":"r","state":{"status":"s%d"}}`, 10+i, i)
			e.tick()
		}
	}
}

// TestResumeListLimit: diffs of rooms over list_limit carry no member
// lists, and crossing the limit sends everyone a sync; a partial view is
// never continued with a diff, so a resume in or across a partial room is a
// sync (else the client would keep a wrong member list and a stale partial
// flag).
func TestResumeListLimit(t *testing.T) {
	tests := []struct {
		name        string
		before      int // members when bob's connection is lost, bob included
		after       int // members when bob resumes
		wantDiff    bool
		wantPartial bool
	}{
		{name: "room grew past the limit", before: 3, after: 5, wantPartial: true},
		{name: "room shrank to the limit", before: 5, after: 3, wantPartial: false},
		{name: "room stayed over the limit", before: 4, after: 6, wantPartial: true}, // a partial view is never continued
		{name: "room stayed within the limit", before: 2, after: 3, wantDiff: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				successes := &counter{}
				e := startHub(t, Config{Insecure: true, ListLimit: 3, Metrics: Metrics{ResumeSuccesses: successes}})
				var others []*client
				for i := range max(tt.before, tt.after) {
					c := dial(t, e.h, fmt.Sprintf("u%d", i))
					if i < tt.before-1 {
						c.join("r", 1, "")
					}
					others = append(others, c)
				}
				bob := dial(t, e.h, "bob")
				bob.join("r", 1, "")
				e.tick()
				bob.events()
				saved := bob.views["r"].cur
				bob.s.HandleClose(endLost)
				for i, c := range others {
					switch {
					case i >= tt.before-1 && i < tt.after-1:
						c.join("r", 2, "")
					case i >= tt.after-1 && i < tt.before-1:
						c.send(`{"t":"leave","id":2,"room":"r"}`)
					}
				}
				e.tick()
				b2 := open(t, e.h, "bob2")
				b2.views = bob.views
				b2.send(`{"t":"hello","v":1,"user":"bob","resume":{"r":%q}}`, saved)
				evs := b2.events()
				if len(evs) != 2 || evs[0].T != wire.TWelcome {
					t.Fatalf("after hello: %v, want welcome and a diff or sync", typesOf(evs))
				}
				ev := evs[1]
				if tt.wantDiff {
					if ev.T != wire.TDiff || ev.From != saved || ev.Count != tt.after {
						t.Errorf("resume: %+v, want a diff from %s with count %d", ev, saved, tt.after)
					}
					if successes.value() != 1 {
						t.Errorf("ResumeSuccesses = %v, want 1", successes.value())
					}
				} else {
					if ev.T != wire.TSync || ev.Partial != tt.wantPartial || ev.Count != tt.after {
						t.Errorf("resume: %s partial %v count %d, want a sync, partial %v, count %d", ev.T, ev.Partial, ev.Count, tt.wantPartial, tt.after)
					}
					if successes.value() != 0 {
						t.Errorf("ResumeSuccesses = %v, want 0", successes.value())
					}
				}
				if tt.after <= 3 {
					b2.checkView(e.h, "r")
				}
			})
		})
	}
}

func TestLargeRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true, ListLimit: 3})
		var cs []*client
		add := func(n int) {
			for i := len(cs); i < n; i++ {
				c := dial(t, e.h, fmt.Sprintf("u%d", i+1))
				c.join("r", 1, "")
				cs = append(cs, c)
			}
		}
		add(3)
		e.tick()
		for _, c := range cs {
			if s := c.expect("sync")[0]; s.Partial || s.Count != 3 || len(s.Members) != 3 {
				t.Errorf("%s: sync partial %v count %d with %d members, want full, 3", c.name, s.Partial, s.Count, len(s.Members))
			}
		}

		// Crossing the limit: everyone gets a partial sync, not a diff.
		add(5)
		e.tick()
		for _, c := range cs {
			s := c.expect("sync")[0]
			if !s.Partial || s.Count != 5 || len(s.Members) != 3 {
				t.Errorf("%s: sync partial %v count %d with %d members, want partial, count 5, 3 members", c.name, s.Partial, s.Count, len(s.Members))
			}
		}

		// Diffs carry count and typing only.
		cs[0].send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		cs[0].expect("ack")
		e.tick()
		for _, c := range cs {
			d := c.expect("diff")[0]
			if d.Count != 5 || d.Join != nil || d.Update != nil || d.Leave != nil || d.Typing != nil {
				t.Errorf("%s: diff %+v, want count 5 only", c.name, d)
			}
		}
		cs[1].send(`{"t":"typing","room":"r","on":true}`)
		e.tick()
		for _, c := range cs {
			d := c.expect("diff")[0]
			if d.Count != 5 || d.Typing == nil || fmt.Sprint(*d.Typing) != "[u2]" || d.Update != nil {
				t.Errorf("%s: diff %+v, want count 5 and typing [u2]", c.name, d)
			}
		}
		cs[4].send(`{"t":"leave","id":2,"room":"r"}`)
		cs[4].expect("ack")
		e.tick()
		for _, c := range cs[:4] {
			if d := c.expect("diff")[0]; d.Count != 4 || d.Leave != nil {
				t.Errorf("%s: diff %+v, want count 4 without a leave list", c.name, d)
			}
		}
		cs[4].expectNone()

		// Dropping to the limit: a fresh full sync.
		cs[3].send(`{"t":"leave","id":2,"room":"r"}`)
		cs[3].expect("ack")
		e.tick()
		for _, c := range cs[:3] {
			s := c.expect("sync")[0]
			if s.Partial || s.Count != 3 || fmt.Sprint(users(s.Members)) != "[u1 u2 u3]" || fmt.Sprint(*s.Typing) != "[u2]" {
				t.Errorf("%s: sync %+v, want full, u1 u2 u3, typing [u2]", c.name, s)
			}
			c.checkView(e.h, "r")
		}
		cs[0].send(`{"t":"set","id":3,"room":"r","state":{"status":"online"}}`)
		cs[0].expect("ack")
		e.tick()
		for _, c := range cs[:3] {
			c.expectDiff("update u1 online {}")
		}
	})
}

func TestSyncBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 400
		e := startHub(t, Config{Insecure: true, SyncBudget: budget})
		var cs []*client
		for i := range 10 {
			c := dial(t, e.h, fmt.Sprintf("user-%02d", i))
			c.join("r", 1, fmt.Sprintf(`{"meta":{"name":"a fairly long display name %02d"}}`, i))
			cs = append(cs, c)
		}
		e.tick()
		for _, c := range cs {
			for _, ev := range c.events() {
				if ev.T != wire.TSync {
					t.Fatalf("%s: got %s, want a sync", c.name, ev.T)
				}
				if !ev.Partial || ev.Count != 10 || len(ev.Members) == 0 || len(ev.Members) >= 10 {
					t.Errorf("%s: sync partial %v, count %d, %d members: want partial, count 10, fewer members", c.name, ev.Partial, ev.Count, len(ev.Members))
				}
			}
		}
		// A sync command gets the same cut.
		cs[0].send(`{"t":"sync","id":2,"room":"r"}`)
		for _, fr := range cs[0].sink.take() {
			if len(fr) > budget+40 {
				t.Errorf("sync of %d bytes, budget %d", len(fr), budget)
			}
		}
		// Small diffs still flow.
		cs[1].send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		e.tick()
		cs[0].expectDiff(`update user-01 away {"name":"a fairly long display name 01"}`)
	})
}

func TestBackpressure(t *testing.T) {
	const slow = time.Second
	type env2 struct {
		e                  *env
		alice, bob         *client
		dropped, slowClose *counter
	}
	setup := func(t *testing.T) env2 {
		dropped, slowClose := &counter{}, &counter{}
		e := startHub(t, Config{Insecure: true, SlowTimeout: slow,
			Metrics: Metrics{DroppedDiffs: dropped, SlowCloses: slowClose}})
		alice := dial(t, e.h, "alice")
		alice.join("r", 1, "")
		bob := dial(t, e.h, "bob")
		bob.join("r", 1, "")
		e.tick()
		alice.events()
		bob.events()
		return env2{e, alice, bob, dropped, slowClose}
	}
	needSync := func(e *env, c *client) bool {
		r := c.s.findSub("r").r
		r.mu.Lock()
		defer r.mu.Unlock()
		return c.s.findSub("r").owed
	}

	t.Run("a full outbox gets a sync once it drains", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			x := setup(t)
			x.alice.sink.setFull(true)
			x.bob.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
			x.bob.expect("ack")
			x.e.tick()
			if x.dropped.value() != 1 {
				t.Errorf("DroppedDiffs = %v, want 1", x.dropped.value())
			}
			if !needSync(x.e, x.alice) {
				t.Errorf("alice's room is not marked for a sync")
			}
			x.bob.send(`{"t":"set","id":3,"room":"r","state":{"status":"busy"}}`)
			x.e.ticks(3)
			if x.dropped.value() != 1 {
				t.Errorf("DroppedDiffs = %v, want still 1: a marked room gets no diffs", x.dropped.value())
			}
			x.alice.expectNone()

			x.alice.sink.setFull(false)
			x.e.tick()
			x.bob.events()
			s := x.alice.expect("sync")[0]
			if s.Cur != x.bob.views["r"].cur || x.alice.views["r"].members["bob"].S != "busy" {
				t.Errorf("sync at %s with bob %q, want cur %s with bob busy", s.Cur, x.alice.views["r"].members["bob"].S, x.bob.views["r"].cur)
			}
			x.bob.send(`{"t":"set","id":4,"room":"r","state":{"status":"dnd"}}`)
			x.e.tick()
			if d := x.alice.expectDiff("update bob dnd {}"); d.From != s.Cur {
				t.Errorf("diff from %s, want the sync's cur %s", d.From, s.Cur)
			}
			x.alice.checkView(x.e.h, "r")
			if x.slowClose.value() != 0 || len(x.alice.sink.closeCodes()) != 0 {
				t.Errorf("SlowCloses = %v, closes %v: want none", x.slowClose.value(), x.alice.sink.closeCodes())
			}
		})
	})

	t.Run("full for SlowTimeout closes 4002", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			x := setup(t)
			x.alice.sink.setFull(true)
			x.bob.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
			x.bob.expect("ack")
			x.e.tick()
			x.bob.expectDiff("update bob away {}")
			failed := time.Now()
			x.e.sleep(slow - x.e.h.cfg.Tick)
			if got := x.alice.sink.closeCodes(); len(got) != 0 {
				t.Fatalf("closed %v before SlowTimeout", got)
			}
			x.e.tick()
			if got := x.alice.sink.closeCodes(); !slices.Equal(got, []wire.CloseCode{wire.CloseSlowConsumer}) {
				t.Fatalf("closes %v %v after the first failed delivery, want [4002]", got, time.Since(failed))
			}
			x.e.ticks(5)
			if len(x.alice.sink.closeCodes()) != 1 {
				t.Errorf("closes %v; want one", x.alice.sink.closeCodes())
			}
			// 4002 invites a reconnect: the member stays for the grace.
			x.alice.s.HandleClose(endLost)
			if x.slowClose.value() != 1 {
				t.Errorf("SlowCloses = %v after HandleClose, want 1", x.slowClose.value())
			}
			x.e.tick()
			x.bob.expectNone()
			if s := x.e.h.Stats(); s.Members != 2 {
				t.Errorf("Members = %d, want 2 (alice in her grace)", s.Members)
			}
		})
	})

	t.Run("an outbox full for a moment is not slow", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			x := setup(t)
			for i := range 10 {
				x.alice.sink.setFull(true)
				x.bob.send(`{"t":"set","id":%d,"room":"r","state":{"status":"s%d"}}`, i+2, i)
				x.e.ticks(3)
				x.alice.sink.setFull(false)
				x.e.tick()
				x.alice.expect("sync")
			}
			if got := x.alice.sink.closeCodes(); len(got) != 0 {
				t.Errorf("closes %v, want none", got)
			}
			x.alice.checkView(x.e.h, "r")
		})
	})
}

func TestStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startHub(t, Config{Insecure: true, LeaveGrace: time.Second})
		a1 := dial(t, e.h, "alice")
		a2 := dial(t, e.h, "alice")
		b := dial(t, e.h, "bob")
		pending := open(t, e.h, "pending")
		a1.join("r1", 1, "")
		a2.join("r1", 1, "")
		a1.join("r2", 2, "")
		b.join("r2", 1, "")
		b.join("r3", 2, "")
		e.tick()
		if s := e.h.Stats(); s != (Stats{Rooms: 3, Members: 4, Sessions: 4}) {
			t.Errorf("Stats = %+v, want 3 rooms, 4 members, 4 sessions", s)
		}
		a1.s.HandleClose(endNormal)
		b.send(`{"t":"leave","id":3,"room":"r3"}`)
		e.tick()
		if s := e.h.Stats(); s != (Stats{Rooms: 2, Members: 2, Sessions: 3}) {
			t.Errorf("Stats = %+v, want 2 rooms (alice in r1, bob in r2), 2 members, 3 sessions", s)
		}
		a2.s.HandleClose(endLost) // alice stays in r1 for the grace
		b.s.HandleClose(endNormal)
		pending.s.HandleClose(endLost)
		e.tick()
		if s := e.h.Stats(); s != (Stats{Rooms: 1, Members: 1}) {
			t.Errorf("Stats = %+v, want 1 room, 1 member (grace), no session", s)
		}
		e.sleep(time.Second)
		if s := e.h.Stats(); s != (Stats{}) {
			t.Errorf("Stats = %+v, want zero", s)
		}
		if r := e.h.lookupRoom("r1"); r != nil {
			t.Errorf("room r1 still registered")
		}
	})
}

// TestMetrics checks the counters against what the sinks received.
func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			joins, leaves, updates, typing, diffs = &counter{}, &counter{}, &counter{}, &counter{}, &counter{}
			frames, bytes                         = &counter{}, &counter{}
			latency, lifetime                     = &observer{}, &observer{}
		)
		e := startHub(t, Config{Insecure: true, Metrics: Metrics{Joins: joins, Leaves: leaves, Updates: updates,
			TypingEvents: typing, Diffs: diffs, FramesSent: frames, BytesSent: bytes,
			FanoutLatency: latency, ConnLifetime: lifetime}})
		alice := dial(t, e.h, "alice")
		bob := dial(t, e.h, "bob")
		opened := time.Now()
		alice.join("r", 1, "")
		bob.join("r", 1, "")
		e.tick()
		alice.send(`{"t":"set","id":2,"room":"r","state":{"status":"away"}}`)
		alice.send(`{"t":"set","id":3,"room":"r","state":{"status":"busy"}}`)
		e.tick()
		bob.send(`{"t":"typing","room":"r","on":true}`)
		e.tick()
		bob.send(`{"t":"leave","id":2,"room":"r"}`)
		bob.send(`{"t":"ping","ts":1}`)
		e.tick()
		e.sleep(2 * time.Second)
		alice.s.HandleClose(endNormal)
		bob.s.HandleClose(endNormal)
		e.tick()

		sent, size := 0, 0
		for _, c := range []*client{alice, bob} {
			c.sink.mu.Lock()
			sent += c.sink.sent
			size += c.sink.bytes
			c.sink.mu.Unlock()
		}
		for _, m := range []struct {
			name      string
			got, want float64
		}{
			{"Joins", joins.value(), 2},
			{"Updates", updates.value(), 1},
			{"Leaves", leaves.value(), 2},
			{"TypingEvents", typing.value(), 1},
			{"Diffs", diffs.value(), 5}, // joins, update, typing, bob's leave, alice's leave (to nobody)
			{"FramesSent", frames.value(), float64(sent)},
			{"BytesSent", bytes.value(), float64(size)},
		} {
			if m.got != m.want {
				t.Errorf("%s = %v, want %v", m.name, m.got, m.want)
			}
		}
		// Every change came half a tick before the flush that sent it,
		// typing included.
		lat := latency.values()
		if len(lat) != 5 {
			t.Errorf("FanoutLatency observed %d times, want once per diff (5)", len(lat))
		}
		for _, v := range lat {
			if v != e.h.cfg.Tick.Seconds()/2 {
				t.Errorf("FanoutLatency = %v, want %v", v, e.h.cfg.Tick.Seconds()/2)
			}
		}
		life := lifetime.values()
		want := time.Since(opened).Seconds() - e.h.cfg.Tick.Seconds()
		if len(life) != 2 || life[0] != want || life[1] != want {
			t.Errorf("ConnLifetime = %v, want two of %v", life, want)
		}
	})
}
