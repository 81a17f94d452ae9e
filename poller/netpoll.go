package poller

import "errors"

func newNetpollEngine(sh *shared) (engine, error) {
	return nil, errors.New("poller: netpoll engine not built yet")
}
