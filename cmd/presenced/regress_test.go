package main

import (
	"io"
	"testing"
	"time"
)

// TestRegressJWTLeeway: -jwt-leeway (PRESENCED_JWT_LEEWAY) sets the clock
// skew allowed on exp, nbf and iat; its default is 5 s.
func TestRegressJWTLeeway(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  env
		want time.Duration
	}{
		{name: "default", args: []string{"-insecure"}, want: 5 * time.Second},
		{name: "flag", args: []string{"-insecure", "-jwt-leeway", "30s"}, want: 30 * time.Second},
		{name: "environment", args: []string{"-insecure"}, env: env{"PRESENCED_JWT_LEEWAY": "1500"}, want: 1500 * time.Millisecond},
		{name: "flag over environment", args: []string{"-insecure", "-jwt-leeway=2s"}, env: env{"PRESENCED_JWT_LEEWAY": "1m"}, want: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, tt.env.lookup, io.Discard)
			if err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			if got := o.server.JWT.Leeway; got != tt.want {
				t.Errorf("JWT.Leeway = %v, want %v", got, tt.want)
			}
		})
	}
}
