package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDomainWithoutSchemeOnLoopbackAsks: without a scheme a server
// elsewhere is https://, the only scheme allowed for it; a loopback address
// may speak either, so the CLI asks which was meant.
func TestDomainWithoutSchemeOnLoopbackAsks(t *testing.T) {
	for d, addr := range map[string]string{
		"127.0.0.1:8720":  "127.0.0.1:8720",
		"localhost:8720/": "localhost:8720",
		"[::1]:8720":      "[::1]:8720",
		"127.0.0.1":       "127.0.0.1",
	} {
		_, err := normalizeDomain(d)
		want := "--domain needs a scheme: did you mean http://" + addr
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "or https://"+addr+"?") {
			t.Errorf("%s: %v, want %q", d, err, want)
		}
	}
	if got, err := normalizeDomain("airlock.example.com:8443"); err != nil || got != "https://airlock.example.com:8443" {
		t.Errorf("a server elsewhere without a scheme: %q %v", got, err)
	}
}

// TestNotLoggedInNamesTheLastServer: after a logout, "not logged in"
// names the server (and CA file) of the login that was removed; a damaged
// or unusable record falls back to the example.
func TestNotLoggedInNamesTheLastServer(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvConfigDir, dir)
	_, err := loadCredentials()
	if !errors.Is(err, errNotLoggedIn) || !strings.Contains(err.Error(), "airlock login --domain https://airlock.example.com") {
		t.Fatalf("never logged in: %v", err)
	}
	saveLastLogin(&Credentials{Domain: "http://127.0.0.1:8720", CAFile: "/etc/airlock/ca.pem", AccessToken: "secret-access", RefreshToken: "secret-refresh"})
	_, err = loadCredentials()
	if !errors.Is(err, errNotLoggedIn) || !strings.Contains(err.Error(), "run `airlock login --domain http://127.0.0.1:8720 --ca-file /etc/airlock/ca.pem`") {
		t.Fatalf("after a logout: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "last-login.json"))
	if strings.Contains(string(b), "secret") {
		t.Fatalf("the last login record holds a token: %s", b)
	}
	for _, bad := range []string{`{"domain":"http://10.0.0.1:8720"}`, `not json`, `{"domain":"https://x.example.com/\u0000"}`} {
		os.WriteFile(filepath.Join(dir, "last-login.json"), []byte(bad), 0o600)
		if _, err := loadCredentials(); !strings.Contains(err.Error(), "https://airlock.example.com") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// TestAPIErrorsNameFlags: the server's messages name request fields in
// backticks; the CLI shows its flags instead, and starts a field error
// with the flag of the field.
func TestAPIErrorsNameFlags(t *testing.T) {
	type detail = struct {
		Message  string `json:"message"`
		Location string `json:"location"`
	}
	msg := "remove the TLS options (tls, ssl, tls...) from the connection string: the resource's own TLS settings decide it " +
		"(`sslEnabled`, `sslRejectUnauthorized` and `sslCaPem`)"
	e := &apiError{Status: 422, Detail: msg, Errors: []detail{{Message: msg, Location: "body.connectionString"}}}
	want := "--connection-string: remove the TLS options (tls, ssl, tls...) from the connection string: the resource's own TLS " +
		"settings decide it (--ssl-enabled, --ssl-reject-unauthorized and --ssl-ca-file)"
	if got := e.Error(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// A message that names its own field is not prefixed; commands in
	// backticks stay.
	msg = "a MongoDB resource takes its hosts from `connectionString`; leave `host` and `port` empty"
	e = &apiError{Status: 422, Detail: msg, Errors: []detail{{Message: msg, Location: "body.host"}}}
	if got := e.Error(); got != "a MongoDB resource takes its hosts from --connection-string; leave --host and --port empty" {
		t.Errorf("got %s", got)
	}
	msg = "no gateway of that name or id in the organization; `airlock gateways list` shows them"
	e = &apiError{Status: 422, Detail: msg, Errors: []detail{{Message: msg, Location: "body.gateway"}}}
	if got := e.Error(); got != "--gateway: "+msg {
		t.Errorf("got %s", got)
	}
	// A detail of its own, as huma's validation gives, names the flag.
	e = &apiError{Status: 422, Detail: "validation failed", Errors: []detail{{Message: "expected length <= 65536", Location: "body.sslCaPem"}}}
	if got := e.Error(); got != "validation failed (--ssl-ca-file: expected length <= 65536)" {
		t.Errorf("got %s", got)
	}
}
