package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	jsclient "github.com/presenced/presenced/clients/js"
	"github.com/presenced/presenced/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// netpoll keeps its poller goroutines for the life of the process.
		goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
	)
}

// env is a fake environment for parseFlags.
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		env   env
		check func(o options) error
	}{
		{
			name: "defaults",
			args: []string{"-insecure"},
			check: func(o options) error {
				c, p := o.server, o.server.Presence
				if c.Addr != "127.0.0.1:8080" || c.AdminAddr != "127.0.0.1:9090" || c.Engine != "epoll" ||
					c.MaxMessage != 4096 || c.MaxConns != 0 || c.MaxConnsPerIP != 0 || c.Outbox != 65536 ||
					c.HandshakeTimeout != 5*time.Second || c.AllowedOrigins != nil || o.logLevel != slog.LevelInfo ||
					c.Drain != 10*time.Second || c.Demo {
					return fmt.Errorf("defaults: %+v, level %v", c, o.logLevel)
				}
				// The contract's defaults.
				if p.Node != "" || p.HeartbeatInterval != 25*time.Second || p.HeartbeatTimeout != 10*time.Second ||
					p.HelloTimeout != 10*time.Second || p.Tick != 100*time.Millisecond || p.LeaveGrace != 5*time.Second ||
					p.TypingTTL != 6*time.Second || p.ListLimit != 1000 || p.MaxRooms != 64 ||
					p.SlowTimeout != 10*time.Second || p.AuthGrace != 30*time.Second || !p.Insecure ||
					p.SyncBudget != 0 {
					return fmt.Errorf("presence defaults: %+v", p)
				}
				if j := c.JWT; j.HS256Secret != nil || j.PublicKeyPEM != nil || j.Issuer != "" || j.Audience != "" {
					return fmt.Errorf("JWT defaults: %+v", j)
				}
				return nil
			},
		},
		{
			name: "flags",
			args: []string{"-addr", ":7000", "-admin-addr=127.0.0.2:7001", "-engine", "netpoll",
				"-allowed-origins", "https://a.example, https://b.example:8443/,", "-max-message", "1100",
				"-max-conns", "10", "-max-conns-per-ip", "2", "-outbox", "5000", "-handshake-timeout", "750ms",
				"-log-level", "debug", "-insecure"},
			check: func(o options) error {
				c := o.server
				if c.Addr != ":7000" || c.AdminAddr != "127.0.0.2:7001" || c.Engine != "netpoll" ||
					!slices.Equal(c.AllowedOrigins, []string{"https://a.example", "https://b.example:8443"}) ||
					c.MaxMessage != 1100 || c.MaxConns != 10 || c.MaxConnsPerIP != 2 || c.Outbox != 5000 ||
					c.HandshakeTimeout != 750*time.Millisecond || o.logLevel != slog.LevelDebug ||
					c.Presence.SyncBudget != 0 {
					return fmt.Errorf("got %+v, level %v", c, o.logLevel)
				}
				return nil
			},
		},
		{
			name: "environment",
			env: env{"PRESENCED_MAX_CONNS_PER_IP": "3", "PRESENCED_ALLOWED_ORIGINS": "https://x.example",
				"PRESENCED_HANDSHAKE_TIMEOUT": "2s", "PRESENCED_LOG_LEVEL": "WARN", "PRESENCED_ENGINE": "netpoll",
				"PRESENCED_INSECURE": "true"},
			check: func(o options) error {
				c := o.server
				if c.MaxConnsPerIP != 3 || !slices.Equal(c.AllowedOrigins, []string{"https://x.example"}) ||
					c.HandshakeTimeout != 2*time.Second || o.logLevel != slog.LevelWarn || c.Engine != "netpoll" ||
					!c.Presence.Insecure {
					return fmt.Errorf("got %+v, level %v", c, o.logLevel)
				}
				return nil
			},
		},
		{
			name: "command line wins over environment",
			args: []string{"-max-message", "2000", "-addr", "127.0.0.1:0", "-tick", "30", "-insecure=false", "-jwt-secret", "k"},
			env: env{"PRESENCED_MAX_MESSAGE": "1500", "PRESENCED_ADDR": "not an address", "PRESENCED_OUTBOX": "8192",
				"PRESENCED_TICK": "1s", "PRESENCED_INSECURE": "1"},
			check: func(o options) error {
				if c := o.server; c.MaxMessage != 2000 || c.Addr != "127.0.0.1:0" || c.Outbox != 8192 ||
					c.Presence.Tick != 30*time.Millisecond || c.Presence.Insecure {
					return fmt.Errorf("got max-message %d addr %q outbox %d tick %v insecure %v",
						c.MaxMessage, c.Addr, c.Outbox, c.Presence.Tick, c.Presence.Insecure)
				}
				return nil
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, tc.env.lookup, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(o); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPresenceFlags sets each presence, drain and JWT flag that is not a
// duration (TestDurationFlags has those), once on the command line and once
// in the environment, and finds its value in server.Config.
func TestPresenceFlags(t *testing.T) {
	dir := t.TempDir()
	secretFile := writeFile(t, dir, "secret", " \n\tan HS256 secret of 32 bytes or more \r\n\n")
	_, rsaFile := writeRSAKey(t, dir, 2048)
	rsaPEM, err := os.ReadFile(rsaFile)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		flag, value string
		got         func(o options) any
		want        any
	}{
		{"node", "node-7", func(o options) any { return o.server.Presence.Node }, "node-7"},
		{"node", "eu-west-1/a:b@c.d_e", func(o options) any { return o.server.Presence.Node }, "eu-west-1/a:b@c.d_e"},
		{"list-limit", "7", func(o options) any { return o.server.Presence.ListLimit }, 7},
		{"max-rooms", "3", func(o options) any { return o.server.Presence.MaxRooms }, 3},
		{"max-message", "1024", func(o options) any { return o.server.MaxMessage }, 1024},
		{"outbox", "4096", func(o options) any { return o.server.Outbox }, 4096},
		{"outbox", "1048576", func(o options) any { return o.server.Outbox }, 1 << 20},
		{"insecure", "true", func(o options) any { return o.server.Presence.Insecure }, true},
		{"insecure", "1", func(o options) any { return o.server.Presence.Insecure }, true},
		{"jwt-secret", "s3cret", func(o options) any { return string(o.server.JWT.HS256Secret) }, "s3cret"},
		{"jwt-secret-file", secretFile, func(o options) any { return string(o.server.JWT.HS256Secret) }, "an HS256 secret of 32 bytes or more"},
		{"jwt-public-key", rsaFile, func(o options) any { return string(o.server.JWT.PublicKeyPEM) }, string(rsaPEM)},
		{"jwt-issuer", "https://issuer.example", func(o options) any { return o.server.JWT.Issuer }, "https://issuer.example"},
		{"jwt-audience", "presenced", func(o options) any { return o.server.JWT.Audience }, "presenced"},
	}
	for _, tc := range cases {
		// Every case but -insecure's own runs insecure, so that no key is needed.
		var base []string
		if tc.flag != "insecure" {
			base = []string{"-insecure"}
		}
		for _, src := range []struct {
			name string
			args []string
			env  env
		}{
			{"flag", append(slices.Clone(base), "-"+tc.flag+"="+tc.value), nil},
			{"env", base, env{envName(tc.flag): tc.value}},
		} {
			t.Run(tc.flag+"="+filepath.Base(tc.value)+"/"+src.name, func(t *testing.T) {
				o, err := parseFlags(src.args, src.env.lookup, io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				if got := tc.got(o); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("-%s %s: got %v, want %v", tc.flag, tc.value, got, tc.want)
				}
			})
		}
	}
}

// durationFlags are the flags taking a duration, and the field each sets.
var durationFlags = map[string]func(o options) time.Duration{
	"handshake-timeout": func(o options) time.Duration { return o.server.HandshakeTimeout },
	"hb-interval":       func(o options) time.Duration { return o.server.Presence.HeartbeatInterval },
	"hb-timeout":        func(o options) time.Duration { return o.server.Presence.HeartbeatTimeout },
	"hello-timeout":     func(o options) time.Duration { return o.server.Presence.HelloTimeout },
	"tick":              func(o options) time.Duration { return o.server.Presence.Tick },
	"leave-grace":       func(o options) time.Duration { return o.server.Presence.LeaveGrace },
	"typing-ttl":        func(o options) time.Duration { return o.server.Presence.TypingTTL },
	"slow-timeout":      func(o options) time.Duration { return o.server.Presence.SlowTimeout },
	"auth-grace":        func(o options) time.Duration { return o.server.Presence.AuthGrace },
	"drain":             func(o options) time.Duration { return o.server.Drain },
	"jwt-leeway":        func(o options) time.Duration { return o.server.JWT.Leeway },
	"node-ttl":          func(o options) time.Duration { return o.redis.NodeTTL },
}

// durationFloors are the least values of the duration flags that have one
// above 1 ms.
var durationFloors = map[string]time.Duration{"node-ttl": minNodeTTL}

// TestDurationFlags gives every duration flag, on the command line and in
// the environment, a Go duration and a number of milliseconds, and then
// values it must refuse.
func TestDurationFlags(t *testing.T) {
	// Every flag whose value is a durationValue is in durationFlags, and
	// the reverse: a duration flag defined with fs.DurationVar would not
	// take milliseconds.
	var o options
	var got []string
	newFlagSet(&o).VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(durationValue); ok {
			got = append(got, f.Name)
		}
	})
	if want := slices.Sorted(maps.Keys(durationFlags)); !slices.Equal(got, want) {
		t.Fatalf("duration flags %v, want %v", got, want)
	}

	good := []struct {
		value string
		want  time.Duration
	}{
		{"1", time.Millisecond},
		{"250", 250 * time.Millisecond},
		{"90000", 90 * time.Second},
		{"1m30s", 90 * time.Second},
		{"1.5s", 1500 * time.Millisecond},
		{"20ms", 20 * time.Millisecond},
		{"2h", 2 * time.Hour},
	}
	bad := []struct{ value, want string }{
		{"0", "at least 1ms"},
		{"0s", "at least 1ms"},
		{"-1", "at least 1ms"},
		{"-5s", "at least 1ms"},
		{"500us", "at least 1ms"},
		{"garbage", "want a Go duration"},
		{"", "want a Go duration"},
		{"1.5", "whole number of milliseconds"},
		{"1e3", "want a Go duration"},
		{"10 s", "want a Go duration"},
		{"9223372036855", "out of range"}, // ms beyond time.Duration
		{"99999999999999999999", "out of range"},
		{"999999999999h", "want a Go duration"}, // time.ParseDuration overflows
	}
	for _, name := range slices.Sorted(maps.Keys(durationFlags)) {
		field := durationFlags[name]
		base := []string{"-insecure"}
		if slices.Contains(redisFlags, name) {
			base = append(base, "-redis", "redis://127.0.0.1:6379")
		}
		for _, g := range good {
			if g.want < durationFloors[name] { // TestRedisFlags has those
				continue
			}
			for _, src := range []struct {
				name string
				args []string
				env  env
			}{
				{"flag", append(slices.Clone(base), "-"+name, g.value), nil},
				{"env", base, env{envName(name): g.value}},
			} {
				t.Run(name+"="+g.value+"/"+src.name, func(t *testing.T) {
					o, err := parseFlags(src.args, src.env.lookup, io.Discard)
					if err != nil {
						t.Fatal(err)
					}
					if d := field(o); d != g.want {
						t.Errorf("-%s %s: %v, want %v", name, g.value, d, g.want)
					}
				})
			}
		}
		for _, b := range bad {
			for _, src := range []struct {
				name  string
				args  []string
				env   env
				names []string // what the message names
			}{
				{"flag", []string{"-insecure", "-" + name + "=" + b.value}, nil, []string{"-" + name}},
				{"env", []string{"-insecure"}, env{envName(name): b.value}, []string{envName(name), "(-" + name + ")"}},
			} {
				t.Run(name+"="+b.value+"/"+src.name, func(t *testing.T) {
					_, err := parseFlags(src.args, src.env.lookup, io.Discard)
					checkUsageError(t, err, append(src.names, b.want)...)
				})
			}
		}
	}
}

// TestBadValues gives the other flags values they must refuse, on the
// command line and in the environment.
func TestBadValues(t *testing.T) {
	cases := []struct{ flag, value, want string }{
		{"list-limit", "0", "-list-limit 0: must be positive"},
		{"list-limit", "-1", "-list-limit -1: must be positive"},
		{"list-limit", "many", "-list-limit"},
		{"max-rooms", "0", "-max-rooms 0: must be positive"},
		{"max-rooms", "-3", "-max-rooms -3: must be positive"},
		{"max-rooms", "", "-max-rooms"},
		{"max-message", "0", "-max-message 0: must be at least 1024"},
		{"max-message", "-1", "-max-message -1: must be at least 1024"},
		{"max-message", "1023", "-max-message 1023: must be at least 1024"},
		{"max-message", "4k", "-max-message"},
		{"outbox", "0", "-outbox 0: must be at least 4096"},
		{"outbox", "-4096", "-outbox -4096: must be at least 4096"},
		{"outbox", "4095", "-outbox 4095: must be at least 4096"},
		{"outbox", "1e6", "-outbox"},
		{"outbox", "1073741825", "-outbox 1073741825: must be at most 1073741824"},
		{"max-conns", "-1", "-max-conns -1"},
		{"max-conns-per-ip", "-5", "-max-conns-per-ip -5"},
		{"node", "has space", `-node "has space"`},
		{"node", strings.Repeat("n", 129), "-node"},
		{"node", "café", "-node"},
		{"insecure", "maybe", "-insecure"},
		{"engine", "kqueue", `-engine "kqueue"`},
		{"log-level", "loud", "-log-level"},
	}
	for _, tc := range cases {
		for _, src := range []struct {
			name string
			args []string
			env  env
		}{
			{"flag", []string{"-insecure", "-" + tc.flag + "=" + tc.value}, nil},
			{"env", []string{"-insecure"}, env{envName(tc.flag): tc.value}},
		} {
			if tc.flag == "insecure" {
				src.args = src.args[1:]
			}
			t.Run(tc.flag+"="+tc.value+"/"+src.name, func(t *testing.T) {
				_, err := parseFlags(src.args, src.env.lookup, io.Discard)
				checkUsageError(t, err, tc.want)
			})
		}
	}
}

func TestBadFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  env
		want string
	}{
		{"not a number", []string{"-max-message", "lots"}, nil, "-max-message"},
		{"address without port", []string{"-addr", "localhost"}, nil, `-addr "localhost"`},
		{"origin with a path", []string{"-allowed-origins", "https://a.example/app"}, nil, "-allowed-origins"},
		{"origin without scheme", []string{"-allowed-origins", "a.example"}, nil, "-allowed-origins"},
		{"unknown flag", []string{"-colour"}, nil, "-colour"},
		{"stray argument", []string{"serve"}, nil, `unexpected argument "serve"`},
		{"bad environment value", nil, env{"PRESENCED_MAX_CONNS": "many"}, "PRESENCED_MAX_CONNS (-max-conns)"},
		{"bad environment engine", nil, env{"PRESENCED_ENGINE": "iouring"}, `-engine "iouring"`},
		{"bad environment overridden", []string{"-tick", "50ms"}, env{"PRESENCED_TICK": "soon"}, "PRESENCED_TICK"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(append([]string{"-insecure"}, tc.args...), tc.env.lookup, io.Discard)
			checkUsageError(t, err, tc.want)
		})
	}
}

// TestKeyFlags covers the ways to give (or not give) the JWT key.
func TestKeyFlags(t *testing.T) {
	dir := t.TempDir()
	secretFile := writeFile(t, dir, "secret", "topsecret-topsecret-topsecret-32\n")
	emptyFile := writeFile(t, dir, "empty", " \n\t\r\n")
	_, rsaFile := writeRSAKey(t, dir, 2048)
	_, ecFile := writeECKey(t, dir, elliptic.P256())
	_, p384File := writeECKey(t, dir, elliptic.P384())
	notPEM := writeFile(t, dir, "not.pem", "not a key\n")
	missing := filepath.Join(dir, "missing")

	cases := []struct {
		name    string
		args    []string
		env     env
		wantErr []string // substrings of the usage error; nil: no error
		check   func(o options) error
	}{
		{
			name:    "no key and not insecure",
			wantErr: []string{"no way to verify clients", "-jwt-secret-file", "-jwt-public-key", "-jwt-secret", "-insecure"},
		},
		{
			name:    "insecure=false and no key",
			env:     env{"PRESENCED_INSECURE": "false"},
			wantErr: []string{"no way to verify clients"},
		},
		{
			name:    "secret and secret file",
			args:    []string{"-jwt-secret", "topsecret", "-jwt-secret-file", secretFile},
			wantErr: []string{"-jwt-secret and -jwt-secret-file", "give only one"},
		},
		{
			name:    "secret and public key",
			args:    []string{"-jwt-secret=topsecret", "-jwt-public-key=" + rsaFile},
			wantErr: []string{"-jwt-secret and -jwt-public-key", "give only one"},
		},
		{
			name:    "secret file and public key, from the environment",
			env:     env{"PRESENCED_JWT_SECRET_FILE": secretFile, "PRESENCED_JWT_PUBLIC_KEY": rsaFile},
			wantErr: []string{"-jwt-secret-file and -jwt-public-key", "give only one"},
		},
		{
			name:    "all three, even with insecure",
			args:    []string{"-insecure", "-jwt-secret=topsecret", "-jwt-secret-file=" + secretFile, "-jwt-public-key=" + rsaFile},
			wantErr: []string{"give only one"},
		},
		{
			name: "secret file, trimmed",
			args: []string{"-jwt-secret-file", secretFile},
			check: func(o options) error {
				if got := string(o.server.JWT.HS256Secret); got != "topsecret-topsecret-topsecret-32" {
					return fmt.Errorf("secret %q", got)
				}
				return nil
			},
		},
		{
			name:    "empty secret file",
			args:    []string{"-jwt-secret-file", emptyFile},
			wantErr: []string{"-jwt-secret-file " + emptyFile + " is empty"},
		},
		{
			name:    "missing secret file",
			args:    []string{"-jwt-secret-file", missing},
			wantErr: []string{"-jwt-secret-file", "no such file"},
		},
		{
			name: "RSA public key",
			args: []string{"-jwt-public-key", rsaFile, "-jwt-issuer", "iss", "-jwt-audience", "aud"},
			check: func(o options) error {
				if j := o.server.JWT; !bytes.HasPrefix(j.PublicKeyPEM, []byte("-----BEGIN PUBLIC KEY-----")) ||
					j.HS256Secret != nil || j.Issuer != "iss" || j.Audience != "aud" || o.server.Presence.Insecure {
					return fmt.Errorf("JWT config %+v", j)
				}
				return nil
			},
		},
		{
			name: "P-256 public key, insecure too",
			args: []string{"-jwt-public-key", ecFile, "-insecure"},
			check: func(o options) error {
				if o.server.JWT.PublicKeyPEM == nil || !o.server.Presence.Insecure {
					return fmt.Errorf("JWT config %+v, insecure %v", o.server.JWT, o.server.Presence.Insecure)
				}
				return nil
			},
		},
		{
			name:    "P-384 public key",
			args:    []string{"-jwt-public-key", p384File},
			wantErr: []string{"-jwt-public-key", "P-256"},
		},
		{
			name:    "public key file without PEM",
			args:    []string{"-jwt-public-key", notPEM},
			wantErr: []string{"-jwt-public-key", "no PEM block"},
		},
		{
			name:    "missing public key file",
			args:    []string{"-jwt-public-key", missing},
			wantErr: []string{"-jwt-public-key", "no such file"},
		},
		{
			name:    "empty -jwt-secret-file value",
			args:    []string{"-jwt-secret-file", ""},
			wantErr: []string{"no way to verify clients"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, tc.env.lookup, io.Discard)
			if tc.wantErr != nil {
				checkUsageError(t, err, tc.wantErr...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(o); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestSizeFloors checks that the floors of -max-message and -outbox hold
// what they claim to.
func TestSizeFloors(t *testing.T) {
	id := strings.Repeat("i", wire.MaxIDLen)
	meta := `{"k":"` + strings.Repeat("m", wire.MaxMetaLen-8) + `"}`
	if len(meta) != wire.MaxMetaLen {
		t.Fatalf("meta of %d bytes", len(meta))
	}
	// The largest join: every field at its limit, the status's 32 bytes
	// sent as \u escapes.
	status := strings.Repeat(`\u0001`, wire.MaxStatusLen)
	join := `{"t":"join","id":9223372036854775807,"room":"` + id + `","state":{"status":"` + status + `","meta":` + meta + `}}`
	var c wire.Command
	if err := wire.DecodeCommand([]byte(join), &c); err != nil {
		t.Fatalf("the largest join is not valid: %v", err)
	}
	if len(join) > minMaxMessage {
		t.Errorf("the largest join is %d bytes, -max-message floor %d", len(join), minMaxMessage)
	}

	// The largest sync the budget of the smallest outbox (half of it) lets
	// out: one member at the limits (the check is on the members) and the
	// typing list after it, ten users.
	p := wire.AppendSyncStart(nil, id, wire.Cursor{Epoch: ^uint32(0), Seq: ^uint64(0)}, 1<<31)
	p = wire.AppendMember(p, id, strings.Repeat("\x01", wire.MaxStatusLen), []byte(meta))
	if len(p) > minOutbox/2 {
		t.Errorf("a sync of one member is %d bytes, more than the budget %d of -outbox %d", len(p), minOutbox/2, minOutbox)
	}
	typing := make([]string, 10)
	for i := range typing {
		typing[i] = id
	}
	p = wire.AppendSyncEnd(p, typing, true)
	if frame := len(p) + 4; frame > minOutbox { // a text frame header of 4 bytes below 64 KiB
		t.Errorf("a sync frame is %d bytes, more than -outbox %d", frame, minOutbox)
	}
}

func TestExitCode(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"clean stop", nil, 0},
		{"runtime error", errors.New("listen: address in use"), 1},
		{"usage error", usageErrorf("bad"), 2},
		{"wrapped usage error", fmt.Errorf("config: %w", usageErrorf("bad")), 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err, io.Discard); got != tc.want {
				t.Errorf("exit code %d, want %d", got, tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  env
	}{
		{"-h", []string{"-h"}, nil},
		{"-help after other flags", []string{"-tick", "20", "-help"}, nil},
		{"no key", []string{"-h"}, env{"PRESENCED_INSECURE": "false"}},
		{"bad environment", []string{"-h"}, env{"PRESENCED_TICK": "garbage", "PRESENCED_OUTBOX": "1"}},
		{"secret in the environment", []string{"-h"}, env{"PRESENCED_JWT_SECRET": "hunter2-hunter2"}},
	}
	var flags []string
	var o options
	newFlagSet(&o).VisitAll(func(f *flag.Flag) { flags = append(flags, f.Name) })
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout bytes.Buffer
			o, err := parseFlags(tc.args, tc.env.lookup, &stdout)
			if err != nil || !o.help {
				t.Fatalf("parseFlags: help %v, %v", o.help, err)
			}
			usage := stdout.String()
			for _, name := range flags {
				// Each flag on its line, then its environment variable.
				re := regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(name) + `( \w+)?\n    \t.+ \[\$` + envName(name) + `\]$`)
				if !re.MatchString(usage) {
					t.Errorf("usage lacks -%s with [$%s]", name, envName(name))
				}
			}
			for _, want := range []string{"(default 4096) [$PRESENCED_MAX_MESSAGE]", "(default 25s)", `(default "127.0.0.1:8080")`,
				"-tick duration\n", "-jwt-secret-file file\n", "  -insecure\n", "no cap) [$PRESENCED_MAX_CONNS]"} {
				if !strings.Contains(usage, want) {
					t.Errorf("usage lacks %q", want)
				}
			}
			if strings.Contains(usage, "hunter2") {
				t.Error("usage shows the secret from the environment")
			}
			if t.Failed() {
				t.Log(usage)
			}
		})
	}

	// run -h prints on stdout only, and runs nothing.
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &stdout, &stderr); err != nil {
		t.Fatalf("run -h: %v", err)
	}
	if stdout.Len() == 0 || stderr.Len() != 0 {
		t.Errorf("run -h: stdout %d bytes, stderr %q", stdout.Len(), &stderr)
	}
}

// TestMakeRun parses the command line of `make run`, with and without ARGS.
func TestMakeRun(t *testing.T) {
	f, err := os.Open("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recipe string
	inRun := false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "run:"):
			inRun = true
		case inRun && strings.HasPrefix(line, "\t"):
			if _, rest, ok := strings.Cut(line, "./cmd/presenced"); ok {
				recipe = rest
			}
		case inRun:
			inRun = false
		}
	}
	if recipe == "" {
		t.Fatal("no `go run ./cmd/presenced` line under the run target of the Makefile")
	}
	cases := []struct {
		name string
		args string
		want func(o options) bool
	}{
		{"no ARGS", "", func(o options) bool { return true }},
		{"ARGS", "-tick 50 -node dev -log-level debug", func(o options) bool {
			return o.server.Presence.Tick == 50*time.Millisecond && o.server.Presence.Node == "dev"
		}},
		{"ARGS with a key", "-jwt-secret dev-secret", func(o options) bool {
			return string(o.server.JWT.HS256Secret) == "dev-secret"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := strings.Fields(strings.ReplaceAll(recipe, "$(ARGS)", tc.args))
			o, err := parseFlags(args, env{}.lookup, io.Discard)
			if err != nil {
				t.Fatalf("make run: presenced%s: %v", recipe, err)
			}
			if c := o.server; c.Addr != "127.0.0.1:8080" || c.AdminAddr != "127.0.0.1:9090" || !c.Presence.Insecure || !c.Demo || !tc.want(o) {
				t.Errorf("make run: %v gives %+v", args, c)
			}
		})
	}
}

// TestRun runs the whole program: flags and environment, both listeners,
// a presence session, and the drain a signal triggers.
func TestRun(t *testing.T) {
	t.Setenv("PRESENCED_MAX_MESSAGE", "1024")             // no flag: the environment applies
	t.Setenv("PRESENCED_ADDR", "256.0.0.1:1")             // overridden by -addr
	t.Setenv("PRESENCED_ADMIN_ADDR", "127.0.0.1:0")       // no flag
	t.Setenv("PRESENCED_ALLOWED_ORIGINS", "https://a.ex") // checked below
	t.Setenv("PRESENCED_TICK", "20")                      // milliseconds

	r := start(t, "-addr", "127.0.0.1:0", "-insecure", "-log-level", "debug",
		"-node", "test-node", "-hb-interval", "30s", "-drain", "300")
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		if status, body := httpGet(t, "http://"+r.admin+path); status != 200 || strings.TrimSpace(body) != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, status, body, want)
		}
	}

	alice := dialWS(t, r.addr)
	alice.send(`{"t":"hello","v":1,"user":"alice"}`)
	if w := alice.expect(wire.TWelcome); w.Node != "test-node" || w.User != "alice" || w.HB != 30000 || w.Max != 1024 || w.V != 1 {
		t.Errorf("welcome %+v: want node test-node, user alice, hb 30000, max 1024", w)
	}
	alice.send(`{"t":"join","id":1,"room":"chat:1","state":{"status":"online","meta":{"name":"Alice"}}}`)
	if ack := alice.expect(wire.TAck); ack.ID != 1 {
		t.Errorf("ack %+v, want id 1", ack)
	}
	// The sync follows the tick that publishes alice's join.
	sync := alice.expect(wire.TSync)
	if sync.Room != "chat:1" || sync.Count != 1 || len(sync.Members) != 1 || sync.Members[0].U != "alice" ||
		sync.Members[0].S != "online" || string(sync.Members[0].M) != `{"name":"Alice"}` || sync.Partial {
		t.Errorf("sync %+v: want alice alone", sync)
	}
	if _, ok := wire.ParseCursor(sync.Cur); !ok {
		t.Errorf("sync cursor %q", sync.Cur)
	}

	// PRESENCED_MAX_MESSAGE reaches the transport: 1025 bytes close 1009.
	bob := dialWS(t, r.addr)
	bob.send(`{"t":"hello","v":1,"user":"bob"}`)
	bob.expect(wire.TWelcome)
	big := `{"t":"ping","ts":1,"pad":""}`
	big = strings.Replace(big, `""`, `"`+strings.Repeat("x", 1025-len(big))+`"`, 1)
	bob.send(big)
	bob.expectClose(ws.StatusMessageTooBig)

	// An Origin outside PRESENCED_ALLOWED_ORIGINS is refused.
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://evil.ex"}})}
	if c, _, _, err := d.Dial(context.Background(), "ws://"+r.addr+"/ws"); err == nil {
		c.Close()
		t.Error("upgrade from a refused origin succeeded")
	}

	// The server counts a close or a refusal once the socket is closed,
	// which may be after the client has seen the close frame or the 403.
	eventually(t, 5*time.Second, func() error {
		_, metrics := httpGet(t, "http://"+r.admin+"/metrics")
		for _, want := range []string{
			`presenced_connections_closed_total{reason="protocol"} 1`,
			`presenced_handshake_failures_total{reason="origin"} 1`,
			"presenced_sessions 1",
		} {
			if !strings.Contains(metrics, want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		return nil
	})
	_, metrics := httpGet(t, "http://"+r.admin+"/metrics")
	for _, want := range []string{
		"presenced_connections_opened_total 2",
		"presenced_messages_received_total 3", // the 1025-byte one is refused unread
		"presenced_joins_total 1",
		"presenced_rooms 1",
		"presenced_members 1",
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// SIGTERM: bye with retry_ms within -drain, then 1001; run returns nil.
	r.cancel()
	bye := alice.expect(wire.TBye)
	if bye.Reason != "draining" || bye.RetryMS < 0 || bye.RetryMS >= 300 {
		t.Errorf("bye %+v: want reason draining, retry_ms in [0, 300)", bye)
	}
	alice.expectClose(ws.StatusGoingAway)
	if err := r.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{
		"node=test-node",
		"msg=\"insecure: hello is accepted",
		"msg=draining",
		"window=300ms",
		"msg=stopped",
		"msg=\"connection closed\"",
	} {
		if !strings.Contains(r.stderr.String(), want) {
			t.Errorf("stderr lacks %s:\n%s", want, r.stderr)
		}
	}
	if r.stdout.String() != "" {
		t.Errorf("stdout: %q", r.stdout)
	}
}

// TestRunDemo: -demo serves the demo page and the JS SDK on the public
// listener and logs its URL; without it /demo is 404.
func TestRunDemo(t *testing.T) {
	r := start(t, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-insecure", "-demo")
	if status, body := httpGet(t, "http://"+r.addr+"/demo"); status != 200 || !strings.Contains(body, `data-insecure="true"`) {
		t.Errorf("GET /demo: %d %.200q", status, body)
	}
	if status, body := httpGet(t, "http://"+r.addr+"/demo/presenced.js"); status != 200 || body != string(jsclient.Source) {
		t.Errorf("GET /demo/presenced.js: %d, %d bytes, want clients/js Source (%d bytes)", status, len(body), len(jsclient.Source))
	}
	r.cancel()
	if err := r.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if want := `msg="demo page" url=http://` + r.addr + "/demo"; !strings.Contains(r.stderr.String(), want) {
		t.Errorf("stderr lacks %s:\n%s", want, r.stderr)
	}

	off := start(t, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-insecure")
	if status, _ := httpGet(t, "http://"+off.addr+"/demo"); status != 404 {
		t.Errorf("GET /demo without -demo: %d, want 404", status)
	}
}

// TestRunSmallOutbox runs with the smallest -outbox and a room whose full
// sync is larger than it: the joiner gets a partial sync that fits rather
// than nothing and then close 4002 (the server sizes the sync budget from
// the outbox).
func TestRunSmallOutbox(t *testing.T) {
	r := start(t, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-insecure",
		"-outbox", "4096", "-tick", "20", "-slow-timeout", "300ms")
	meta := `{"k":"` + strings.Repeat("m", wire.MaxMetaLen-8) + `"}`
	const members = 10 // 10 × ~530 bytes: more than the outbox
	for i := range members {
		c := dialWS(t, r.addr)
		c.send(fmt.Sprintf(`{"t":"hello","v":1,"user":"u%d"}`, i))
		c.expect(wire.TWelcome)
		c.send(`{"t":"join","id":1,"room":"big","state":{"meta":` + meta + `}}`)
		c.expect(wire.TAck)
		sync := c.expect(wire.TSync)
		if i < members-1 {
			continue
		}
		if sync.Count != members || !sync.Partial || len(sync.Members) == 0 || len(sync.Members) >= members {
			t.Errorf("sync of %d members (%d listed), partial %v: want a partial sync of %d", sync.Count, len(sync.Members), sync.Partial, members)
		}
	}
}

// TestRunAuth starts the command with each kind of JWT key and says hello
// with a token it accepts and one it refuses; no key ever reaches the log.
func TestRunAuth(t *testing.T) {
	dir := t.TempDir()
	rsaKey, rsaFile := writeRSAKey(t, dir, 2048)
	ecKey, ecFile := writeECKey(t, dir, elliptic.P256())
	const fileSecret = "a secret from a file, 32 bytes or more"
	secretFile := writeFile(t, dir, "secret", "\n  "+fileSecret+"  \n")
	const flagSecret = "a secret on the command line, 32 bytes or more"
	const shortSecret = "short-secret"

	claims := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "carol", "exp": time.Now().Add(time.Hour).Unix()}
		maps.Copy(c, extra)
		return c
	}
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		good    string   // a token it accepts, for carol
		bad     string   // a token it refuses
		secrets []string // what the log must not show
		warn    string   // a warning the log must show
	}{
		{
			name: "RS256 public key with issuer and audience",
			args: []string{"-jwt-public-key", rsaFile, "-jwt-issuer", "https://issuer.example", "-jwt-audience", "presenced"},
			good: sign(t, jwt.SigningMethodRS256, rsaKey, claims(jwt.MapClaims{"iss": "https://issuer.example", "aud": "presenced"})),
			bad:  sign(t, jwt.SigningMethodRS256, rsaKey, claims(jwt.MapClaims{"iss": "https://issuer.example", "aud": "other"})),
		},
		{
			name: "ES256 public key from the environment",
			env:  map[string]string{"PRESENCED_JWT_PUBLIC_KEY": ecFile},
			good: sign(t, jwt.SigningMethodES256, ecKey, claims(nil)),
			bad:  sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil)),
		},
		{
			name:    "HS256 secret file",
			args:    []string{"-jwt-secret-file", secretFile},
			good:    sign(t, jwt.SigningMethodHS256, []byte(fileSecret), claims(nil)),
			bad:     sign(t, jwt.SigningMethodHS256, []byte("\n  "+fileSecret+"  \n"), claims(nil)),
			secrets: []string{fileSecret},
		},
		{
			name:    "HS256 secret flag",
			args:    []string{"-jwt-secret", flagSecret},
			good:    sign(t, jwt.SigningMethodHS256, []byte(flagSecret), claims(nil)),
			bad:     sign(t, jwt.SigningMethodHS256, []byte(flagSecret), claims(jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()})),
			secrets: []string{flagSecret},
		},
		{
			name:    "short HS256 secret from the environment",
			env:     map[string]string{"PRESENCED_JWT_SECRET": shortSecret},
			good:    sign(t, jwt.SigningMethodHS256, []byte(shortSecret), claims(nil)),
			bad:     sign(t, jwt.SigningMethodHS256, []byte(flagSecret), claims(nil)),
			secrets: []string{shortSecret},
			warn:    `msg="HS256 secret shorter than RFC 7518 asks" bytes=12 want=32`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			r := start(t, append([]string{"-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-log-level", "debug"}, tc.args...)...)

			c := dialWS(t, r.addr)
			c.send(`{"t":"hello","v":1,"token":"` + tc.good + `"}`)
			if w := c.expect(wire.TWelcome); w.User != "carol" {
				t.Errorf("welcome %+v, want user carol", w)
			}
			c.send(`{"t":"join","id":1,"room":"r"}`)
			c.expect(wire.TAck)
			// The join is published at the next tick: its sync follows
			// then, always before the drain below.
			c.expect(wire.TSync)

			for _, hello := range []string{
				`{"t":"hello","v":1,"token":"` + tc.bad + `"}`,
				`{"t":"hello","v":1,"user":"carol"}`, // not -insecure
			} {
				c := dialWS(t, r.addr)
				c.send(hello)
				c.expectClose(ws.StatusCode(wire.CloseUnauthorized))
			}

			r.cancel()
			if bye := c.expect(wire.TBye); bye.Reason != "draining" {
				t.Errorf("bye %+v", bye)
			}
			c.expectClose(ws.StatusGoingAway)
			if err := r.wait(t); err != nil {
				t.Fatalf("run: %v", err)
			}
			log := r.stderr.String()
			for _, s := range tc.secrets {
				if strings.Contains(log, s) {
					t.Errorf("the log shows the secret %q:\n%s", s, log)
				}
			}
			if strings.Contains(log, "BEGIN PUBLIC KEY") || strings.Contains(log, "insecure") {
				t.Errorf("the log shows a key or insecure:\n%s", log)
			}
			if tc.warn != "" && !strings.Contains(log, tc.warn) {
				t.Errorf("the log lacks %s:\n%s", tc.warn, log)
			}
		})
	}
}

func TestRunError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // bounds a run that wrongly serves
	defer cancel()
	err = run(ctx, []string{"-addr", "127.0.0.1:0", "-insecure", "-admin-addr", busy.Addr().String()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Fatalf("run with a busy admin address: %v, want an admin listener error", err)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("exit code %d for %v, want 1", code, err)
	}

	// A usage error returns before anything listens.
	err = run(ctx, []string{"-addr", busy.Addr().String(), "-admin-addr", busy.Addr().String()}, io.Discard, io.Discard)
	var stderr bytes.Buffer
	if code := exitCode(err, &stderr); code != 2 || !strings.Contains(stderr.String(), "no way to verify clients") {
		t.Errorf("run without a key: exit %d, %q", code, &stderr)
	}
}

// checkUsageError fails t unless err is a usage error (exit code 2, with
// the usage hint) whose message holds every string of want.
func checkUsageError(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	var stderr bytes.Buffer
	if code := exitCode(err, &stderr); code != 2 {
		t.Errorf("exit code %d for %v, want 2", code, err)
	}
	if !strings.Contains(stderr.String(), "presenced -h") {
		t.Errorf("stderr lacks the usage hint: %q", stderr.String())
	}
}

// running is the command run in-process by start.
type running struct {
	addr, admin    string
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc // what SIGINT or SIGTERM does
	done           chan error
	err            error
	waited         bool
}

// start runs the command with args until the test ends, and waits for it to
// serve. The addresses come from its log.
func start(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, args, r.stdout, r.stderr) }()
	t.Cleanup(func() {
		r.cancel()
		r.wait(t)
	})
	served := regexp.MustCompile(`msg=serving addr=(\S+) admin_addr=(\S+)`)
	eventually(t, 10*time.Second, func() error {
		m := served.FindStringSubmatch(r.stderr.String())
		if m == nil {
			select {
			case err := <-r.done:
				r.err, r.waited = err, true
				t.Fatalf("run returned early: %v\n%s", err, r.stderr)
			default:
			}
			return fmt.Errorf("no serving log yet:\n%s", r.stderr)
		}
		r.addr, r.admin = m[1], m[2]
		return nil
	})
	return r
}

// wait returns the error of run, at most 10 s after cancel.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	if !r.waited {
		select {
		case r.err = <-r.done:
			r.waited = true
		case <-time.After(10 * time.Second):
			t.Fatal("run did not return 10 s after cancel")
		}
	}
	return r.err
}

// wsConn is a raw protocol v1 client.
type wsConn struct {
	t    *testing.T
	conn net.Conn
}

func dialWS(t *testing.T, addr string) *wsConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, _, err := ws.Dial(ctx, "ws://"+addr+"/ws")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &wsConn{t: t, conn: conn}
}

func (c *wsConn) send(msg string) {
	c.t.Helper()
	if err := wsutil.WriteClientText(c.conn, []byte(msg)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next server message, or the error that ended the
// connection (a wsutil.ClosedError after a close frame, which it answers).
func (c *wsConn) read() (wire.Event, error) {
	c.t.Helper()
	var e wire.Event
	msg, err := wsutil.ReadServerText(c.conn)
	if err != nil {
		return e, err
	}
	if err := wire.DecodeEvent(msg, &e); err != nil {
		c.t.Fatalf("%s: %v", msg, err)
	}
	return e, nil
}

// expect reads the next message and fails unless its type is typ.
func (c *wsConn) expect(typ string) wire.Event {
	c.t.Helper()
	e, err := c.read()
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", typ, err)
	}
	if e.T != typ {
		c.t.Fatalf("got %+v, want %s", e, typ)
	}
	return e
}

// expectClose reads the next message and fails unless it is a close frame
// with code.
func (c *wsConn) expectClose(code ws.StatusCode) {
	c.t.Helper()
	e, err := c.read()
	var closed wsutil.ClosedError
	switch {
	case err == nil:
		c.t.Fatalf("got %+v, want close %d", e, code)
	case !errors.As(err, &closed):
		c.t.Fatalf("want close %d: %v", code, err)
	case closed.Code != code:
		c.t.Fatalf("close %d %q, want %d", closed.Code, closed.Reason, code)
	}
}

// sign returns a compact JWT of claims.
func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeRSAKey generates an RSA key and writes its public half as a PKIX PEM
// file.
func writeRSAKey(t *testing.T, dir string, bits int) (*rsa.PrivateKey, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return key, writePublicKey(t, dir, fmt.Sprintf("rsa%d.pem", bits), &key.PublicKey)
}

// writeECKey generates an ECDSA key and writes its public half as a PKIX PEM
// file.
func writeECKey(t *testing.T, dir string, curve elliptic.Curve) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key, writePublicKey(t, dir, curve.Params().Name+".pem", &key.PublicKey)
}

func writePublicKey(t *testing.T, dir, name string, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
}

// eventually calls fn until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// httpGet fetches url without keeping a connection open.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
