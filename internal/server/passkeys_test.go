package server_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/server"
	"github.com/airlockpam/airlock/internal/testenv"
)

// startWithPublicURL runs a server with --public-url on backend b.
func startWithPublicURL(t *testing.T, b backend, publicURL string) *env {
	t.Helper()
	dataDir, dbURL := b.new(t)
	e := &env{t: t, clock: testenv.NewClock(time.Now()), dataDir: dataDir, databaseURL: dbURL, rootKey: keyring.GenerateRootKey()}
	root, err := keyring.ParseRootKey(e.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Config{DataDir: dataDir, DatabaseURL: dbURL, RootKey: root,
		BootstrapEmail: adminEmail, BootstrapPassword: adminPassword, Auth: auth.Config{Now: e.clock.Now}, PublicURL: publicURL})
	if err != nil {
		t.Fatalf("starting the server: %v", err)
	}
	e.srv = srv
	e.http = httptest.NewServer(srv.Handler())
	t.Cleanup(e.close)
	return e
}

// TestPasskeyAPI: the passkey operations over HTTP: registration options
// bound to the public URL's host, an answer that is not a credential
// refused with a message naming the fix, unknown challenges, and the
// organization's webauthn method (refused on a server without a public
// URL). A public URL with an IP address is refused at start.
func TestPasskeyAPI(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := startWithPublicURL(t, b, "https://airlock.example.com")
		a := e.admin()
		var reg struct {
			ID      string `json:"id"`
			Options struct {
				PublicKey struct {
					Challenge string `json:"challenge"`
					RP        struct{ ID, Name string }
					User      struct{ Name string }
				} `json:"publicKey"`
			} `json:"options"`
		}
		if st := a.call("POST", "/api/v1/mfa/passkey-registrations", nil, &reg); st != 201 {
			t.Fatalf("begin: %d %s", st, a.problem().raw)
		}
		if reg.ID == "" || reg.Options.PublicKey.RP.ID != "airlock.example.com" || reg.Options.PublicKey.User.Name != adminEmail ||
			reg.Options.PublicKey.Challenge == "" {
			t.Fatalf("registration %+v", reg)
		}
		var keys []map[string]any
		if st := a.call("GET", "/api/v1/mfa/passkeys", nil, &keys); st != 200 || len(keys) != 0 {
			t.Fatalf("list: %d %v", st, keys)
		}
		if st := a.call("POST", "/api/v1/mfa/passkey-registrations/"+reg.ID+"/finish", map[string]any{"credential": map[string]any{"id": "x"}}, nil); st != 422 ||
			!strings.Contains(a.problem().raw, "navigator.credentials.create") {
			t.Fatalf("a junk credential: %d %s", st, a.problem().raw)
		}
		if st := a.call("GET", "/api/v1/mfa/challenges/no-such", nil, nil); st != 404 || !strings.Contains(a.problem().Detail, "no such MFA challenge") {
			t.Fatalf("an unknown challenge: %d %s", st, a.problem().raw)
		}
		if st := a.call("POST", "/api/v1/mfa/challenges/no-such/passkey", nil, nil); st != 404 {
			t.Fatalf("a passkey for an unknown challenge: %d %s", st, a.problem().raw)
		}
		if st := a.call("POST", "/api/v1/mfa/passkeys/no-such/remove", map[string]any{"code": "aaaaa-aaaaa"}, nil); st != 404 {
			t.Fatalf("removing an unknown passkey: %d %s", st, a.problem().raw)
		}
		if st := a.call("PATCH", "/api/v1/org", map[string]any{"mfaMethod": "webauthn"}, nil); st != 200 {
			t.Fatalf("org method webauthn: %d %s", st, a.problem().raw)
		}

		plain := start(t, b)
		pa := plain.admin()
		if st := pa.call("PATCH", "/api/v1/org", map[string]any{"mfaMethod": "webauthn"}, nil); st != 422 || !strings.Contains(pa.problem().raw, "--public-url") {
			t.Fatalf("webauthn without a public URL: %d %s", st, pa.problem().raw)
		}
		if st := pa.call("POST", "/api/v1/mfa/passkey-registrations", nil, nil); st != 503 || !strings.Contains(pa.problem().Detail, "--public-url") {
			t.Fatalf("passkeys without a public URL: %d %s", st, pa.problem().raw)
		}
	})
	root, _ := keyring.ParseRootKey(keyring.GenerateRootKey())
	_, err := server.New(context.Background(), server.Config{DataDir: t.TempDir(), RootKey: root, PublicURL: "https://10.0.0.5"})
	if err == nil || !strings.Contains(err.Error(), "--public-url") || !strings.Contains(err.Error(), "domain name") {
		t.Fatalf("an IP address as the public URL: %v", err)
	}
}
