package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/redisbus"
	"github.com/presenced/presenced/internal/wire"
)

// Admin API paging and bounds.
const (
	adminDefaultLimit = 100
	adminMaxLimit     = 1000
	adminTimeout      = 10 * time.Second // bounds a request's Redis reads
	adminMaxReads     = 4                // reads served at once; more answer 503 busy
	// DefaultDisconnectCode closes a disconnected user's connections:
	// 4103 forbidden, after which the contract's clients do not reconnect.
	DefaultDisconnectCode = wire.CloseForbidden
)

// adminAPI serves /api/ (docs/admin.md). Static after construction; safe
// for concurrent use.
type adminAPI struct {
	state adminState
	auth  adminAuth
	log   *slog.Logger
	reqs  *prometheus.CounterVec
	node  string
	reads chan struct{} // a semaphore of adminMaxReads: the reads running
	kicks *tokenBucket  // the disconnects (adminrate.go)
}

// register adds the API's routes to mux.
func (a *adminAPI) register(mux *http.ServeMux) {
	for _, rt := range []struct {
		method, path, name string
		fn                 func(*http.Request) (any, *apiError)
	}{
		{"GET", "/api/rooms/{room}/members", "members", a.limited(a.members)},
		{"GET", "/api/rooms", "rooms", a.limited(a.rooms)},
		{"GET", "/api/users/{user}/rooms", "user_rooms", a.limited(a.userRooms)},
		{"POST", "/api/users/{user}/disconnect", "disconnect", rateLimited(a.kicks, a.disconnect)},
		{"GET", "/api/nodes", "nodes", a.limited(a.nodes)},
	} {
		a.reqs.WithLabelValues(rt.name, "200") // exported from the start
		mux.Handle(rt.method+" "+rt.path, a.endpoint(rt.name, rt.fn))
		// Any other method: 405 (the method-less "/api/" below would say 404).
		allow := rt.method
		if allow == "GET" {
			allow = "GET, HEAD"
		}
		mux.Handle(rt.path, a.endpoint(rt.name, func(*http.Request) (any, *apiError) {
			return nil, &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed",
				message: "use " + rt.method + " for this endpoint", allow: allow}
		}))
	}
	a.reqs.WithLabelValues("unknown", "200")
	mux.Handle("/api/", a.endpoint("unknown", func(*http.Request) (any, *apiError) {
		return nil, notFound("no such endpoint")
	}))
}

// apiError is an error answer: {"error":{"code":...,"message":...}}.
type apiError struct {
	status     int
	code       string
	message    string
	allow      string         // the Allow header of a 405
	location   string         // the Location header of a 307
	retryAfter int            // the Retry-After header (seconds) of a 503 busy or a 429
	extra      map[string]any // more keys of the answer, beside "error"
}

func badRequest(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "bad_request", message: msg}
}

func notFound(msg string) *apiError {
	return &apiError{status: http.StatusNotFound, code: "not_found", message: msg}
}

func unavailable(err error) *apiError {
	if errors.Is(err, redisbus.ErrTooManyRooms) {
		return &apiError{status: http.StatusUnprocessableEntity, code: "too_many_rooms",
			message: "the cluster holds more rooms than one request scans (" + strconv.Itoa(redisbus.MaxScanRooms) + "): narrow the prefix"}
	}
	return &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "reading the cluster's state failed: " + err.Error()}
}

// limited runs fn if fewer than adminMaxReads reads are running, else
// answers 503 busy at once: the reads walk rooms (with a bus, in Redis,
// which also carries the presence writes).
func (a *adminAPI) limited(fn func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		select {
		case a.reads <- struct{}{}:
		default:
			return nil, &apiError{status: http.StatusServiceUnavailable, code: "busy",
				message: strconv.Itoa(adminMaxReads) + " reads are running: retry later", retryAfter: 1}
		}
		defer func() { <-a.reads }()
		return fn(r)
	}
}

// endpoint wraps fn with authentication, the JSON answer, the metric and
// the log.
func (a *adminAPI) endpoint(name string, fn func(*http.Request) (any, *apiError)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body any
		var aerr *apiError
		if status, code, msg := a.auth.check(r); status != 0 {
			aerr = &apiError{status: status, code: code, message: msg}
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="presenced admin"`)
			}
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
			body, aerr = fn(r.WithContext(ctx))
			cancel()
		}
		status := http.StatusOK
		if aerr != nil {
			status = aerr.status
			m := map[string]any{"error": map[string]string{"code": aerr.code, "message": aerr.message}}
			for k, v := range aerr.extra {
				m[k] = v
			}
			body = m
			if aerr.allow != "" {
				w.Header().Set("Allow", aerr.allow)
			}
			if aerr.location != "" {
				w.Header().Set("Location", aerr.location)
			}
			if aerr.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(aerr.retryAfter))
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(body)
		a.reqs.WithLabelValues(name, strconv.Itoa(status)).Inc()
		a.log.Debug("admin request", keyEndpoint, name, keyStatus, status, keyRemote, r.RemoteAddr)
	})
}

// page reads ?limit= and ?cursor=: how many items, and the key after
// which the page starts ("" from the start).
func page(r *http.Request) (limit int, after string, _ *apiError) {
	limit = adminDefaultLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > adminMaxLimit {
			return 0, "", badRequest("limit must be an integer from 1 to " + strconv.Itoa(adminMaxLimit))
		}
		limit = n
	}
	if c := r.URL.Query().Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || !wire.ValidID(string(b)) {
			return 0, "", badRequest("invalid cursor")
		}
		after = string(b)
	}
	return limit, after, nil
}

// pageOf returns the items of sorted keys after after, at most limit,
// and the cursor of the next page ("" if this is the last).
func pageOf(keys []string, after string, limit int) (from, to int, next string) {
	from = 0
	if after != "" {
		from, _ = slices.BinarySearch(keys, after)
		if from < len(keys) && keys[from] == after {
			from++
		}
	}
	to = min(from+limit, len(keys))
	if to < len(keys) {
		next = base64.RawURLEncoding.EncodeToString([]byte(keys[to-1]))
	}
	return from, to, next
}

type memberJSON struct {
	User   string          `json:"user"`
	Status string          `json:"status"`
	Meta   json.RawMessage `json:"meta"`
}

func (a *adminAPI) members(r *http.Request) (any, *apiError) {
	room := r.PathValue("room")
	if !wire.ValidID(room) {
		return nil, badRequest("room must be 1-128 bytes of [A-Za-z0-9._:@/-]")
	}
	limit, after, perr := page(r)
	if perr != nil {
		return nil, perr
	}
	ms, err := a.state.RoomMembers(r.Context(), room)
	if err != nil {
		return nil, unavailable(err)
	}
	if len(ms) == 0 {
		return nil, notFound("no member in room " + room)
	}
	users := make([]string, len(ms))
	for i, m := range ms {
		users[i] = m.User
	}
	from, to, next := pageOf(users, after, limit)
	out := make([]memberJSON, 0, to-from)
	for _, m := range ms[from:to] {
		meta := json.RawMessage("{}")
		if m.Meta != "" {
			meta = json.RawMessage(m.Meta)
		}
		out = append(out, memberJSON{User: m.User, Status: m.Status, Meta: meta})
	}
	return map[string]any{"room": room, "count": len(ms), "members": out, "next_cursor": next}, nil
}

type roomJSON struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
}

func (a *adminAPI) rooms(r *http.Request) (any, *apiError) {
	prefix := r.URL.Query().Get("prefix")
	if prefix != "" && !wire.ValidID(prefix) {
		return nil, badRequest("prefix must be 1-128 bytes of [A-Za-z0-9._:@/-]")
	}
	limit, after, perr := page(r)
	if perr != nil {
		return nil, perr
	}
	names, err := a.state.RoomNames(r.Context(), prefix)
	if err != nil {
		return nil, unavailable(err)
	}
	from, to, next := pageOf(names, after, limit)
	counts, err := a.state.RoomCounts(r.Context(), names[from:to])
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]roomJSON, 0, to-from)
	for _, n := range names[from:to] {
		if c := counts[n]; c > 0 { // emptied since it was listed
			out = append(out, roomJSON{Room: n, Members: c})
		}
	}
	return map[string]any{"prefix": prefix, "count": len(names), "rooms": out, "next_cursor": next}, nil
}

func (a *adminAPI) userRooms(r *http.Request) (any, *apiError) {
	user := r.PathValue("user")
	if !wire.ValidID(user) {
		return nil, badRequest("user must be 1-128 bytes of [A-Za-z0-9._:@/-]")
	}
	rooms, err := a.state.UserRooms(r.Context(), user)
	if err != nil {
		return nil, unavailable(err)
	}
	if len(rooms) == 0 {
		return nil, notFound("user " + user + " is in no room")
	}
	return map[string]any{"user": user, "rooms": rooms}, nil
}

func (a *adminAPI) disconnect(r *http.Request) (any, *apiError) {
	user := r.PathValue("user")
	if !wire.ValidID(user) {
		return nil, badRequest("user must be 1-128 bytes of [A-Za-z0-9._:@/-]")
	}
	code := DefaultDisconnectCode
	if s := r.URL.Query().Get("code"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 4000 || n > 4199 {
			return nil, badRequest("code must be from 4000 to 4199 (4100-4199: the client does not reconnect and its memberships end at once)")
		}
		code = wire.CloseCode(n)
	}
	closed, draining, held, err := a.state.Disconnect(r.Context(), user, code)
	n := closed + draining // a draining connection ends as this close too (presence.Hub.Disconnect)
	// The operator's action, for the audit trail (an error is answered, not logged).
	a.log.Info("admin: user disconnected", keyUser, user, keyCode, int(code), keyClosed, n, keyDraining, draining, keyHeldEnded, held, keyRemote, r.RemoteAddr)
	ans := map[string]any{"user": user, "code": int(code), "reconnect": wire.Reconnect(code), "closed_here": n, "draining_here": draining, "held_ended_here": held, "node": a.node}
	if err != nil {
		// This node's connections are closed; the other nodes were not told.
		return nil, &apiError{status: http.StatusServiceUnavailable, code: "unavailable",
			message: "closed " + strconv.Itoa(n) + " connections on this node, but telling the other nodes failed: " + err.Error(),
			extra:   ans}
	}
	return ans, nil
}

type nodeJSON struct {
	ID    string `json:"id"`
	Addr  string `json:"addr,omitempty"`
	Conns int64  `json:"connections"`
}

func (a *adminAPI) nodes(r *http.Request) (any, *apiError) {
	ns, err := a.state.Nodes(r.Context())
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]nodeJSON, len(ns))
	var total int64
	for i, n := range ns {
		out[i] = nodeJSON{ID: n.ID, Addr: n.Addr, Conns: n.Conns}
		total += max(n.Conns, 0)
	}
	return map[string]any{"count": len(out), "connections": total, "nodes": out}, nil
}

// newAdminAPI builds the API over this node's hub, or the cluster's view
// when the node has a bus.
func (s *Server) newAdminAPI() *adminAPI {
	var st adminState = localState{hub: s.hub, addr: s.Addr}
	if s.bus != nil {
		st = clusterState{Bus: s.bus, hub: s.hub}
	}
	return newAdminAPI(st, newAdminAuth(s.cfg.AdminToken, s.cfg.Presence.Insecure, s.adminLn.Addr()),
		s.log, s.metrics.adminReqs, s.hub.Node())
}

// newAdminAPI builds the API over st with its limits: adminMaxReads reads
// at once, disconnects at adminDisconnectRate.
func newAdminAPI(st adminState, auth adminAuth, log *slog.Logger, reqs *prometheus.CounterVec, node string) *adminAPI {
	return &adminAPI{
		state: st, auth: auth, log: log, reqs: reqs, node: node,
		reads: make(chan struct{}, adminMaxReads),
		kicks: newTokenBucket(adminDisconnectRate, adminDisconnectBurst),
	}
}
