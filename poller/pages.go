package poller

import (
	"bytes"
	"fmt"
	"strings"
)

// page is one response of Config.Pages: resp[:head] is what HEAD gets.
type page struct {
	resp []byte // static: written as is to every request, never copied
	head int    // length of the status line and headers, with the blank line
}

// pages maps a path to its page; static after construction.
type pages map[string]page

// newPages validates Config.Pages and indexes the end of each response's
// headers, so a request costs one map lookup.
func newPages(cfg Config) (pages, error) {
	if len(cfg.Pages) == 0 {
		return nil, nil
	}
	ps := make(pages, len(cfg.Pages))
	for path, resp := range cfg.Pages {
		switch {
		case !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "? \r\n"):
			return nil, fmt.Errorf("poller: Pages: bad path %q", path)
		case path == cfg.Path:
			return nil, fmt.Errorf("poller: Pages: %q is the WebSocket path", path)
		case !bytes.HasPrefix(resp, []byte("HTTP/1.")):
			return nil, fmt.Errorf("poller: Pages[%q]: not an HTTP response", path)
		}
		end := bytes.Index(resp, headerEnd)
		if end < 0 {
			return nil, fmt.Errorf("poller: Pages[%q]: no end of headers", path)
		}
		ps[path] = page{resp: resp, head: end + len(headerEnd)}
	}
	return ps, nil
}

// lookup returns the response to req, a complete request head, if it is a
// GET or HEAD of a page. The query string is ignored. It does not allocate.
func (ps pages) lookup(req []byte) ([]byte, bool) {
	if len(ps) == 0 {
		return nil, false
	}
	head := false
	switch {
	case bytes.HasPrefix(req, []byte("GET ")):
		req = req[len("GET "):]
	case bytes.HasPrefix(req, []byte("HEAD ")):
		req, head = req[len("HEAD "):], true
	default:
		return nil, false
	}
	end := bytes.IndexAny(req, " ?\r\n")
	if end < 0 {
		return nil, false
	}
	pg, ok := ps[string(req[:end])]
	switch {
	case !ok:
		return nil, false
	case head:
		return pg.resp[:pg.head], true
	}
	return pg.resp, true
}
