package poller

import (
	"bytes"
	"fmt"
	"testing"
)

// recordEngine records the bytes written; while stalled it takes none.
type recordEngine struct {
	discardEngine
	stalled *bool
	out     *bytes.Buffer
}

func (e recordEngine) write(c *Conn, p []byte) (int, error) {
	return e.writev(c, [][]byte{p})
}

func (e recordEngine) writev(c *Conn, bufs [][]byte) (int, error) {
	if *e.stalled {
		return 0, nil
	}
	n := 0
	for _, b := range bufs {
		e.out.Write(b)
		n += len(b)
	}
	return n, nil
}

// SendCopy queues copies: the caller's buffer is overwritten after each
// call, frames interleave with shared ones, and more than the outbox
// storage holds is queued; the bytes written are the frames in order, and
// the storage goes back to the pool once written.
func TestSendCopyKeepsBytes(t *testing.T) {
	for _, n := range []int{1, 8, 9, 40} {
		t.Run(fmt.Sprint(n, " frames"), func(t *testing.T) {
			stalled := true
			var out, want bytes.Buffer
			c := openConn(t, &nopHandler{})
			c.eng = recordEngine{stalled: &stalled, out: &out}
			scratch := make([]byte, 0, 64)
			for i := range n {
				scratch = AppendTextFrame(scratch[:0], fmt.Appendf(nil, `{"t":"ack","id":%d}`, i))
				want.Write(scratch)
				if err := c.SendCopy(scratch); err != nil {
					t.Fatal(err)
				}
				for j := range scratch {
					scratch[j] = 'X'
				}
				if i%3 == 0 {
					want.Write(sharedFrame)
					if err := c.Offer(sharedFrame); err != nil {
						t.Fatal(err)
					}
				}
			}
			if c.ob == nil {
				t.Fatal("nothing queued")
			}
			stalled = false
			c.onWritable()
			if !bytes.Equal(out.Bytes(), want.Bytes()) {
				t.Fatalf("written %q\nwant    %q", out.Bytes(), want.Bytes())
			}
			if c.ob != nil || c.out != nil || c.OutboxLen() != 0 {
				t.Fatal("the drained outbox still holds its storage")
			}
		})
	}
}
