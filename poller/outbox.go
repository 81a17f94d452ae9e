package poller

import "bytes"

// outbox is the storage of a connection's queued frames, held only while
// it has some: taken from the shared pool when a frame is first queued
// and returned when the outbox drains, so an idle connection holds none
// and queuing a frame (a reply inside a callback's batch, or a room frame
// to a connection that is behind) allocates nothing.
type outbox struct {
	frames [][]byte // the backing array of Conn.out
	data   []byte   // copies of SendCopy frames; allocated on first use
}

// Sizes of an outbox: frames and copied bytes it keeps room for. More
// frames grow Conn.out beyond frames (the pool keeps the small array); a
// copy that does not fit data is a slice of its own. 512 bytes hold a
// turn's usual replies (an ack or a pong is about 25 bytes, a welcome
// about 120) while a connection that stays behind, holding its outbox,
// keeps little.
const (
	outboxFrames = 8
	outboxData   = 512
)

func (sh *shared) getOutbox() *outbox {
	if ob, ok := sh.outboxes.Get().(*outbox); ok {
		return ob
	}
	return &outbox{frames: make([][]byte, 0, outboxFrames)}
}

// putOutbox returns ob, which no queued frame uses any more, to the pool.
func (sh *shared) putOutbox(ob *outbox) {
	clear(ob.frames[:cap(ob.frames)]) // drop references to frames shared with other connections
	ob.frames = ob.frames[:0]
	ob.data = ob.data[:0]
	sh.outboxes.Put(ob)
}

// keep returns a copy of frame in ob's data. Earlier copies are never
// moved: data only grows within its capacity until the outbox drains.
func (ob *outbox) keep(frame []byte) []byte {
	if ob.data == nil {
		ob.data = make([]byte, 0, outboxData)
	}
	n := len(ob.data)
	if len(frame) > cap(ob.data)-n {
		return bytes.Clone(frame)
	}
	ob.data = append(ob.data, frame...)
	return ob.data[n:len(ob.data):len(ob.data)]
}
