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
// compared in constant time. Without one, an insecure server
// (Presence.Insecure) whose admin listener is bound to a loopback address
// lets through requests that name a loopback host and carry no Origin
// (a browser's cross-site request, or a DNS-rebound page, is refused).
type adminAuth struct {
	token    [sha256.Size]byte // static: the token's hash (compared, never the token itself)
	hasToken bool              // static
	local    bool              // static: insecure, and the listener is bound to loopback
}

// newAdminAuth: ln is the admin listener's bound address.
func newAdminAuth(token []byte, insecure bool, ln net.Addr) adminAuth {
	token = []byte(strings.TrimSpace(string(token))) // as the request's is
	a := adminAuth{hasToken: len(token) > 0, local: insecure && ln != nil && loopbackHost(ln.String())}
	if a.hasToken {
		a.token = sha256.Sum256(token)
	}
	return a
}

// check returns 0 if r may use the API, else the HTTP status and the
// error to answer.
func (a adminAuth) check(r *http.Request) (int, string, string) {
	if !a.hasToken {
		switch {
		case !a.local:
			return http.StatusForbidden, "forbidden", "the admin API is off: start the server with -admin-token-file (or -insecure, with the admin listener on loopback)"
		case r.Header.Get("Origin") != "":
			return http.StatusForbidden, "forbidden", "without a token, requests from a browser (with an Origin header) are refused"
		case !loopbackHost(r.Host):
			return http.StatusForbidden, "forbidden", "without a token, the Host must be a loopback name"
		}
		return 0, "", ""
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

// loopbackHost reports whether a request's Host (with or without a port)
// names the loopback interface: localhost or a loopback address.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
