package poller

import (
	"bytes"
	"errors"
	"io"

	"github.com/gobwas/ws"
)

var headerEnd = []byte("\r\n\r\n")

// Responses the poller writes itself; gobwas/ws writes the others.
var (
	resp503 = []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nover capacity")
	resp431 = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	// resp400 answers a request line the upgrader refuses without writing
	// a response (it cannot be parsed).
	resp400 = []byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
)

// Rejections returned by the upgrader's callbacks.
var (
	errRejectPath   = ws.RejectConnectionError(ws.RejectionStatus(404), ws.RejectionReason("not found"))
	errRejectOrigin = ws.RejectConnectionError(ws.RejectionStatus(403), ws.RejectionReason("origin not allowed"))
)

// newUpgrader builds the zero-copy upgrader shared by all connections: it
// checks the path and the Origin allowlist and negotiates no extension.
func newUpgrader(cfg Config) ws.Upgrader {
	allowed := make([][]byte, len(cfg.AllowedOrigins))
	for i, o := range cfg.AllowedOrigins {
		allowed[i] = []byte(o)
	}
	path := []byte(cfg.Path)
	return ws.Upgrader{
		ReadBufferSize: cfg.MaxHeaderBytes,
		OnRequest: func(uri []byte) error {
			if i := bytes.IndexByte(uri, '?'); i >= 0 {
				uri = uri[:i]
			}
			if !bytes.Equal(uri, path) {
				return errRejectPath
			}
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if len(allowed) == 0 || !bytes.EqualFold(key, []byte("Origin")) {
				return nil
			}
			for _, a := range allowed {
				if bytes.EqualFold(a, value) {
					return nil
				}
			}
			return errRejectOrigin
		},
	}
}

// handshakeIO feeds one complete request to the upgrader and collects its
// response, so the upgrade never waits for the socket.
type handshakeIO struct {
	r bytes.Reader
	w bytes.Buffer
}

func (h *handshakeIO) Read(p []byte) (int, error)  { return h.r.Read(p) }
func (h *handshakeIO) Write(p []byte) (int, error) { return h.w.Write(p) }

var _ io.ReadWriter = (*handshakeIO)(nil)

// handshake upgrades once data holds the whole request. It returns the
// bytes used and ok once the connection is open; !ok with n == 0 means the
// request is incomplete, and with n > 0 that it was refused.
func (c *Conn) handshake(data []byte) (n int, ok bool) {
	end := bytes.Index(data, headerEnd)
	if end < 0 {
		if len(data) > c.sh.cfg.MaxHeaderBytes {
			c.refuse(RejectTooLarge, resp431)
			return len(data), false
		}
		return 0, false
	}
	n = end + len(headerEnd)
	if n > c.sh.cfg.MaxHeaderBytes {
		c.refuse(RejectTooLarge, resp431)
		return len(data), false
	}
	c.mu.Lock()
	pending := c.reject
	c.mu.Unlock()
	if pending != 0 { // over a cap since accept
		c.refuse(pending, resp503)
		return len(data), false
	}
	if resp, ok := c.sh.pages.lookup(data[:n]); ok {
		c.refuse(RejectPage, resp) // static bytes: queued, not copied, whatever Outbox says
		return len(data), false
	}
	var hio handshakeIO
	hio.r.Reset(data[:n])
	_, err := c.sh.upgrader.Upgrade(&hio)
	if err != nil {
		resp := hio.w.Bytes()
		if len(resp) == 0 {
			resp = resp400
		}
		c.refuse(rejectReason(err), resp)
		return len(data), false
	}
	c.mu.Lock()
	c.state = stateOpen
	c.opened = true
	c.rd.upgraded = true
	c.eng.setDeadline(c, 0)
	c.enqueueLocked(hio.w.Bytes())
	c.mu.Unlock()
	c.callOpen()
	return n, true
}

// refuse queues an HTTP error response (or a page); once it is written the
// connection lingers (see lingerLocked), and CloseTimeout bounds each of
// the two. The outbox bound does not apply.
func (c *Conn) refuse(r RejectReason, resp []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reject = r
	c.state = stateRejecting
	c.enqueueLocked(resp)
	if r == RejectPage {
		// A page (tens of KB) may need many round trips on a slow link: it
		// gets the handshake's time to be written, an error CloseTimeout.
		c.eng.setDeadline(c, nowNano()+int64(c.sh.cfg.HandshakeTimeout))
		return
	}
	c.armCloseTimeoutLocked()
}

func rejectReason(err error) RejectReason {
	switch {
	case errors.Is(err, errRejectPath):
		return RejectNotFound
	case errors.Is(err, errRejectOrigin):
		return RejectOrigin
	}
	return RejectBadRequest
}
