package main

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/gobwas/ws"
)

// TestReadyTimeout: a server that upgrades the connections and then says
// nothing never makes the run ready; -ready-timeout ends it with the
// summary, one error per connection that has not joined, and status 1.
func TestReadyTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, err := ws.Upgrade(c); err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c) // held open, silent
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	for _, target := range []string{"presenced", "centrifugo"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			s, stderr, err := runLoad(t, []string{"-target", target, "-scenario", "fanout", "-changers", "2",
				"-url", "ws://" + ln.Addr().String() + "/ws", "-conns", "5", "-duration", "100ms",
				"-ready-timeout", "300ms", "-max-errors", "1000"}, nil)
			if !errors.Is(err, errNotReady) || exitStatus(err, new(bytes.Buffer)) != 1 {
				t.Errorf("err %v, want errNotReady (status 1)\n%s", err, stderr)
			}
			if s.Errors != 7 || s.Joined != 0 {
				t.Errorf("errors %d, joined %d: want 7 (one per connection), 0\n%s", s.Errors, s.Joined, stderr)
			}
		})
	}
}
