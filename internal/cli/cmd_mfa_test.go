package cli

import (
	"strings"
	"testing"
)

func TestTriesLeft(t *testing.T) {
	for msg, want := range map[string]bool{
		"wrong code; 2 tries left": true,
		"wrong code; 1 try left":   true,
		"wrong code, and no tries are left on this challenge: repeat the request for a new one": false,
		"this MFA challenge is used up": false,
	} {
		if got := triesLeft.MatchString(msg); got != want {
			t.Errorf("triesLeft(%q) = %v; want %v", msg, got, want)
		}
	}
}

func TestWriteQR(t *testing.T) {
	var b strings.Builder
	if err := writeQR(&b, "otpauth://totp/Airlock:alice@example.com?secret=JBSWY3DPEHPK3PXP&issuer=Airlock"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) < 15 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		l = strings.TrimSuffix(strings.TrimPrefix(l, "\x1b[30;107m"), "\x1b[0m")
		if strings.Trim(l, " █▀▄") != "" {
			t.Fatalf("unexpected characters in %q", l)
		}
	}
}
