package redisbus

import (
	"reflect"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		cluster   bool
		master    string
		want      ClientOptions
		tls       bool
		err       bool
	}{
		{name: "plain", url: "redis://127.0.0.1:6380", want: ClientOptions{Addrs: []string{"127.0.0.1:6380"}}},
		{name: "default port", url: "redis://localhost", want: ClientOptions{Addrs: []string{"localhost:6379"}}},
		{name: "db and auth", url: "redis://u:p%40ss@h:1/3", want: ClientOptions{Addrs: []string{"h:1"}, Username: "u", Password: "p@ss", DB: 3}},
		{name: "password only", url: "redis://:secret@h:1", want: ClientOptions{Addrs: []string{"h:1"}, Password: "secret"}},
		{name: "ipv6", url: "redis://[::1]:7000", want: ClientOptions{Addrs: []string{"[::1]:7000"}}},
		{name: "tls", url: "rediss://h:1", want: ClientOptions{Addrs: []string{"h:1"}}, tls: true},
		{name: "cluster seeds", url: "redis://a:1,b:2,c:3", cluster: true, want: ClientOptions{Addrs: []string{"a:1", "b:2", "c:3"}, Cluster: true}},
		{name: "sentinel", url: "redis://a:26379,b:26379/2", master: "mymaster", want: ClientOptions{Addrs: []string{"a:26379", "b:26379"}, DB: 2, MasterName: "mymaster"}},
		{name: "several without mode", url: "redis://a:1,b:2", err: true},
		{name: "cluster db", url: "redis://a:1/1", cluster: true, err: true},
		{name: "cluster and sentinel", url: "redis://a:1", cluster: true, master: "m", err: true},
		{name: "scheme", url: "http://a:1", err: true},
		{name: "no host", url: "redis:///0", err: true},
		{name: "bad db", url: "redis://a:1/x", err: true},
		{name: "negative db", url: "redis://a:1/-1", err: true},
		{name: "bad port", url: "redis://a:99999", err: true},
		{name: "query", url: "redis://a:1?db=2", err: true},
		{name: "empty", url: "", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseURL(tc.url, tc.cluster, tc.master)
			if tc.err {
				if err == nil {
					t.Fatalf("ParseURL(%q) = %+v, want an error", tc.url, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got.TLS != nil) != tc.tls {
				t.Fatalf("TLS %v, want %v", got.TLS != nil, tc.tls)
			}
			got.TLS = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseURL(%q) = %+v, want %+v", tc.url, got, tc.want)
			}
		})
	}
}

func TestNewClients(t *testing.T) {
	live, data, err := newClients(ClientOptions{Addrs: []string{"127.0.0.1:1"}}, 600*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = live.Close(); _ = data.Close() }()
	if _, _, err := newClients(ClientOptions{}, time.Second); err == nil {
		t.Fatal("no address: want an error")
	}
}

func TestMergeEventFlags(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "Ex"}, {"Ex", "Ex"}, {"xE", "xE"}, {"AKE", "AKE"}, {"K$", "K$Ex"}, {"Eg", "Egx"}, {"x", "xE"},
	} {
		if got := mergeEventFlags(tc.in); got != tc.want {
			t.Errorf("mergeEventFlags(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
