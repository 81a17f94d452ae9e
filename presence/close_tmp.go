package presence

import "github.com/presenced/presenced/internal/wire"

// TEMPORARY until the close-path branch lands.
type CloseReason uint8

const CloseSlow CloseReason = 1

func (s *Session) closeWith(code wire.CloseCode, _ CloseReason, text string) bool {
	if s.slowClosedTmp.Swap(true) {
		return false
	}
	s.sink.Close(code, text)
	return true
}
