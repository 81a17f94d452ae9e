package server

import (
	"net/http/httptest"
	"testing"
)

func TestAdminAuthCheck(t *testing.T) {
	for _, tc := range []struct {
		name     string
		token    string
		insecure bool
		remote   string
		header   string
		want     int
	}{
		{"off, secure, loopback", "", false, "127.0.0.1:5000", "", 403},
		{"off, insecure, loopback v4", "", true, "127.0.0.1:5000", "", 0},
		{"off, insecure, loopback v6", "", true, "[::1]:5000", "", 0},
		{"off, insecure, v4-mapped loopback", "", true, "[::ffff:127.0.0.1]:5000", "", 0},
		{"off, insecure, another host", "", true, "10.1.2.3:5000", "", 403},
		{"off, insecure, a bad address", "", true, "nonsense", "", 403},
		{"token, another host, right", "t0k", false, "10.1.2.3:5000", "Bearer t0k", 0},
		{"token, scheme in lower case", "t0k", false, "10.1.2.3:5000", "bearer t0k", 0},
		{"token, basic scheme", "t0k", false, "10.1.2.3:5000", "Basic t0k", 401},
		{"token, empty bearer", "t0k", false, "10.1.2.3:5000", "Bearer ", 401},
		{"token, prefix of it", "t0k", false, "10.1.2.3:5000", "Bearer t0", 401},
		{"token, insecure loopback still needs it", "t0k", true, "127.0.0.1:5000", "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAdminAuth([]byte(tc.token), tc.insecure)
			r := httptest.NewRequest("GET", "/api/nodes", nil)
			r.RemoteAddr = tc.remote
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got, code, msg := a.check(r); got != tc.want || (got != 0 && (code == "" || msg == "")) {
				t.Errorf("check: %d %q %q, want %d", got, code, msg, tc.want)
			}
		})
	}
}
