package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWebhookFlags: -webhook-url and -webhook-secret-file reach
// server.Config.Webhook; each needs the other; bad values are usage errors
// naming the flag.
func TestWebhookFlags(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("k3y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"-insecure", "-webhook-url", "https://hooks.example/p", "-webhook-secret-file", secret}, env{}.lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if w := o.server.Webhook; w == nil || w.URL != "https://hooks.example/p" || string(w.Secret) != "k3y" || len(w.OtherSecrets) != 0 {
		t.Fatalf("Webhook %+v", w)
	}
	// Several keys, one per line, the current first: all sign (rotation).
	rotating := filepath.Join(dir, "rotating")
	if err := os.WriteFile(rotating, []byte("  cur\r\n\n next key \n\t\nold\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err = parseFlags([]string{"-insecure", "-webhook-url", "https://hooks.example/p", "-webhook-secret-file", rotating}, env{}.lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if w := o.server.Webhook; w == nil || string(w.Secret) != "cur" || len(w.OtherSecrets) != 2 ||
		string(w.OtherSecrets[0]) != "next key" || string(w.OtherSecrets[1]) != "old" {
		t.Fatalf("keys: Webhook %+v", w)
	}
	o, err = parseFlags([]string{"-insecure"}, env{"PRESENCED_WEBHOOK_URL": "http://h/", "PRESENCED_WEBHOOK_SECRET_FILE": secret}.lookup, io.Discard)
	if err != nil || o.server.Webhook == nil {
		t.Fatalf("from the environment: %v, %+v", err, o.server.Webhook)
	}
	if o, _ := parseFlags([]string{"-insecure"}, env{}.lookup, io.Discard); o.server.Webhook != nil {
		t.Errorf("without flags, Webhook %+v, want nil", o.server.Webhook)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"url without secret", []string{"-webhook-url", "http://h/"}, "-webhook-url: needs -webhook-secret-file"},
		{"secret without url", []string{"-webhook-secret-file", secret}, "-webhook-secret-file: needs -webhook-url"},
		{"not http", []string{"-webhook-url", "ftp://h/", "-webhook-secret-file", secret}, `-webhook-url "ftp://h/"`},
		{"empty secret", []string{"-webhook-url", "http://h/", "-webhook-secret-file", empty}, "-webhook-secret-file " + empty + " is empty"},
		{"missing secret", []string{"-webhook-url", "http://h/", "-webhook-secret-file", filepath.Join(dir, "none")}, "-webhook-secret-file: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(append([]string{"-insecure"}, tc.args...), env{}.lookup, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if _, ok := err.(usageError); !ok {
				t.Errorf("%T is not a usage error", err)
			}
		})
	}
}
