package poller

// write is the single-buffer form of the fake's writev.
func (e *fakeEngine) write(c *Conn, p []byte) (int, error) { return e.writev(c, [][]byte{p}) }
