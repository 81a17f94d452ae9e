package presence

// Test hooks: they read state that production code has no use for.

// User is the session's user id, "" before hello.
func (s *Session) User() string { return s.user }

// Draining reports whether Drain was called.
func (h *Hub) Draining() bool { return h.draining.Load() }
