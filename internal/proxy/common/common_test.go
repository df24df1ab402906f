package common

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name, msg, password, want string
	}{
		{"echoed by a driver", "weird driver error with s3cret-pw inside", "s3cret-pw", Withheld},
		// "[redacted]" in place of the user name would tell the reader
		// that the password is the user name.
		{"same as the user name", `no pg_hba.conf entry for host "10.0.0.7", user "appuser", database "main"`, "appuser", Withheld},
		{"a word of the message", "wrong username or password", "wrong", Withheld},
		// Short passwords are withheld too, never shown.
		{"short", "role abc is locked", "abc", Withheld},
		{"absent", "database main does not exist", "s3cret-pw", "database main does not exist"},
		{"no password", "database main does not exist", "", "database main does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.msg, tt.password)
			if got != tt.want {
				t.Errorf("Redact(%q, %q) = %q, want %q", tt.msg, tt.password, got, tt.want)
			}
			if tt.password != "" && strings.Contains(got, tt.password) {
				t.Errorf("Redact(%q) = %q still holds the password", tt.msg, got)
			}
		})
	}
}
