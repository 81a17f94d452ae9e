package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// adminAuth guards the admin API: a bearer token (Config.AdminToken),
// compared in constant time; without one, only loopback clients of an
// insecure server (Presence.Insecure) are let through.
type adminAuth struct {
	token    [sha256.Size]byte // static: the token's hash (compared, never the token itself)
	hasToken bool              // static
	insecure bool              // static
}

func newAdminAuth(token []byte, insecure bool) adminAuth {
	a := adminAuth{hasToken: len(token) > 0, insecure: insecure}
	if a.hasToken {
		a.token = sha256.Sum256(token)
	}
	return a
}

// check returns 0 if r may use the API, else the HTTP status and the
// error to answer.
func (a adminAuth) check(r *http.Request) (int, string, string) {
	if !a.hasToken {
		if a.insecure && loopback(r.RemoteAddr) {
			return 0, "", ""
		}
		return http.StatusForbidden, "forbidden", "the admin API is off: start the server with -admin-token-file (or -insecure, for loopback clients)"
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return http.StatusUnauthorized, "unauthorized", "an Authorization: Bearer <token> header is required"
	}
	// Hashing first makes the comparison's time independent of the
	// lengths too.
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(sum[:], a.token[:]) != 1 {
		return http.StatusUnauthorized, "unauthorized", "invalid token"
	}
	return 0, "", ""
}

// loopback reports whether a request's remote address is on the loopback
// interface.
func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
