package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/gobwas/ws"

	"github.com/presenced/presenced/internal/auth"
	"github.com/presenced/presenced/internal/wire"
	"github.com/presenced/presenced/poller"
	"github.com/presenced/presenced/presence"
)

// presenceApp connects the poller's callbacks to the presence hub: each
// connection's Session lives in its Conn value. handler calls it.
type presenceApp struct {
	hub    *presence.Hub         // static
	closes presence.CloseCounter // static: the closed metric, for connections without a session
}

func (a presenceApp) OnOpen(c *poller.Conn) {
	c.SetValue(a.hub.Open((*connSink)(c)))
}

// session is c's Session; nil if OnOpen panicked before storing it (the
// poller is then closing c with 1011, and there is nothing to handle).
func session(c *poller.Conn) *presence.Session {
	s, _ := c.Value().(*presence.Session)
	return s
}

func (presenceApp) OnMessage(c *poller.Conn, op ws.OpCode, msg []byte) {
	s := session(c)
	if s == nil {
		return
	}
	if op != ws.OpText {
		s.HandleBinary()
		return
	}
	s.HandleText(msg)
}

func (presenceApp) OnDeadline(c *poller.Conn) {
	if s := session(c); s != nil {
		s.HandleDeadline()
	}
}

// OnClose ends the session and returns why the connection ended, as
// presence decided (and counted) it, or counts it as internal when OnOpen
// panicked before a session was opened.
func (a presenceApp) OnClose(c *poller.Conn, info poller.CloseInfo) presence.CloseReason {
	if s := session(c); s != nil {
		return s.HandleClose(connEnd(info))
	}
	a.closes.Inc(presence.CloseInternal)
	return presence.CloseInternal
}

// connEnd says what the poller saw when a connection ended, in presence's
// terms: presence decides the reason and the leave mode.
func connEnd(info poller.CloseInfo) presence.ConnEnd {
	end := presence.ConnEnd{Code: wire.CloseCode(info.Code)}
	switch info.Reason {
	case poller.CloseServer:
		end.Cause = presence.EndClosed
	case poller.ClosePeer:
		end.Cause = presence.EndPeer
	case poller.CloseReset:
		end.Cause = presence.EndLost
	case poller.CloseProtocol:
		end.Cause = presence.EndProtocol
	case poller.CloseTimeout:
		end.Cause = presence.EndTimeout
	case poller.CloseShutdown:
		end.Cause = presence.EndShutdown
	case poller.ClosePanic:
		end.Cause = presence.EndFailed
	default:
		// A reason this glue does not know: a connection lost, unless the
		// poller said the server failed.
		end.Cause = presence.EndLost
		if info.Code == ws.StatusInternalServerError {
			end.Cause = presence.EndFailed
		}
	}
	return end
}

// connSink is a poller.Conn seen as a presence.Sink. The conversion from
// *poller.Conn costs nothing.
type connSink poller.Conn

var _ presence.Sink = (*connSink)(nil)

func (c *connSink) conn() *poller.Conn { return (*poller.Conn)(c) }

// Send copies: presence reuses the frames of its replies.
func (c *connSink) Send(frame []byte) error { return c.conn().SendCopy(frame) }

func (c *connSink) Offer(frame []byte) error { return c.conn().Offer(frame) }

func (c *connSink) Close(code wire.CloseCode, reason string) bool {
	return c.conn().Close(ws.StatusCode(code), reason)
}

func (c *connSink) SetDeadline(t time.Time) { c.conn().SetDeadline(t) }

func (c *connSink) Buffered() int { return c.conn().OutboxLen() }

// frame wraps a presence payload in a WebSocket text frame.
func frame(dst, payload []byte) []byte { return poller.AppendTextFrame(dst, payload) }

// jwtAuth verifies hello and auth tokens with internal/auth.
type jwtAuth struct {
	v *auth.Verifier // static
}

var _ presence.Authenticator = jwtAuth{}

// Authenticate refuses every token Verify refuses: Verify checks the token
// against keys held in memory, so each of its errors is the token's fault
// (they all wrap auth.ErrInvalidToken), never a verifier failure. Presence's
// "verifier failed" handling (err internal; 1011 at hello) is for
// Authenticators that can fail, given as Config.Presence.Auth.
func (a jwtAuth) Authenticate(token string) (presence.Identity, error) {
	c, err := a.v.Verify(token)
	if err != nil {
		return presence.Identity{}, fmt.Errorf("%w: %w", presence.ErrUnauthorized, err)
	}
	id := presence.Identity{User: c.Subject, Expires: c.Expires}
	if c.Rooms != nil {
		id.Rooms = c
	}
	return id, nil
}

var errNoAuth = errors.New("server: no way to verify clients: give a JWT key (-jwt-secret, -jwt-secret-file or -jwt-public-key), or -insecure for development")
