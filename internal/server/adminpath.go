package server

import (
	"net/http"
	"net/url"
	"path"
	"strings"
)

// guard answers the requests under /api/ that mux would redirect before
// any handler runs (an unclean path: "//", "." or ".." segments; "/api"
// without the slash) as the API does: after authentication, in JSON, and
// counted (endpoint "redirect"), with a 307 to the clean path.
func (a *adminAPI) guard(mux http.Handler) http.Handler {
	redirect := a.endpoint("redirect", func(r *http.Request) (any, *apiError) {
		clean := cleanPath(r.URL.EscapedPath())
		if clean == "/api" {
			clean = "/api/"
		}
		u := url.URL{Path: clean, RawPath: clean, RawQuery: r.URL.RawQuery}
		if p, err := url.PathUnescape(clean); err == nil {
			u.Path = p // RawPath keeps an escaped "/" (%2F) escaped
		}
		loc := u.String()
		return nil, &apiError{status: http.StatusTemporaryRedirect, code: "redirect",
			message: "the path is not clean: use " + loc, location: loc}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		if r.Method != http.MethodConnect && (p == "/api" || strings.HasPrefix(p, "/api/") && cleanPath(p) != p) {
			redirect.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath is net/http's path cleaning of ServeMux: path.Clean, keeping
// a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		if len(p) == len(np)+1 && strings.HasPrefix(p, np) {
			np = p
		} else {
			np += "/"
		}
	}
	return np
}
