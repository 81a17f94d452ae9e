package presence

// replyBuf is the scratch a Session encodes one reply in (welcome, ack,
// err, pong, ping, refresh, bye): the payload, then its frame. The Sink
// copies the frame it is given, so the buffers go back to the hub's pool
// once it returns and a reply allocates nothing. (Room frames are another
// matter: each is encoded once and the same bytes are Offered to every
// subscriber.)
type replyBuf struct {
	payload []byte
	frame   []byte
}

// Sizes of a new replyBuf, and the most a returned one may keep: replies
// are small (MaxReplyBytes bounds what one message gets), and a buffer
// grown beyond that by an unusual reply is left to the GC.
const (
	replyBufSize = 256
	replyBufMax  = MaxReplyBytes
)

// reply returns an empty replyBuf from the pool.
func (h *Hub) reply() *replyBuf {
	if rb, ok := h.replies.Get().(*replyBuf); ok {
		rb.payload, rb.frame = rb.payload[:0], rb.frame[:0]
		return rb
	}
	return &replyBuf{payload: make([]byte, 0, replyBufSize), frame: make([]byte, 0, replyBufSize+16)}
}

// putReply returns rb to the pool.
func (h *Hub) putReply(rb *replyBuf) {
	if cap(rb.payload) > replyBufMax || cap(rb.frame) > replyBufMax+16 {
		return
	}
	h.replies.Put(rb)
}
