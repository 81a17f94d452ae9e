package coalesce_test

import (
	"fmt"
	"time"

	"github.com/presenced/presenced/coalesce"
)

func ExampleChanges() {
	type member struct {
		present bool
		status  string
	}
	var c coalesce.Changes[string, member]
	c.Put("alice", member{}, member{true, "online"}) // alice joins...
	c.Put("bob", member{true, "online"}, member{true, "away"})
	c.Put("alice", member{true, "online"}, member{})           // ...and leaves in the same window
	c.Put("bob", member{true, "away"}, member{true, "busy"})   // bob: online → busy
	merged := c.Put("carol", member{}, member{true, "online"}) // first change of carol
	fmt.Println("carol merged:", merged)

	c.Drain(func(user string, old, new member) {
		if old == new {
			fmt.Println(user, "no change")
			return
		}
		fmt.Printf("%s %q → %q\n", user, old.status, new.status)
	})
	fmt.Println("pending:", c.Len())
	// Output:
	// carol merged: false
	// alice no change
	// bob "online" → "busy"
	// carol "" → "online"
	// pending: 0
}

func ExampleScheduler() {
	s := coalesce.NewScheduler(coalesce.SchedulerConfig{}, func(room string, now time.Time) (again bool) {
		fmt.Println("flush", room)
		return false
	})
	s.Mark("lobby")
	s.Mark("lobby") // coalesced with the first Mark
	s.Mark("room-42")
	fmt.Println("pending:", s.Pending())

	// Run(ctx) would flush them at the next tick; FlushNow does it at once.
	s.FlushNow()
	fmt.Println("pending:", s.Pending())
	// Output:
	// pending: 2
	// flush lobby
	// flush room-42
	// pending: 0
}
