package webhook

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/presence"
)

// TestSecretRotation: with OtherSecrets every request carries one v1= per
// key, so a receiver holding either key verifies it; with one key the
// header is the single "v1=<hex>" it always was.
func TestSecretRotation(t *testing.T) {
	oldKey, newKey := []byte("old-key"), []byte("new-key")
	for _, key := range [][]byte{oldKey, newKey} {
		r := newReceiver(t, key)
		s := start(t, r, func(c *Config) { c.Secret = oldKey; c.OtherSecrets = [][]byte{newKey} })
		s.RoomEvents("r", []presence.Event{ev(presence.EventMemberAdded, "u")})
		r.waitEvents(1, 5*time.Second)
		if _, _, bad := r.snapshot(); bad != 0 {
			t.Errorf("receiver with %q: %d requests refused", key, bad)
		}
	}
	body, ts := []byte(`[{"id":"x"}]`), "1796428800"
	two := SignKeys([][]byte{oldKey, newKey}, ts, body)
	if !regexp.MustCompile(`^v1=[0-9a-f]{64},v1=[0-9a-f]{64}$`).MatchString(two) ||
		!strings.HasPrefix(two, Sign(oldKey, ts, body)+",") || !strings.HasSuffix(two, ","+Sign(newKey, ts, body)) {
		t.Errorf("two keys: header %q", two)
	}
	if one := SignKeys([][]byte{oldKey}, ts, body); one != Sign(oldKey, ts, body) || !regexp.MustCompile(`^v1=[0-9a-f]{64}$`).MatchString(one) {
		t.Errorf("one key: header %q, want Sign's", one)
	}
	now := time.Unix(1796428800, 0)
	for _, tc := range []struct {
		name string
		key  []byte
		sig  string
		want bool
	}{
		{"first of two", oldKey, two, true},
		{"second of two", newKey, two, true},
		{"neither", []byte("other"), two, false},
		{"spaces after commas", newKey, strings.ReplaceAll(two, ",", ", "), true},
		{"another scheme first", newKey, "v0=00," + Sign(newKey, ts, body), true},
		{"only another scheme", newKey, strings.ReplaceAll(Sign(newKey, ts, body), "v1=", "v2="), false},
		{"empty", newKey, "", false},
		{"bare hex", newKey, strings.TrimPrefix(Sign(newKey, ts, body), "v1="), false},
	} {
		if got := Verify(tc.key, ts, tc.sig, body, now, time.Minute); got != tc.want {
			t.Errorf("%s: Verify = %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := New(Config{URL: "http://h/", Secret: oldKey, OtherSecrets: [][]byte{nil}}); err == nil {
		t.Error("an empty key in OtherSecrets was accepted")
	}
}
