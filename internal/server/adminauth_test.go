package server

import (
	"net"
	"net/http/httptest"
	"testing"
)

func TestAdminAuthCheck(t *testing.T) {
	for _, tc := range []struct {
		name     string
		token    string
		insecure bool
		listen   string // the admin listener's bound address
		remote   string
		host     string // the request's Host; "" keeps httptest's example.com
		origin   string
		header   string
		want     int
	}{
		{"off, secure, loopback", "", false, "127.0.0.1:9090", "127.0.0.1:5000", "127.0.0.1:9090", "", "", 403},
		{"off, insecure, loopback v4", "", true, "127.0.0.1:9090", "127.0.0.1:5000", "127.0.0.1:9090", "", "", 0},
		{"off, insecure, loopback v6", "", true, "[::1]:9090", "[::1]:5000", "[::1]:9090", "", "", 0},
		{"off, insecure, localhost", "", true, "127.0.0.1:9090", "127.0.0.1:5000", "localhost:9090", "", "", 0},
		{"off, insecure, v4-mapped loopback listener", "", true, "[::ffff:127.0.0.1]:9090", "127.0.0.1:5000", "127.0.0.1", "", "", 0},
		// The peer does not count: a proxy or sidecar on the host makes every client look local.
		{"off, insecure, listener on every interface, loopback peer", "", true, "0.0.0.0:9090", "127.0.0.1:5000", "127.0.0.1:9090", "", "", 403},
		{"off, insecure, listener on a host address", "", true, "10.1.2.3:9090", "10.1.2.4:5000", "127.0.0.1:9090", "", "", 403},
		{"off, insecure, no listener address", "", true, "", "127.0.0.1:5000", "127.0.0.1:9090", "", "", 403},
		// A browser: a cross-site request carries Origin; a DNS-rebound page names its own host.
		{"off, insecure, with an Origin", "", true, "127.0.0.1:9090", "127.0.0.1:5000", "127.0.0.1:9090", "https://evil.example", "", 403},
		{"off, insecure, with a null Origin", "", true, "127.0.0.1:9090", "127.0.0.1:5000", "127.0.0.1:9090", "null", "", 403},
		{"off, insecure, rebound Host", "", true, "127.0.0.1:9090", "127.0.0.1:5000", "evil.example:9090", "", "", 403},
		{"token, another host, right", "t0k", false, "0.0.0.0:9090", "10.1.2.3:5000", "", "", "Bearer t0k", 0},
		{"token, with an Origin (a token is not sent by a browser on its own)", "t0k", false, "0.0.0.0:9090", "10.1.2.3:5000", "", "https://x.example", "Bearer t0k", 0},
		{"token, scheme in lower case", "t0k", false, "0.0.0.0:9090", "10.1.2.3:5000", "", "", "bearer t0k", 0},
		{"token, basic scheme", "t0k", false, "0.0.0.0:9090", "10.1.2.3:5000", "", "", "Basic t0k", 401},
		{"token, empty bearer", "t0k", false, "0.0.0.0:9090", "10.1.2.3:5000", "", "", "Bearer ", 401},
		{"token, prefix of it", "t0k", false, "0.0.0.0:9090", "10.1.2.3:5000", "", "", "Bearer t0", 401},
		{"token with a newline given through Config", "t0k\n", false, "0.0.0.0:9090", "10.1.2.3:5000", "", "", "Bearer t0k", 0},
		{"token, insecure loopback still needs it", "t0k", true, "127.0.0.1:9090", "127.0.0.1:5000", "127.0.0.1:9090", "", "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ln net.Addr
			if tc.listen != "" {
				a, err := net.ResolveTCPAddr("tcp", tc.listen)
				if err != nil {
					t.Fatal(err)
				}
				ln = a
			}
			a := newAdminAuth([]byte(tc.token), tc.insecure, ln)
			r := httptest.NewRequest("GET", "/api/nodes", nil)
			r.RemoteAddr = tc.remote
			if tc.host != "" {
				r.Host = tc.host
			}
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got, code, msg := a.check(r); got != tc.want || (got != 0 && (code == "" || msg == "")) {
				t.Errorf("check: %d %q %q, want %d", got, code, msg, tc.want)
			}
		})
	}
}
