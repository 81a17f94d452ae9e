package poller

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// step is one move of a protocol case: the client sends bytes, or reads
// the next server frame and compares it.
type step struct {
	send []byte
	want *rawFrame
}

func send(frames ...[]byte) step { return step{send: cat(frames...)} }

// expect reads the next server frame: a final frame with op and payload.
func expect(op ws.OpCode, payload string) step {
	return step{want: &rawFrame{fin: true, op: op, payload: []byte(payload)}}
}

// protoCase is one RFC 6455 rule, checked over a real socket.
type protoCase struct {
	name  string
	steps []step
	// wantClose is the close code the server must send after the steps:
	// an error code, or the echo of the client's own close frame. 0 means
	// the connection must stay open: the test then closes it with 1000.
	wantClose  ws.StatusCode
	wantReason string // the close reason (an echo repeats the client's)
	// wantBy is the CloseInfo.Reason OnClose must report: ClosePeer for a
	// close the client started, CloseProtocol for an error.
	wantBy CloseReason
}

// failWith is a case where the server must fail the connection with code
// once the client has sent frames.
func failWith(name string, code ws.StatusCode, steps ...step) protoCase {
	return protoCase{name: name, steps: steps, wantClose: code, wantBy: CloseProtocol}
}

// echoClose is a case where the client closes with code and reason and the
// server must echo it.
func echoClose(name string, code uint16, reason string) protoCase {
	return protoCase{
		name: name, steps: []step{send(clientClose(code, reason))},
		wantClose: ws.StatusCode(code), wantReason: reason, wantBy: ClosePeer,
	}
}

// staysOpen is a case where the connection must stay open after the steps.
func staysOpen(name string, steps ...step) protoCase { return protoCase{name: name, steps: steps} }

func u64(n uint64) *uint64 { return &n }

// headerOnly is the header of a masked frame announcing n payload bytes
// in the given length form, without the payload.
func headerOnly(fin bool, op ws.OpCode, form int, n uint64) []byte {
	return rawFrame{fin: fin, op: op, masked: true, mask: testMask, lenForm: form, length: u64(n)}.header()
}

// protocolCases lists the RFC 6455 rules for the default Config
// (MaxMessage 4096). The handler echoes every message.
func protocolCases() []protoCase {
	const (
		text, binary, cont = ws.OpText, ws.OpBinary, ws.OpContinuation
	)
	big := strings.Repeat("x", 4096)
	p125 := strings.Repeat("p", 125)
	p126 := strings.Repeat("p", 126)
	cases := []protoCase{
		// Data frames and reassembly.
		staysOpen("text", send(clientText("hello")), expect(text, "hello")),
		staysOpen("binary reaches OnMessage as binary", send(clientBinary("\x00\xff\x01")), expect(binary, "\x00\xff\x01")),
		staysOpen("empty text", send(clientText("")), expect(text, "")),
		staysOpen("empty binary", send(clientBinary("")), expect(binary, "")),
		staysOpen("empty fragmented text", send(clientFrag(false, text, ""), clientFrag(false, cont, ""), clientFrag(true, cont, "")), expect(text, "")),
		staysOpen("fragmented text", send(clientFrag(false, text, "he"), clientFrag(false, cont, "ll"), clientFrag(true, cont, "o")), expect(text, "hello")),
		staysOpen("fragmented binary", send(clientFrag(false, binary, "\x00"), clientFrag(true, cont, "\xff")), expect(binary, "\x00\xff")),
		staysOpen("two messages in one write", send(clientText("a"), clientBinary("b")), expect(text, "a"), expect(binary, "b")),
		staysOpen("multibyte utf8 text", send(clientText("héllo wörld €𝄞")), expect(text, "héllo wörld €𝄞")),
		staysOpen("16-bit length", send(clientText(strings.Repeat("y", 300))), expect(text, strings.Repeat("y", 300))),
		staysOpen("64-bit length form for a small frame", send(rawFrame{fin: true, op: text, masked: true, mask: testMask, lenForm: 64, payload: []byte("long form")}.bytes()), expect(text, "long form")),
		staysOpen("message of exactly MaxMessage", send(clientText(big)), expect(text, big)),
		staysOpen("fragments summing to exactly MaxMessage", send(clientFrag(false, binary, big[:4000]), clientFrag(true, cont, big[4000:])), expect(binary, big)),

		// Masking, reserved bits and opcodes.
		failWith("unmasked frame", ws.StatusProtocolError, send(rawFrame{fin: true, op: text, payload: []byte("hello")}.bytes())),
		failWith("unmasked ping", ws.StatusProtocolError, send(rawFrame{fin: true, op: ws.OpPing}.bytes())),
		failWith("rsv1", ws.StatusProtocolError, send(rawFrame{fin: true, rsv: 4, op: text, masked: true, mask: testMask, payload: []byte("x")}.bytes())),
		failWith("rsv2", ws.StatusProtocolError, send(rawFrame{fin: true, rsv: 2, op: text, masked: true, mask: testMask, payload: []byte("x")}.bytes())),
		failWith("rsv3", ws.StatusProtocolError, send(rawFrame{fin: true, rsv: 1, op: text, masked: true, mask: testMask, payload: []byte("x")}.bytes())),
		failWith("rsv on a ping", ws.StatusProtocolError, send(rawFrame{fin: true, rsv: 4, op: ws.OpPing, masked: true, mask: testMask}.bytes())),

		// Control frames.
		staysOpen("ping answered with its payload", send(clientPing("are you there")), expect(ws.OpPong, "are you there")),
		staysOpen("empty ping", send(clientPing("")), expect(ws.OpPong, "")),
		staysOpen("ping of 125 bytes", send(clientPing(p125)), expect(ws.OpPong, p125)),
		staysOpen("unsolicited pong ignored", send(clientPong("x"), clientText("after")), expect(text, "after")),
		staysOpen("ping between fragments answered at once",
			send(clientFrag(false, text, "hel")), send(clientPing("p1")), expect(ws.OpPong, "p1"),
			send(clientFrag(false, cont, "l")), send(clientPing("p2")), expect(ws.OpPong, "p2"),
			send(clientFrag(true, cont, "o")), expect(text, "hello")),
		staysOpen("pong between fragments", send(clientFrag(false, binary, "a"), clientPong("x"), clientFrag(true, cont, "b")), expect(binary, "ab")),
		failWith("ping of 126 bytes", ws.StatusProtocolError, send(clientPing(p126))),
		failWith("pong of 126 bytes", ws.StatusProtocolError, send(clientPong(p126))),
		failWith("close of 126 bytes", ws.StatusProtocolError, send(clientClose(1000, p126[:124]))),
		failWith("ping announcing 126 bytes, header only", ws.StatusProtocolError, send(headerOnly(true, ws.OpPing, 16, 126))),
		failWith("fragmented ping", ws.StatusProtocolError, send(cframe(false, ws.OpPing, "x").bytes())),
		failWith("fragmented close", ws.StatusProtocolError, send(cframe(false, ws.OpClose, "\x03\xe8").bytes())),

		// Fragmentation rules.
		failWith("orphan continuation", ws.StatusProtocolError, send(clientFrag(true, cont, "x"))),
		failWith("orphan non-final continuation", ws.StatusProtocolError, send(clientFrag(false, cont, "x"))),
		failWith("continuation after a complete message", ws.StatusProtocolError, send(clientText("a")), expect(text, "a"), send(clientFrag(true, cont, "b"))),
		failWith("text inside a fragmented text", ws.StatusProtocolError, send(clientFrag(false, text, "a"), clientText("b"))),
		failWith("binary inside a fragmented text", ws.StatusProtocolError, send(clientFrag(false, text, "a"), clientFrag(false, binary, "b"))),
		failWith("text inside a fragmented binary", ws.StatusProtocolError, send(clientFrag(false, binary, "a"), clientFrag(true, text, "b"))),

		// UTF-8, checked incrementally across fragments.
		staysOpen("code point split across fragments", send(clientFrag(false, text, "price: \xe2\x82"), clientFrag(true, cont, "\xac")), expect(text, "price: €")),
		staysOpen("4-byte code point split byte by byte", send(clientFrag(false, text, "\xf0"), clientFrag(false, cont, "\x9d"), clientFrag(false, cont, "\x84"), clientFrag(true, cont, "\x9e")), expect(text, "𝄞")),
		staysOpen("U+FFFD split across fragments", send(clientFrag(false, text, "\xef\xbf"), clientFrag(true, cont, "\xbd")), expect(text, "\ufffd")),
		staysOpen("U+FFFD in one frame", send(clientText("a\ufffdb")), expect(text, "a\ufffdb")),
		staysOpen("empty fragments around a split code point", send(clientFrag(false, text, "\xc3"), clientFrag(false, cont, ""), clientFrag(true, cont, "\xa9")), expect(text, "é")),
		staysOpen("invalid utf8 in binary is fine", send(clientBinary("\xff\xfe")), expect(binary, "\xff\xfe")),
		failWith("invalid byte 0xff", ws.StatusInvalidFramePayloadData, send(clientText("a\xffb"))),
		failWith("overlong encoding", ws.StatusInvalidFramePayloadData, send(clientText("\xc0\xaf"))),
		failWith("surrogate half", ws.StatusInvalidFramePayloadData, send(clientText("\xed\xa0\x80"))),
		failWith("code point above U+10FFFF", ws.StatusInvalidFramePayloadData, send(clientText("\xf4\x90\x80\x80"))),
		failWith("truncated code point at the end of a message", ws.StatusInvalidFramePayloadData, send(clientText("ab\xe2\x82"))),
		failWith("invalid first fragment fails before the message ends", ws.StatusInvalidFramePayloadData, send(clientFrag(false, text, "ok\xff"))),
		failWith("invalid continuation of a split code point", ws.StatusInvalidFramePayloadData, send(clientFrag(false, text, "\xe2\x82"), clientFrag(false, cont, "A"))),
		failWith("surrogate split across fragments", ws.StatusInvalidFramePayloadData, send(clientFrag(false, text, "\xed"), clientFrag(false, cont, "\xa0\x80"))),
		failWith("overlong prefix split across fragments", ws.StatusInvalidFramePayloadData, send(clientFrag(false, text, "\xe0"), clientFrag(false, cont, "\x80"))),
		failWith("message ends inside a code point", ws.StatusInvalidFramePayloadData, send(clientFrag(false, text, "a\xe2\x82"), clientFrag(true, cont, ""))),
		failWith("invalid utf8 after a ping between fragments", ws.StatusInvalidFramePayloadData, send(clientFrag(false, text, "\xf0\x9d")), send(clientPing("p")), expect(ws.OpPong, "p"), send(clientFrag(true, cont, "A"))),

		// Close frames.
		echoClose("close 1000 with reason", 1000, "bye"),
		echoClose("close 1001", 1001, ""),
		echoClose("close 3000", 3000, "app"),
		echoClose("close 4999", 4999, "private"),
		echoClose("close with utf8 reason", 1000, "tschüss"),
		{name: "close without payload", steps: []step{send(clientCloseRaw(""))}, wantClose: ws.StatusNoStatusRcvd, wantBy: ClosePeer},
		{name: "close after data", steps: []step{send(clientText("last"), clientClose(1000, "done")), expect(text, "last")}, wantClose: 1000, wantReason: "done", wantBy: ClosePeer},
		{name: "close between fragments", steps: []step{send(clientFrag(false, text, "never"), clientClose(1001, ""))}, wantClose: 1001, wantBy: ClosePeer},
		failWith("close with a 1-byte payload", ws.StatusProtocolError, send(clientCloseRaw("\x03"))),
		failWith("close reason not utf8", ws.StatusInvalidFramePayloadData, send(clientClose(1000, "\xff\xfe"))),

		// Message size (MaxMessage 4096), checked before the payload arrives.
		failWith("header announcing MaxMessage+1, header only", ws.StatusMessageTooBig, send(headerOnly(true, text, 16, 4097))),
		failWith("64-bit header announcing 4 GiB, header only", ws.StatusMessageTooBig, send(headerOnly(true, binary, 64, 1<<32))),
		failWith("first fragment over MaxMessage, header only", ws.StatusMessageTooBig, send(headerOnly(false, text, 16, 5000))),
		failWith("fragments summing over MaxMessage", ws.StatusMessageTooBig, send(clientFrag(false, binary, big[:4000])), send(headerOnly(true, cont, 7, 97))),
		failWith("many small fragments over MaxMessage", ws.StatusMessageTooBig, send(clientFrag(false, binary, strings.Repeat("z", 100)), slices.Repeat(clientFrag(false, cont, strings.Repeat("z", 100)), 40))),
		failWith("64-bit length with the top bit set", ws.StatusProtocolError, send(headerOnly(true, binary, 64, 1<<63))),
		failWith("64-bit length all ones", ws.StatusProtocolError, send(headerOnly(true, binary, 64, ^uint64(0)))),
	}

	// Every reserved opcode.
	for op := ws.OpCode(3); op <= 0xF; op++ {
		if op >= ws.OpClose && op <= ws.OpPong {
			continue
		}
		cases = append(cases, failWith(fmt.Sprintf("reserved opcode %#x", byte(op)), ws.StatusProtocolError,
			send(cframe(true, op, "x").bytes())))
	}
	// Close codes a peer must not send.
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535} {
		cases = append(cases, failWith(fmt.Sprintf("invalid close code %d", code), ws.StatusProtocolError,
			send(clientClose(code, ""))))
	}
	// Close codes a peer may send are echoed.
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999} {
		cases = append(cases, echoClose(fmt.Sprintf("valid close code %d", code), code, "r"))
	}
	return cases
}

// TestProtocol checks every RFC 6455 rule against every engine, once with
// each frame in one write and once with the input chopped into 1-byte
// writes. One server per engine serves all cases at once.
func TestProtocol(t *testing.T) {
	cases := protocolCases()
	forEachEngine(t, func(t *testing.T, engine string) {
		srv, rec := startRecorded(t, engine, Config{})
		t.Cleanup(func() { rec.check(t) })
		for _, mode := range []struct {
			name string
			chop bool
		}{{"whole", false}, {"chopped", true}} {
			t.Run(mode.name, func(t *testing.T) {
				for _, tc := range cases {
					t.Run(tc.name, func(t *testing.T) {
						t.Parallel()
						runProtoCase(t, srv, rec, tc, mode.chop)
					})
				}
			})
		}
	})
}

func runProtoCase(t *testing.T, srv *testServer, rec *recorder, tc protoCase, chop bool) {
	c := dialRaw(t, srv.Addr())
	c.upgrade()
	c.chop = chop
	var wantMsgs []message
	for i, st := range tc.steps {
		if st.send != nil {
			if err := c.write(st.send); err != nil {
				t.Logf("step %d: write: %v", i, err)
			}
		}
		if w := st.want; w != nil {
			f, err := c.readFrame()
			if err != nil {
				t.Fatalf("step %d: want %v, read: %v", i, w, err)
			}
			if f.op != w.op || !f.fin || string(f.payload) != string(w.payload) {
				t.Fatalf("step %d: got frame %v, want %v", i, f, w)
			}
			if w.op == ws.OpText || w.op == ws.OpBinary {
				wantMsgs = append(wantMsgs, message{w.op, string(w.payload)})
			}
		}
	}

	wantInfo := CloseInfo{Reason: tc.wantBy, Code: tc.wantClose}
	if tc.wantClose == 0 {
		c.closeHandshake(1000, "bye")
		wantInfo = CloseInfo{Reason: ClosePeer, Code: 1000}
	} else {
		code, reason, before, err := c.readClose()
		if err != nil {
			t.Fatalf("want close %d, read: %v (frames before: %v)", tc.wantClose, err, before)
		}
		if len(before) > 0 {
			t.Fatalf("want close %d, got frames first: %v", tc.wantClose, before)
		}
		if code != tc.wantClose || reason != tc.wantReason {
			t.Fatalf("close: got %d %q, want %d %q", code, reason, tc.wantClose, tc.wantReason)
		}
		if tc.wantBy != ClosePeer { // answer the server's close, as a client must
			c.chop = false
			c.write(clientClose(uint16(code), ""))
		}
		c.expectEOF()
	}

	info := rec.closeInfo(t, c.localAddr())
	if info.Reason != wantInfo.Reason || info.Code != wantInfo.Code {
		t.Errorf("OnClose: got %v/%d (err %v), want %v/%d", info.Reason, info.Code, info.Err, wantInfo.Reason, wantInfo.Code)
	}
	if wantInfo.Reason == CloseProtocol && info.Err == nil {
		t.Errorf("OnClose: CloseProtocol without an Err")
	}
	if got := rec.messages(c.localAddr()); !slices.Equal(got, wantMsgs) {
		t.Errorf("OnMessage saw %v, want %v", got, wantMsgs)
	}
}

// upgradeCase is one opening handshake.
type upgradeCase struct {
	name       string
	cfg        Config
	req        string
	wantStatus int
	wantReject RejectReason // for refused upgrades
	// check, if set, runs on an upgraded connection (after the response);
	// otherwise an echo round trip and a close handshake are done.
	check func(t *testing.T, c *rawClient, resp *http.Response)
}

// paddedRequest is an upgrade request padded with a header to exactly n
// bytes, terminator included.
func paddedRequest(n int) string {
	base := upgradeRequest("/ws", testKey)
	base = base[:len(base)-2] // drop the final CRLF
	const name = "X-Pad: "
	pad := n - len(base) - len(name) - 4
	return base + name + strings.Repeat("a", pad) + "\r\n\r\n"
}

func upgradeCases() []upgradeCase {
	origins := Config{AllowedOrigins: []string{"https://app.example.com", "http://localhost:3000"}}
	small := Config{MaxHeaderBytes: 512}
	req := func(extra ...string) string { return upgradeRequest("/ws", testKey, extra...) }
	without := func(header string) string {
		lines := strings.Split(req(), "\r\n")
		lines = slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(l, header+":") })
		return strings.Join(lines, "\r\n")
	}
	return []upgradeCase{
		{name: "valid", req: req(), wantStatus: 101},
		{name: "path with a query", req: upgradeRequest("/ws?token=abc", testKey), wantStatus: 101},
		{name: "header names in lower case", req: "GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: " + testKey + "\r\n\r\n", wantStatus: 101},
		{name: "connection header with several tokens", req: strings.Replace(req(), "Connection: Upgrade", "Connection: keep-alive, Upgrade", 1), wantStatus: 101},
		{name: "wrong path", req: upgradeRequest("/other", testKey), wantStatus: 404, wantReject: RejectNotFound},
		{name: "path prefix", req: upgradeRequest("/ws/x", testKey), wantStatus: 404, wantReject: RejectNotFound},
		{name: "POST", req: strings.Replace(req(), "GET", "POST", 1), wantStatus: 405, wantReject: RejectBadRequest},
		{name: "HTTP/1.0", req: strings.Replace(req(), "HTTP/1.1", "HTTP/1.0", 1), wantStatus: 505, wantReject: RejectBadRequest},
		{name: "missing Upgrade", req: without("Upgrade"), wantStatus: 400, wantReject: RejectBadRequest},
		{name: "Upgrade not websocket", req: strings.Replace(req(), "Upgrade: websocket", "Upgrade: h2c", 1), wantStatus: 400, wantReject: RejectBadRequest},
		{name: "missing Connection", req: without("Connection"), wantStatus: 400, wantReject: RejectBadRequest},
		{name: "missing Host", req: without("Host"), wantStatus: 400, wantReject: RejectBadRequest},
		{name: "missing Sec-WebSocket-Key", req: without("Sec-WebSocket-Key"), wantStatus: 400, wantReject: RejectBadRequest},
		{name: "short Sec-WebSocket-Key", req: upgradeRequest("/ws", "c2hvcnQ="), wantStatus: 400, wantReject: RejectBadRequest},
		{name: "missing Sec-WebSocket-Version", req: without("Sec-WebSocket-Version"), wantStatus: 400, wantReject: RejectBadRequest},
		{name: "Sec-WebSocket-Version 8", req: strings.Replace(req(), "Version: 13", "Version: 8", 1), wantStatus: 426, wantReject: RejectBadRequest},
		{name: "malformed request line", req: "HELLO\r\n\r\n", wantStatus: 400, wantReject: RejectBadRequest},
		{name: "malformed header line", req: strings.Replace(req(), "Host: 127.0.0.1", "no colon here", 1), wantStatus: 400, wantReject: RejectBadRequest},

		{name: "origin allowed", cfg: origins, req: req("Origin: https://app.example.com"), wantStatus: 101},
		{name: "origin allowed, other case", cfg: origins, req: req("Origin: HTTPS://App.Example.COM"), wantStatus: 101},
		{name: "second allowed origin", cfg: origins, req: req("Origin: http://localhost:3000"), wantStatus: 101},
		{name: "no origin (non-browser client)", cfg: origins, req: req(), wantStatus: 101},
		{name: "origin not allowed", cfg: origins, req: req("Origin: https://evil.example.com"), wantStatus: 403, wantReject: RejectOrigin},
		{name: "origin with a suffix", cfg: origins, req: req("Origin: https://app.example.com.evil.net"), wantStatus: 403, wantReject: RejectOrigin},
		{name: "any origin without an allowlist", req: req("Origin: https://anything.example"), wantStatus: 101},

		{
			name: "permessage-deflate offered, not negotiated",
			req:  req("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"), wantStatus: 101,
			check: func(t *testing.T, c *rawClient, resp *http.Response) {
				if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) > 0 {
					t.Fatalf("response negotiates extensions %q", ext)
				}
				echoRoundTrip(t, c, strings.Repeat("compressible ", 20))
				c.closeHandshake(1000, "")
			},
		},
		{
			name:       "frames pipelined after the request",
			req:        req() + string(cat(clientText("early"), clientPing("p"), clientFrag(false, ws.OpBinary, "a"), clientFrag(true, ws.OpContinuation, "b"))),
			wantStatus: 101,
			check: func(t *testing.T, c *rawClient, resp *http.Response) {
				for _, want := range []rawFrame{{op: ws.OpText, payload: []byte("early")}, {op: ws.OpPong, payload: []byte("p")}, {op: ws.OpBinary, payload: []byte("ab")}} {
					f := c.mustReadFrame()
					if f.op != want.op || string(f.payload) != string(want.payload) {
						t.Fatalf("got %v, want %v", f, want)
					}
				}
				c.closeHandshake(1000, "")
			},
		},
		{
			name: "close pipelined after the request",
			req:  req() + string(clientClose(1000, "at once")), wantStatus: 101,
			check: func(t *testing.T, c *rawClient, resp *http.Response) {
				code, reason, _, err := c.readClose()
				if err != nil || code != 1000 || reason != "at once" {
					t.Fatalf("close echo: %d %q %v", code, reason, err)
				}
				c.expectEOF()
			},
		},

		{name: "request of exactly MaxHeaderBytes", cfg: small, req: paddedRequest(512), wantStatus: 101},
		{name: "request over MaxHeaderBytes", cfg: small, req: paddedRequest(513), wantStatus: 431, wantReject: RejectTooLarge},
		{name: "unterminated request over MaxHeaderBytes", cfg: small, req: paddedRequest(600)[:513], wantStatus: 431, wantReject: RejectTooLarge},
		{name: "default MaxHeaderBytes", req: paddedRequest(8193), wantStatus: 431, wantReject: RejectTooLarge},
	}
}

// echoRoundTrip sends a text message and reads its echo.
func echoRoundTrip(t testing.TB, c *rawClient, msg string) {
	t.Helper()
	c.mustWrite(clientText(msg))
	f := c.mustReadFrame()
	if f.op != ws.OpText || string(f.payload) != msg {
		t.Fatalf("echo: got %v, want text %q", f, msg)
	}
}

// TestUpgrade checks the opening handshake: each request sent whole and
// chopped into 1-byte writes.
func TestUpgrade(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		for _, tc := range upgradeCases() {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				srv, rec := startRecorded(t, engine, tc.cfg)
				refused := 0
				for _, chop := range []bool{false, true} {
					c := dialRaw(t, srv.Addr())
					c.chop = chop
					resp, err := c.request(tc.req)
					if err != nil {
						t.Fatalf("chop=%v: %v", chop, err)
					}
					if resp.StatusCode != tc.wantStatus {
						t.Fatalf("chop=%v: status %d, want %d", chop, resp.StatusCode, tc.wantStatus)
					}
					if tc.wantStatus != 101 {
						c.expectEOF()
						refused++
						rec.waitReject(t, tc.wantReject, refused)
						continue
					}
					checkUpgraded(t, resp, testKey)
					c.chop = false
					if tc.check != nil {
						tc.check(t, c, resp)
					} else {
						echoRoundTrip(t, c, "hi")
						c.closeHandshake(1000, "")
					}
				}
				if got := rec.rejected(); tc.wantStatus == 101 && len(got) > 0 {
					t.Errorf("OnReject called for an upgrade: %v", got)
				}
				rec.check(t)
			})
		}
	})
}

// TestServerClose: Conn.Close sends its code and reason; the client's echo
// ends the connection with CloseServer.
func TestServerClose(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		srv, rec := startRecorded(t, engine, Config{})
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		sc := rec.conn(t, c.localAddr())
		sc.Close(4001, "x")
		code, reason, before, err := c.readClose()
		if err != nil || len(before) > 0 {
			t.Fatalf("read close: %v (frames before: %v)", err, before)
		}
		if code != 4001 || reason != "x" {
			t.Fatalf("close: %d %q, want 4001 \"x\"", code, reason)
		}
		if err := sc.Send(AppendTextFrame(nil, []byte("late"))); err != ErrClosed {
			t.Errorf("Send after Close: %v, want ErrClosed", err)
		}
		sc.Close(4002, "again") // a second Close does nothing
		c.mustWrite(clientClose(4001, ""))
		c.expectEOF()
		info := rec.closeInfo(t, c.localAddr())
		if info.Reason != CloseServer || info.Code != 4001 {
			t.Fatalf("OnClose: %v/%d, want server/4001", info.Reason, info.Code)
		}
		rec.check(t)
	})
}

// TestServerCloseLongReason: a reason over 123 bytes is cut to fit a
// control frame, on a rune boundary.
func TestServerCloseLongReason(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		srv, rec := startRecorded(t, engine, Config{})
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		rec.conn(t, c.localAddr()).Close(4000, strings.Repeat("é", 100))
		code, reason, _, err := c.readClose()
		if err != nil || code != 4000 {
			t.Fatalf("close: %d %v", code, err)
		}
		if len(reason) > 123 || reason != strings.Repeat("é", len(reason)/2) {
			t.Fatalf("reason of %d bytes: %q", len(reason), reason)
		}
		c.mustWrite(clientClose(4000, ""))
		c.expectEOF()
	})
}

// TestShutdown: cancelling Run's context sends 1001 to every open
// connection, and Run returns once they have answered.
func TestShutdown(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		srv, rec := startRecorded(t, engine, Config{Tick: 20 * time.Millisecond})
		var clients []*rawClient
		for range 3 {
			c := dialRaw(t, srv.Addr())
			c.upgrade()
			echoRoundTrip(t, c, "before")
			clients = append(clients, c)
		}
		handshaking := dialRaw(t, srv.Addr()) // never finishes its request
		handshaking.mustWrite([]byte("GET /ws HTTP/1.1\r\n"))
		eventually(t, ioTimeout, func() error {
			if n := srv.Conns(); n != 4 {
				return fmt.Errorf("Conns() = %d, want 4", n)
			}
			return nil
		})

		srv.cancel()
		for i, c := range clients {
			code, _, _, err := c.readClose()
			if err != nil || code != ws.StatusGoingAway {
				t.Fatalf("client %d: close %d %v, want 1001", i, code, err)
			}
			c.mustWrite(clientClose(1001, ""))
			c.expectEOF()
		}
		handshaking.expectEOF()
		select {
		case <-srv.done:
		case <-time.After(ioTimeout):
			t.Fatal("Run did not return after shutdown")
		}
		for i, c := range clients {
			info := rec.closeInfo(t, c.localAddr())
			if info.Reason != CloseShutdown || info.Code != ws.StatusGoingAway {
				t.Errorf("client %d: OnClose %v/%d, want shutdown/1001", i, info.Reason, info.Code)
			}
		}
		rec.check(t)
	})
}

// TestShutdownUnanswered: a client that never answers the 1001 does not
// hold Run beyond CloseTimeout.
func TestShutdownUnanswered(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		const closeTimeout = 300 * time.Millisecond
		srv, rec := startRecorded(t, engine, Config{Tick: 20 * time.Millisecond, CloseTimeout: closeTimeout})
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		rec.conn(t, c.localAddr())
		start := time.Now()
		srv.cancel()
		if code, _, _, err := c.readClose(); err != nil || code != ws.StatusGoingAway {
			t.Fatalf("close %d %v, want 1001", code, err)
		}
		select {
		case <-srv.done:
		case <-time.After(ioTimeout):
			t.Fatal("Run did not return")
		}
		if d := time.Since(start); d < closeTimeout/2 {
			t.Errorf("Run returned after %v, before CloseTimeout %v", d, closeTimeout)
		}
		c.expectEOF()
		info := rec.closeInfo(t, c.localAddr())
		if info.Code != ws.StatusGoingAway || (info.Reason != CloseShutdown && info.Reason != CloseTimeout) {
			t.Errorf("OnClose %v/%d, want shutdown or timeout with 1001", info.Reason, info.Code)
		}
	})
}

// TestSendSizes: frames of every length form, sent from outside the loop,
// arrive intact; a frame larger than the outbox is refused with ErrFull.
func TestSendSizes(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		const outbox = 1 << 20
		srv, rec := startRecorded(t, engine, Config{Outbox: outbox})
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		sc := rec.conn(t, c.localAddr())
		sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 300_000}
		for _, n := range sizes {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i)
			}
			if err := sc.Send(AppendFrame(nil, ws.OpBinary, p)); err != nil {
				t.Fatalf("Send(%d bytes): %v", n, err)
			}
			f := c.mustReadFrame()
			if f.op != ws.OpBinary || len(f.payload) != n || !slices.Equal(f.payload, p) {
				t.Fatalf("frame of %d bytes: got %v", n, f)
			}
		}
		if err := sc.Send(AppendFrame(nil, ws.OpBinary, make([]byte, outbox))); err != ErrFull {
			t.Fatalf("Send over Outbox: %v, want ErrFull", err)
		}
		c.closeHandshake(1000, "")
	})
}

// TestCloseInfoReset: a peer that drops the TCP connection without a close
// frame ends with CloseReset.
func TestCloseInfoReset(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		t.Parallel()
		srv, rec := startRecorded(t, engine, Config{})
		c := dialRaw(t, srv.Addr())
		c.upgrade()
		echoRoundTrip(t, c, "x")
		c.conn.Close()
		info := rec.closeInfo(t, c.localAddr())
		if info.Reason != CloseReset || info.Code != 0 {
			t.Fatalf("OnClose %v/%d, want reset/0", info.Reason, info.Code)
		}
		eventually(t, ioTimeout, func() error {
			if n := srv.Conns(); n != 0 {
				return fmt.Errorf("Conns() = %d after the close", n)
			}
			return nil
		})
	})
}
