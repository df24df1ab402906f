package cli

import (
	"os"
	"strings"
	"testing"
)

// TestDomainRefusesPlainHTTP: a --domain with http:// would send the
// password and tokens in cleartext over the network; only loopback is
// accepted, and the refusal names https:// and --ca-file.
func TestDomainRefusesPlainHTTP(t *testing.T) {
	for _, d := range []string{"http://airlock.example.com", "http://10.0.0.5:8720", "HTTP://airlock.example.com/", "http://[2001:db8::1]:8720",
		"http://127.0.0.1.nip.io:8720", "http://localhost.example.com"} {
		_, err := normalizeDomain(d)
		if err == nil || !strings.Contains(err.Error(), "https://") || !strings.Contains(err.Error(), "--ca-file") {
			t.Errorf("%s: %v", d, err)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(strings.ToLower(d), "http://")) {
			t.Errorf("%s: the error echoes the input: %v", d, err)
		}
	}
	for d, want := range map[string]string{
		"http://127.0.0.1:8720":       "http://127.0.0.1:8720",
		"http://localhost:8720/":      "http://localhost:8720",
		"http://[::1]:8720":           "http://[::1]:8720",
		"http://127.0.0.2:8720":       "http://127.0.0.2:8720",
		"https://airlock.example.com": "https://airlock.example.com",
		"airlock.example.com":         "https://airlock.example.com",
	} {
		if got, err := normalizeDomain(d); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", d, got, err, want)
		}
	}
}

// TestBootstrapPasswordLeavesTheEnvironment: `airlock server` reads
// AIRLOCK_BOOTSTRAP_PASSWORD once and removes it, so that nothing started
// or dumped later finds it.
func TestBootstrapPasswordLeavesTheEnvironment(t *testing.T) {
	t.Setenv("AIRLOCK_BOOTSTRAP_EMAIL", "admin@example.com")
	t.Setenv(EnvBootstrapPassword, "first admin password")
	email, pw := bootstrapFromEnv()
	if email != "admin@example.com" || pw != "first admin password" {
		t.Fatalf("read %q %q", email, pw)
	}
	if v, ok := os.LookupEnv(EnvBootstrapPassword); ok {
		t.Fatalf("the password is still in the environment: %q", v)
	}
	for _, kv := range os.Environ() {
		if strings.Contains(kv, "first admin password") {
			t.Fatalf("the environment holds the password: %s", kv)
		}
	}
}
