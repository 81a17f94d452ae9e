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
	// HeaderSignature is "v1=" + hex HMAC-SHA256(secret, timestamp "."
	// body), one per key, comma-separated: "v1=<hex>,v1=<hex>" while keys
	// are rotated (the current key's first).
	HeaderSignature = "X-Presenced-Signature"
)

// Sign returns the signature header's value for a body sent at ts (the
// timestamp header's value), signed with one key.
func Sign(secret []byte, ts string, body []byte) string {
	return "v1=" + mac(secret, ts, body)
}

// SignKeys returns the signature header's value signed with each key, in
// order: "v1=<hex>,v1=<hex>". With one key it is Sign's.
func SignKeys(keys [][]byte, ts string, body []byte) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("v1=")
		b.WriteString(mac(k, ts, body))
	}
	return b.String()
}

func mac(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify is what a receiver does: it checks that one of the "v1="
// signatures of sig (the signature header, one or more comma-separated)
// is body's at ts with secret, in constant time, and that ts is within
// skew of now. Signatures of other schemes are ignored.
func Verify(secret []byte, ts, sig string, body []byte, now time.Time, skew time.Duration) bool {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(sec, 0)); d > skew || d < -skew {
		return false
	}
	want := []byte(mac(secret, ts, body))
	ok := false
	for part := range strings.SplitSeq(sig, ",") {
		if v, found := strings.CutPrefix(strings.TrimSpace(part), "v1="); found && hmac.Equal([]byte(v), want) {
			ok = true // no early return: the time does not tell which one matched
		}
	}
	return ok
}
