package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// The request headers.
const (
	HeaderTimestamp = "X-Presenced-Timestamp" // Unix seconds of the attempt
	HeaderSignature = "X-Presenced-Signature" // "v1=" + hex HMAC-SHA256(secret, timestamp "." body)
)

// Sign returns the signature header's value for a body sent at ts (the
// timestamp header's value).
func Sign(secret []byte, ts string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify is what a receiver does: it checks sig (the signature header)
// against ts and body in constant time, and that ts is within skew of now.
func Verify(secret []byte, ts, sig string, body []byte, now time.Time, skew time.Duration) bool {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(sec, 0)); d > skew || d < -skew {
		return false
	}
	if !strings.HasPrefix(sig, "v1=") {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(Sign(secret, ts, body)))
}
