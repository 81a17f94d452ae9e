package presence

// limiter is a per-connection token bucket (GCRA: one theoretical arrival
// time, 8 bytes) with a flood detector: a connection refused more than rate
// commands in each of floodSeconds consecutive seconds (so sending over
// twice the rate) is flooding.
type limiter struct {
	tat     int64 // hub clock time at which the bucket is full again
	window  int64 // hub clock time of the start of the current one-second window
	rejects int32 // refusals in the current window
	strikes int32 // consecutive windows with more than rate refusals
}

// allow takes one token if there is one.
func (l *limiter) allow(now, interval int64, burst int) bool {
	tat := max(l.tat, now)
	if tat-now > int64(burst-1)*interval {
		return false
	}
	l.tat = tat + interval
	return true
}

// nextToken is when allow will succeed again.
func (l *limiter) nextToken(interval int64, burst int) int64 {
	return l.tat - int64(burst-1)*interval
}

// reject records a refusal and reports whether the connection has been
// flooding for floodSeconds.
func (l *limiter) reject(now int64, rate float64, floodSeconds int) bool {
	const second = int64(1e9)
	if d := now - l.window; d >= second || l.window == 0 {
		switch {
		case d >= 2*second || l.window == 0:
			l.strikes = 0 // the first refusal, or a quiet second in between
		case float64(l.rejects) > rate:
			l.strikes++
		default:
			l.strikes = 0
		}
		l.window, l.rejects = now, 0
	}
	l.rejects++
	return int(l.strikes) >= floodSeconds
}
