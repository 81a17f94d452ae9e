// Package demo is presenced's demo page: an HTML page, its script and
// style sheet (static/, embedded) and the JavaScript SDK it uses
// (clients/js), encoded once as complete HTTP responses that the public
// listener serves from memory (poller.Config.Pages).
//
// Usage (internal/server does this when Config.Demo is set):
//
//	pages, err := demo.Pages(demo.Config{WSPath: "/ws", Insecure: true})
//	// pages["/demo"] is "HTTP/1.1 200 OK\r\n...<!doctype html>..."
//
// The page is rendered once with the WebSocket path and whether the server
// accepts a bare user name (-insecure); with a token it asks for one. It
// imports nothing of the server: poller and presence never see it. The
// returned map and its slices are new on each call and never modified by
// the package.
package demo

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"

	jsclient "github.com/presenced/presenced/clients/js"
)

//go:embed static/index.html static/app.js static/style.css
var static embed.FS

// Prefix is where the page is served: /demo, /demo/ and the files under it.
const Prefix = "/demo"

// Config says what the page must know of the server.
type Config struct {
	// WSPath is the WebSocket path the page connects to, on the origin it
	// was loaded from. Default "/ws".
	WSPath string
	// Insecure: the server accepts a user name instead of a token
	// (presence.Config.Insecure), so the page asks for a name.
	Insecure bool
}

// headers every response carries: the page loads only its own files and
// connects only to WebSockets.
const securityHeaders = "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:\r\n" +
	"X-Content-Type-Options: nosniff\r\n" +
	"Referrer-Policy: no-referrer\r\n" +
	"Cache-Control: no-cache\r\n"

// Pages returns the complete HTTP responses of the demo by path:
// /demo and /demo/ (the page), /demo/app.js, /demo/style.css and
// /demo/presenced.js (the SDK, clients/js Source).
func Pages(cfg Config) (map[string][]byte, error) {
	if cfg.WSPath == "" {
		cfg.WSPath = "/ws"
	}
	page, err := render(cfg)
	if err != nil {
		return nil, err
	}
	app, err := static.ReadFile("static/app.js")
	if err != nil {
		return nil, err
	}
	css, err := static.ReadFile("static/style.css")
	if err != nil {
		return nil, err
	}
	html := response("text/html; charset=utf-8", page)
	return map[string][]byte{
		Prefix:                   html,
		Prefix + "/":             html,
		Prefix + "/app.js":       response("text/javascript; charset=utf-8", app),
		Prefix + "/style.css":    response("text/css; charset=utf-8", css),
		Prefix + "/presenced.js": response("text/javascript; charset=utf-8", jsclient.Source),
	}, nil
}

// render fills the page's template with cfg.
func render(cfg Config) ([]byte, error) {
	t, err := template.ParseFS(static, "static/index.html")
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, cfg); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	return b.Bytes(), nil
}

// response encodes a 200 response with body, closed after it.
func response(contentType string, body []byte) []byte {
	b := fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n",
		contentType, len(body), securityHeaders)
	return append(b, body...)
}
