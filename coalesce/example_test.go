package coalesce_test

import (
	"context"
	"fmt"
	"sync"
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
	var flushed sync.WaitGroup
	flushed.Add(2)
	s := coalesce.NewScheduler(coalesce.SchedulerConfig{Tick: 10 * time.Millisecond, Workers: 1}, func(room string, now time.Time) (again bool) {
		fmt.Println("flush", room)
		flushed.Done()
		return false
	})
	s.Mark("lobby")
	s.Mark("lobby") // coalesced with the first Mark
	s.Mark("room-42")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }() // flushes both rooms at the first tick
	flushed.Wait()
	cancel()
	if err := <-done; err != nil {
		fmt.Println(err)
	}
	// Output:
	// flush lobby
	// flush room-42
}
