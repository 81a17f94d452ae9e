package check

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
)

// Real WebSocket traffic through the shipped proxies (proxyrun_test.go
// says what is rewritten to run them here): for nginx and HAProxy each,
// one presenced (-insecure, loopback, a 1 s heartbeat) behind the proxy,
// then through the proxy's TLS port:
//   - the upgrade: 101 with Upgrade, Connection and the right
//     Sec-WebSocket-Accept, and the Origin reaching -allowed-origins (a
//     foreign one gets 403);
//   - HAProxy only: its health check of /readyz on the admin port passes
//     (L7OK 200); nginx (open source) has no active checks;
//   - two Go SDK clients: hello, join one room, each sees the other;
//   - idle timeouts: both stay connected while at least two server pings
//     (1 s apart) and pongs pass, with no other traffic;
//   - drain: SIGTERM to presenced reaches both clients as bye, then close
//     1001; HAProxy then marks the node DOWN by its /readyz check (L7STS
//     503) while the node still runs (with -redis it stays for -drain).
func TestProxies(t *testing.T) {
	for _, name := range []string{"nginx", "haproxy"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bin := findTool(name)
			if bin == "" {
				t.Fatalf("%s not installed (make deps-deploy installs it): deploy/%s not run with WebSocket traffic", name, name)
			}
			flags := []string{"-hb-interval", "1s", "-hb-timeout", "2s", "-drain", "1s",
				"-allowed-origins", origin, "-node", "check-" + name}
			if name == "haproxy" {
				// With Redis a drained node stays, /readyz 503, until
				// -drain has passed while it holds its clients' members
				// (-leave-grace): HAProxy must take it out on that 503
				// (L7STS) while it is alive, not on a refused connection
				// (L4CON) once it has exited. Its checks (inter 2s, fall
				// 2) need about 4 s; the node stays 10 s.
				redisURL, _ := startRedis(t)
				flags = append(flags, "-redis", redisURL, "-drain", "10s", "-leave-grace", "10s")
			}
			n := runPresenced(t, flags...)
			var addr, sock string
			if name == "nginx" {
				addr = runNginx(t, bin, n)
			} else {
				addr, sock = runHAProxy(t, bin, n)
				waitFor(t, 15*time.Second, "HAProxy's /readyz checks passing (UP L7OK 200)", func() bool {
					s := haproxyServers(t, sock)
					return len(s) == 3 && s["node0"] == "UP L7OK 200" && s["node1"] == s["node0"] && s["node2"] == s["node0"]
				})
			}
			checkUpgrade(t, addr)
			checkClients(t, n, addr)
			if sock != "" {
				var st string
				waitFor(t, 15*time.Second, "HAProxy marking the drained node DOWN", func() bool {
					st = haproxyServers(t, sock)["node0"]
					return strings.HasPrefix(st, "DOWN")
				})
				select {
				case <-n.proc.done:
					t.Fatalf("presenced exited before HAProxy marked it %q: the check did not see the drain's /readyz 503", st)
				default:
				}
				if st != "DOWN L7STS 503" {
					t.Errorf("HAProxy marked the draining node %q, want DOWN L7STS 503 (its /readyz check)", st)
				}
				// A second SIGTERM ends the hold at once (the cleanup's).
			}
		})
	}
}

// origin is the browser origin presenced allows in these tests.
const origin = "https://app.example.com"

// checkUpgrade sends upgrade requests by hand through the proxy at addr
// and checks the responses.
func checkUpgrade(t *testing.T, addr string) {
	t.Helper()
	key := make([]byte, 16)
	rand.Read(key)
	k := base64.StdEncoding.EncodeToString(key)
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	accept := base64.StdEncoding.EncodeToString(sum[:])

	resp := upgrade(t, addr, k, origin)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the proxy: %s, want 101 (Upgrade/Connection not forwarded?)", resp.Status)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		!strings.Contains(strings.ToLower(resp.Header.Get("Connection")), "upgrade") ||
		resp.Header.Get("Sec-WebSocket-Accept") != accept {
		t.Errorf("upgrade response headers: %v", resp.Header)
	}
	if resp := upgrade(t, addr, k, "https://evil.example.com"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("upgrade with a foreign Origin: %s, want 403 from -allowed-origins", resp.Status)
	}
}

// upgrade sends one upgrade request over TLS and returns the response.
func upgrade(t *testing.T, addr, key, origin string) *http.Response {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/ws", nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Origin", origin)
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("upgrade response: %v", err)
	}
	return resp
}

// checkClients runs two SDK clients through the proxy at addr: presence,
// heartbeats, then a drain of n.
func checkClients(t *testing.T, n node, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const room = "deploy-check"
	users := []string{"alice", "bob"}
	cs := make([]*client.Client, len(users))
	for i, u := range users {
		c, err := client.Dial(ctx, client.Config{
			URL:    "wss://" + addr + "/ws",
			User:   u,
			Header: http.Header{"Origin": {origin}},
		})
		if err != nil {
			t.Fatalf("%s: dial and hello through the proxy: %v", u, err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Join(ctx, room, &client.State{Status: "online"}); err != nil {
			t.Fatalf("%s: join: %v", u, err)
		}
		cs[i] = c
	}
	waitFor(t, 10*time.Second, "alice and bob seeing each other", func() bool {
		for _, c := range cs {
			v, _ := c.Room(room)
			if _, ok := v.Members["alice"]; !ok || len(v.Members) != 2 {
				return false
			}
			if _, ok := v.Members["bob"]; !ok {
				return false
			}
		}
		return true
	})

	// Only heartbeats from here on: two pings 1 s apart answered on the
	// same connection means the proxy kept a connection idle for longer
	// than one heartbeat interval (and forwards ping and pong).
	waitFor(t, 15*time.Second, "two server pings answered through the proxy", func() bool {
		a, b := cs[0].Stats(), cs[1].Stats()
		return a.Disconnects+b.Disconnects > 0 || a.Pings >= 2 && b.Pings >= 2
	})
	for i, c := range cs {
		if s := c.Stats(); s.Disconnects != 0 || s.Connects != 1 {
			t.Fatalf("%s: connection lost while idle with heartbeats (%+v): a proxy idle timeout below the heartbeat?", users[i], s)
		}
	}

	n.proc.cmd.Process.Signal(syscall.SIGTERM)
	timeout := time.After(15 * time.Second)
	for i, c := range cs {
		bye := false
	events:
		for {
			select {
			case ev := <-c.Events():
				if ev.Kind == client.EventBye {
					bye = true
				}
				if ev.Kind == client.EventDisconnected {
					if !bye || ev.Close != client.CloseGoingAway {
						t.Errorf("%s: after SIGTERM: disconnected with close %d (bye seen: %v, err %v), want bye then 1001", users[i], ev.Close, bye, ev.Err)
					}
					break events
				}
			case <-timeout:
				t.Fatalf("%s: no disconnect within 15 s of SIGTERM (bye seen: %v)", users[i], bye)
			}
		}
		c.Close()
	}
	t.Logf("through %s: upgrade 101, Origin checked, two clients saw each other, %d and %d pings answered, bye and 1001 on SIGTERM",
		addr, cs[0].Stats().Pings, cs[1].Stats().Pings)
}
