package poller

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// fakeEngine is an in-memory connEngine: writes record the bytes (taking
// at most maxWrite per call when set, none while full), and nothing touches
// a socket. It lets tests feed a Conn any split of any input,
// deterministically.
type fakeEngine struct {
	t        testing.TB
	maxWrite int  // bytes a write takes per call; 0 = all
	full     bool // writes take nothing (EAGAIN), like a full socket buffer
	budget   int  // when > 0, the bytes writes take before full is set; otherwise no limit
	out      []byte
	deadline atomic.Int64
	want     bool // a writability notification is wanted
	paused   bool // reading is paused
	closed   int  // closeSocket calls
	shutWR   int  // shutdownWrite calls
}

var _ connEngine = (*fakeEngine)(nil)

func (e *fakeEngine) writev(c *Conn, bufs [][]byte) (int, error) {
	if e.closed > 0 {
		e.t.Errorf("write after closeSocket")
	}
	if len(bufs) > maxIovec {
		e.t.Errorf("writev with %d buffers", len(bufs))
	}
	if e.full {
		return 0, unix.EAGAIN
	}
	n := 0
	for _, b := range bufs {
		if e.maxWrite > 0 {
			b = b[:min(len(b), e.maxWrite-n)]
		}
		if e.budget > 0 {
			b = b[:min(len(b), e.budget)]
			if e.budget -= len(b); e.budget == 0 {
				e.full = true
			}
		}
		e.out = append(e.out, b...)
		n += len(b)
		if e.maxWrite > 0 && n == e.maxWrite || e.full {
			break
		}
	}
	return n, nil
}

func (e *fakeEngine) write(c *Conn, p []byte) (int, error) { return e.writev(c, [][]byte{p}) }
func (e *fakeEngine) wantWrite(c *Conn, on bool)           { e.want = on }
func (e *fakeEngine) pauseRead(c *Conn, on bool)           { e.paused = on }
func (e *fakeEngine) setDeadline(c *Conn, unixNano int64)  { e.deadline.Store(unixNano) }
func (e *fakeEngine) closeSocket(c *Conn)                  { e.closed++ }
func (e *fakeEngine) shutdownWrite(c *Conn) error {
	if e.closed > 0 || e.shutWR > 0 {
		e.t.Errorf("shutdownWrite after closeSocket or twice")
	}
	e.shutWR++
	return nil
}

// fuzzHandler checks, on every callback, what the poller promises the
// application: valid UTF-8 text, messages within MaxMessage, text or
// binary opcodes, and the callback order. It echoes messages.
type fuzzHandler struct {
	t          testing.TB
	maxMessage int
	opened     int
	closed     int
	info       CloseInfo
	msgs       []message
	rejects    []RejectReason
}

func (h *fuzzHandler) OnOpen(c *Conn) {
	if h.opened++; h.opened > 1 {
		h.t.Errorf("OnOpen called twice")
	}
}

func (h *fuzzHandler) OnMessage(c *Conn, op ws.OpCode, msg []byte) {
	switch {
	case h.opened == 0 || h.closed > 0:
		h.t.Errorf("OnMessage outside OnOpen..OnClose")
	case op != ws.OpText && op != ws.OpBinary:
		h.t.Errorf("OnMessage with opcode %v", op)
	case op == ws.OpText && !utf8.Valid(msg):
		h.t.Errorf("OnMessage with invalid UTF-8 text %q", msg)
	case len(msg) > h.maxMessage:
		h.t.Errorf("OnMessage with %d bytes > MaxMessage %d", len(msg), h.maxMessage)
	}
	h.msgs = append(h.msgs, message{op, string(msg)})
	c.Send(AppendFrame(nil, op, msg))
}

func (h *fuzzHandler) OnDeadline(c *Conn) {}

func (h *fuzzHandler) OnClose(c *Conn, info CloseInfo) {
	if h.opened == 0 {
		h.t.Errorf("OnClose before OnOpen")
	}
	if h.closed++; h.closed > 1 {
		h.t.Errorf("OnClose called twice")
	}
	h.info = info
}

// fakeConn is a Conn on a fakeEngine with a fuzzHandler.
type fakeConn struct {
	c        *Conn
	eng      *fakeEngine
	h        *fuzzHandler
	finished bool
}

func newFakeConn(t testing.TB, cfg Config) *fakeConn {
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	h := &fuzzHandler{t: t, maxMessage: cfg.MaxMessage}
	cfg.OnReject = func(r RejectReason) { h.rejects = append(h.rejects, r) }
	eng := &fakeEngine{t: t}
	sh := newShared(cfg, h)
	if sh.pages, err = newPages(cfg); err != nil {
		t.Fatal(err)
	}
	c := sh.newConn(1000, netip.MustParseAddrPort("127.0.0.1:40000"), eng)
	eng.deadline.Store(nowNano() + int64(cfg.HandshakeTimeout)) // as the engine sets at accept
	return &fakeConn{c: c, eng: eng, h: h}
}

// feed delivers in as reads of the sizes given by cuts (each byte is a
// size-1, used in turn and cycled; no cuts: one read), like an engine
// does: from a scratch buffer that is overwritten after each read, and
// finishing the connection when feed says it is done.
func (fc *fakeConn) feed(in, cuts []byte) {
	scratch := make([]byte, 0, 64)
	for i := 0; len(in) > 0 && !fc.finished; i++ {
		n := len(in)
		if len(cuts) > 0 {
			n = min(n, int(cuts[i%len(cuts)])+1)
		}
		scratch = append(scratch[:0], in[:n]...)
		in = in[n:]
		done := fc.c.feed(scratch)
		for j := range scratch { // the engine reuses its buffer
			scratch[j] = 0xEE
		}
		if done {
			fc.finish(CloseInfo{})
		}
	}
}

func (fc *fakeConn) finish(info CloseInfo) {
	fc.c.finish(info)
	fc.finished = true
	if fc.eng.closed != 1 {
		fc.eng.t.Errorf("closeSocket called %d times", fc.eng.closed)
	}
}

// end finishes the connection as the engine would at EOF, after firing a
// pending deadline, and checks that the end was reported exactly once.
func (fc *fakeConn) end() {
	t := fc.eng.t
	if d := fc.eng.deadline.Load(); !fc.finished && d != 0 {
		if done, info := fc.c.deadlineBatch(&fc.eng.deadline, d); done {
			fc.finish(info)
		}
	}
	if !fc.finished {
		fc.finish(CloseInfo{Reason: CloseReset})
	}
	fc.c.finish(CloseInfo{Reason: CloseReset}) // a second finish does nothing
	if fc.h.opened == 1 && fc.h.closed != 1 {
		t.Errorf("opened, OnClose called %d times", fc.h.closed)
	}
	if fc.h.opened == 0 && len(fc.h.rejects) != 1 {
		t.Errorf("not opened, OnReject called %v", fc.h.rejects)
	}
	if fc.h.opened == 1 && len(fc.h.rejects) != 0 {
		t.Errorf("opened, OnReject called %v", fc.h.rejects)
	}
	if fc.c.rd.buf != nil || fc.c.rd.msg != nil {
		t.Errorf("finished conn holds buffers")
	}
	if n := fc.c.sh.limits.total.Load(); n != 0 {
		t.Errorf("limits count %d after the end", n)
	}
}

// serverFrames parses what the server wrote after the upgrade response:
// complete, well-formed frames, nothing after a close frame.
func serverFrames(t testing.TB, out []byte) []rawFrame {
	t.Helper()
	var frames []rawFrame
	for len(out) > 0 {
		if len(frames) > 0 && frames[len(frames)-1].op == ws.OpClose {
			t.Fatalf("%d bytes after the close frame: %q", len(out), out)
		}
		if len(out) < 2 {
			t.Fatalf("truncated frame %q", out)
		}
		f := rawFrame{fin: out[0]&0x80 != 0, rsv: out[0] >> 4 & 7, op: ws.OpCode(out[0] & 0xf)}
		if out[1]&0x80 != 0 || f.rsv != 0 || !f.fin {
			t.Fatalf("bad server frame header % x", out[:2])
		}
		n, hdr := int(out[1]&0x7f), 2
		switch n {
		case 126:
			n, hdr = int(binary.BigEndian.Uint16(out[2:])), 4
		case 127:
			n, hdr = int(binary.BigEndian.Uint64(out[2:])), 10
		}
		if len(out) < hdr+n {
			t.Fatalf("truncated frame: %d bytes for %d", len(out)-hdr, n)
		}
		if f.op.IsControl() && n > 125 {
			t.Fatalf("control frame of %d bytes", n)
		}
		f.payload = out[hdr : hdr+n]
		out = out[hdr+n:]
		frames = append(frames, f)
	}
	return frames
}

// splitResponse splits the server output into the HTTP response head and
// what follows.
func splitResponse(t testing.TB, out []byte) (*http.Response, []byte) {
	t.Helper()
	end := bytes.Index(out, headerEnd)
	if end < 0 {
		t.Fatalf("no complete HTTP response in %q", out)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out[:end+4])), nil)
	if err != nil {
		t.Fatalf("response %q: %v", out[:end+4], err)
	}
	return resp, out[end+4:]
}

// fuzzConfig has a small MaxMessage so that fuzzed inputs reach it, and a
// page (FuzzHandshake).
var fuzzConfig = Config{MaxMessage: 256, MaxHeaderBytes: 1024, Pages: map[string][]byte{
	"/demo": pageResponse("<!doctype html><title>demo</title>"),
}}

// FuzzFrames feeds arbitrary bytes after a valid upgrade, split into reads
// at fuzzer-chosen points. It must never panic, deliver invalid UTF-8
// text, deliver more than MaxMessage, or write a malformed frame.
func FuzzFrames(f *testing.F) {
	for _, tc := range protocolCases() {
		var in []byte
		for _, st := range tc.steps {
			in = append(in, st.send...)
		}
		f.Add(in, []byte{})
		f.Add(in, []byte{0})       // byte by byte
		f.Add(in, []byte{2, 0, 6}) // 3, 1, 7, 3, 1, 7, ...
		f.Add(in, []byte{0, 1})    // byte by byte, to a socket that fills
	}
	var burst []byte // replies beyond the outbox: the reader pauses
	for range 20 {
		burst = append(burst, maskedText(strings.Repeat("r", 100))...)
	}
	f.Add(slices.Concat(burst, maskedFrame(ws.OpPing, nil), maskedFrame(ws.OpClose, []byte{3, 232})), []byte{255, 1})
	req := []byte(upgradeRequest("/ws", testKey))
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		cfg := fuzzConfig
		stall := len(cuts) > 1 && cuts[1]%2 == 1
		if stall { // a small outbox on a socket that fills: the reader pauses
			cfg.Outbox = 1024
		}
		fc := newFakeConn(t, cfg)
		if len(cuts) > 0 {
			fc.eng.maxWrite = int(cuts[0] % 8) // 0: writev takes everything
		}
		if stall {
			fc.eng.budget = 200 + 4*int(cuts[1])
		}
		fc.feed(slices.Concat(req, data), cuts)
		if fc.h.opened != 1 {
			t.Fatalf("the upgrade failed")
		}
		if n := fc.c.OutboxLen(); n > cfg.Outbox+256 { // a close frame may exceed it
			t.Fatalf("outbox %d > %d", n, cfg.Outbox)
		}
		// The peer reads everything: a paused reader resumes.
		fc.eng.full, fc.eng.budget = false, 0
		for i := 0; !fc.finished && fc.eng.want; i++ {
			if i == 100 {
				t.Fatal("onWritable keeps being wanted with a socket that takes everything")
			}
			if fc.c.onWritable() {
				fc.finish(CloseInfo{})
			}
		}
		if !fc.finished && (fc.c.rd.held || fc.eng.paused) {
			t.Fatal("still paused after the outbox drained")
		}
		fc.end()
		resp, rest := splitResponse(t, fc.eng.out)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", resp.StatusCode)
		}
		frames := serverFrames(t, rest)
		if n := len(frames); n > 0 && frames[n-1].op == ws.OpClose {
			code, _ := closeCode(frames[n-1].payload)
			if fc.h.info.Code != code {
				t.Errorf("sent close %d, OnClose reports %d", code, fc.h.info.Code)
			}
		}
	})
}

// FuzzHandshake feeds arbitrary request bytes split across reads. It must
// never panic, and the connection either upgrades (101), is refused with
// an HTTP error, or is still waiting for the end of a request that fits
// MaxHeaderBytes (then the handshake timeout refuses it).
func FuzzHandshake(f *testing.F) {
	req := upgradeRequest("/ws", testKey)
	for _, seed := range []string{
		req,
		upgradeRequest("/ws?x=1", testKey, "Origin: https://a.example", "Sec-WebSocket-Extensions: permessage-deflate"),
		upgradeRequest("/nope", testKey),
		req[:40],
		"HELLO\r\n\r\n",
		"\r\n\r\n",
		"GET / HTTP/1.1\n\n",
		"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n",
		paddedRequest(1025),
		req + string(clientText("pipelined")),
		"GET /demo HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /demo?user=ann HTTP/1.0\r\n\r\n",
		"GET /demo HTTP/1.1\r\n\r\nGET /demo HTTP/1.1\r\n\r\n", // pipelined: the second is discarded
		"GET /demo HTTP/1.1\r\n\r\n" + req,
	} {
		f.Add([]byte(seed), []byte{})
		f.Add([]byte(seed), []byte{0})
		f.Add([]byte(seed), []byte{16, 3})
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		fc := newFakeConn(t, fuzzConfig)
		fc.feed(data, cuts)
		complete := bytes.Contains(data, headerEnd)
		out := fc.eng.out
		// A refused request is finished, or lingers once its response is
		// written (the fake engine takes every byte).
		refused := fc.finished || fc.c.state == stateLingering
		switch {
		case fc.h.opened == 1:
			resp, _ := splitResponse(t, out)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("opened with status %d", resp.StatusCode)
			}
			if !complete {
				t.Fatalf("opened without a complete request")
			}
		case refused:
			resp, _ := splitResponse(t, out)
			page := fc.c.reject == RejectPage // a page's 200 is the one success
			if page != (resp.StatusCode == http.StatusOK) || !page && resp.StatusCode < 400 {
				t.Fatalf("refused (%v) with status %d", fc.c.reject, resp.StatusCode)
			}
			if page && !complete {
				t.Fatalf("page served without a complete request")
			}
			if want := map[bool]int{true: 1, false: 0}[fc.finished]; len(fc.h.rejects) != want {
				t.Fatalf("refused (finished %v), OnReject called %v", fc.finished, fc.h.rejects)
			}
		default: // waiting for more
			if len(out) > 0 {
				t.Fatalf("wrote %q while waiting for the request", out)
			}
			if end := bytes.Index(data, headerEnd); end >= 0 && end+4 <= fuzzConfig.MaxHeaderBytes {
				t.Fatalf("still waiting after a complete request of %d bytes", end+4)
			}
			if len(data) > fuzzConfig.MaxHeaderBytes {
				t.Fatalf("still waiting after %d bytes > MaxHeaderBytes", len(data))
			}
		}
		waiting := !refused && fc.h.opened == 0
		fc.end()
		if waiting && !slices.Equal(fc.h.rejects, []RejectReason{RejectTimeout}) {
			t.Fatalf("handshake timeout: OnReject %v", fc.h.rejects)
		}
	})
}

// TestProtocolByteByByte runs every protocol case through a fakeEngine
// with exact 1-byte reads (a real socket may coalesce them), with writes
// that take everything, 3 bytes at a time, or nothing until the input is
// all read (a full socket), and checks what the server wrote and what the
// handler saw.
func TestProtocolByteByByte(t *testing.T) {
	writes := []struct {
		name     string
		maxWrite int
		full     bool
	}{{"write-all", 0, false}, {"write-3", 3, false}, {"socket-full", 0, true}}
	for _, tc := range protocolCases() {
		for _, w := range writes {
			t.Run(tc.name+"/"+w.name, func(t *testing.T) {
				fc := newFakeConn(t, Config{})
				fc.eng.maxWrite = w.maxWrite
				fc.feed([]byte(upgradeRequest("/ws", testKey)), nil)
				fc.eng.full = w.full
				var in []byte
				var want []rawFrame
				var wantMsgs []message
				for _, st := range tc.steps {
					in = append(in, st.send...)
					if w := st.want; w != nil {
						want = append(want, *w)
						if w.op == ws.OpText || w.op == ws.OpBinary {
							wantMsgs = append(wantMsgs, message{w.op, string(w.payload)})
						}
					}
				}
				fc.feed(in, []byte{0})
				// The socket drains: the outbox is written.
				fc.eng.full = false
				for i := 0; fc.eng.want && !fc.finished && i < 1<<16; i++ {
					if fc.c.onWritable() {
						fc.finish(CloseInfo{})
					}
				}
				_, rest := splitResponse(t, fc.eng.out)
				got := serverFrames(t, rest)
				if tc.wantClose != 0 {
					want = append(want, rawFrame{op: ws.OpClose})
				}
				if len(got) != len(want) {
					t.Fatalf("server wrote %v, want %v", got, want)
				}
				for i := range want {
					if got[i].op != want[i].op || (want[i].op != ws.OpClose && string(got[i].payload) != string(want[i].payload)) {
						t.Fatalf("frame %d: got %v, want %v", i, got[i], want[i])
					}
				}
				if tc.wantClose != 0 {
					code, reason := closeCode(got[len(got)-1].payload)
					if code != tc.wantClose || reason != tc.wantReason {
						t.Fatalf("close %d %q, want %d %q", code, reason, tc.wantClose, tc.wantReason)
					}
					if tc.wantBy == ClosePeer && !fc.finished {
						t.Fatalf("echoed the close but did not finish")
					}
				}
				if !slices.Equal(fc.h.msgs, wantMsgs) {
					t.Fatalf("OnMessage saw %v, want %v", fc.h.msgs, wantMsgs)
				}
				if tc.wantClose != 0 && tc.wantBy != ClosePeer && !fc.finished {
					fc.feed(clientClose(uint16(tc.wantClose), ""), nil) // the client's answer
				}
				if tc.wantClose != 0 && !fc.finished {
					t.Fatalf("not finished after the closing handshake")
				}
				fc.end()
				if tc.wantClose != 0 && (fc.h.info.Reason != tc.wantBy || fc.h.info.Code != tc.wantClose) {
					t.Fatalf("OnClose %v/%d, want %v/%d", fc.h.info.Reason, fc.h.info.Code, tc.wantBy, tc.wantClose)
				}
			})
		}
	}
}
