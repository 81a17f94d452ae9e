package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"log"

	"github.com/presenced/presenced/client"
)

// Compiled, not run: it needs a presenced server.
func ExampleDial() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Config{
		URL:  "ws://127.0.0.1:8080/ws",
		User: "alice", // a server running with -insecure
	})
	if err != nil {
		log.Fatal(err) // a *client.CloseError when the server refused the hello
	}
	defer c.Close()

	go func() {
		for ev := range c.Events() { // closed once the client stops
			switch ev.Kind {
			case client.EventSynced, client.EventChanged:
				v, _ := c.Room(ev.Room)
				log.Printf("%s: %d members, typing %v", v.Room, v.Count, v.Typing)
			case client.EventDisconnected:
				log.Printf("disconnected (%v), retry in %v, terminal %v", ev.Err, ev.RetryIn, ev.Terminal)
			}
		}
	}()

	err = c.Join(ctx, "chat:42", &client.State{Status: "online", Meta: json.RawMessage(`{"name":"Alice"}`)})
	var cerr *client.CommandError
	if errors.As(err, &cerr) && cerr.Code == client.ErrCodeTooManyRooms {
		log.Fatal("too many rooms")
	}
	_ = c.Typing("chat:42", true)
	_ = c.Set(ctx, "chat:42", client.State{Status: "away"})
}
