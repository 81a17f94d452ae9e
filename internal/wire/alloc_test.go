package wire

import (
	"strconv"
	"testing"
)

// members10 and members100 are the users of the sync benchmarks and tests.
var (
	members10  = userNames(10)
	members100 = userNames(100)
)

func userNames(n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = "user-" + strconv.Itoa(i) + "@example.com"
	}
	return users
}

var (
	benchMeta   = []byte(`{"name":"Alice Example","avatar":"https://example.com/a/1.png"}`)
	benchTyping = []string{"carol", "dave"}
)

// appendBenchDiff encodes a whole diff: two joins, one leave, the typing set.
func appendBenchDiff(dst []byte) []byte {
	dst = AppendDiffStart(dst, "chat:42", Cursor{Epoch: 7, Seq: 42}, Cursor{Epoch: 7, Seq: 43}, 12)
	dst = AppendListStart(dst, "join")
	dst = AppendMember(dst, "carol", "online", benchMeta)
	dst = AppendMember(dst, "dave", "away", "")
	dst = AppendListEnd(dst)
	dst = AppendListStart(dst, "leave")
	dst = AppendListString(dst, "bob")
	dst = AppendListEnd(dst)
	dst = AppendStrings(dst, "typing", benchTyping)
	return AppendEnd(dst)
}

// appendBenchSync encodes a whole sync of users, every other one with meta.
func appendBenchSync(dst []byte, users []string) []byte {
	dst = AppendSyncStart(dst, "chat:42", Cursor{Epoch: 7, Seq: 42}, len(users))
	for i, u := range users {
		var meta []byte
		if i%2 == 0 {
			meta = benchMeta
		}
		dst = AppendMember(dst, u, "online", meta)
	}
	return AppendSyncEnd(dst, benchTyping, false)
}

// The encoders allocate nothing when the buffer has room: the server
// encodes each diff once per room and tick on its hot path.
func TestEncodersDoNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 4096)
	tests := []struct {
		name string
		enc  func()
	}{
		{"AppendPing", func() { buf = AppendPing(buf[:0], 1700000000123) }},
		{"AppendPong", func() { buf = AppendPong(buf[:0], 1700000000123) }},
		{"AppendAck", func() { buf = AppendAck(buf[:0], 12345) }},
		{"AppendErr", func() { buf = AppendErr(buf[:0], 3, ErrCodeNotJoined, "room is not joined") }},
		{"AppendWelcome", func() { buf = AppendWelcome(buf[:0], "node-1", "c-9", "alice", 25000, 4096) }},
		{"AppendBye", func() { buf = AppendBye(buf[:0], "draining", 2500) }},
		{"AppendRefresh", func() { buf = AppendRefresh(buf[:0], 1700000060) }},
		{"diff", func() { buf = appendBenchDiff(buf[:0]) }},
		{"sync of 10 members", func() { buf = appendBenchSync(buf[:0], members10) }},
		{"AppendCursor", func() { buf = AppendCursor(buf[:0], Cursor{Epoch: 1<<32 - 1, Seq: 1<<64 - 1}) }},
		{"AppendString with escapes", func() { buf = AppendString(buf[:0], tricky+"\xff\xfe") }},
		{"AppendJoin", func() { buf = AppendJoin(buf[:0], 1, "chat:42", &State{Status: "online", Meta: benchMeta}) }},
		{"AppendTyping", func() { buf = AppendTyping(buf[:0], "chat:42", true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.enc() // warm up: the first run must not grow buf either
			if cap(buf) != 4096 {
				t.Fatalf("the buffer grew to %d bytes", cap(buf))
			}
			if n := testing.AllocsPerRun(100, tt.enc); n != 0 {
				t.Errorf("%v allocations per run, want 0", n)
			}
		})
	}
}

func BenchmarkAppendDiff(b *testing.B) {
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(appendBenchDiff(nil))))
	for b.Loop() {
		buf = appendBenchDiff(buf[:0])
	}
}

func BenchmarkAppendSync100(b *testing.B) {
	buf := make([]byte, 0, 16384)
	b.ReportAllocs()
	b.SetBytes(int64(len(appendBenchSync(nil, members100))))
	for b.Loop() {
		buf = appendBenchSync(buf[:0], members100)
	}
}

func BenchmarkDecodeCommandJoin(b *testing.B) {
	msg := []byte(`{"t":"join","id":17,"room":"chat:42","state":{"status":"online","meta":{"name":"Alice"}}}`)
	benchDecode(b, msg)
}

func BenchmarkDecodeCommandTyping(b *testing.B) {
	benchDecode(b, []byte(`{"t":"typing","room":"chat:42","on":true}`))
}

func benchDecode(b *testing.B, msg []byte) {
	var c Command
	if err := DecodeCommand(msg, &c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := DecodeCommand(msg, &c); err != nil {
			b.Fatal(err)
		}
	}
}
