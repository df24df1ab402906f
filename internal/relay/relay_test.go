package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

// newService opens a SQLite store with organization "org" and a relay on
// a clock that moves only when told to.
func newService(t *testing.T) (*Service, *testenv.Clock) {
	t.Helper()
	db, kr := testenv.OpenStore(t)
	if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ('org', 'org', 0)`); err != nil {
		t.Fatal(err)
	}
	c := testenv.NewClock(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	return New(Config{DB: db, PKI: pki.NewManager(db, kr, c.Now), Now: c.Now}), c
}

func orgAdmin() context.Context {
	return api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectUser, ID: "u1", OrgID: "org", Name: "root@example.com", OrgAdmin: true})
}

func newCSR(t *testing.T) string {
	t.Helper()
	_, p, err := pki.NewKeyAndCSR("gateway")
	if err != nil {
		t.Fatal(err)
	}
	return string(p)
}

func parseCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		t.Fatalf("not PEM: %q", p)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGatewayOnline: a gateway is online only while a server holds its
// connection and it was heard from within OnlineWindow, so the flag a
// crashed server left set does not keep it online.
func TestGatewayOnline(t *testing.T) {
	s, c := newService(t)
	now := c.Now()
	for _, tc := range []struct {
		name      string
		heartbeat time.Time
		connected bool
		online    bool
	}{
		{"never heard from", time.Time{}, false, false},
		{"never heard from, flag set", time.Time{}, true, false},
		{"connected, heard just now", now, true, true},
		{"connected, heard within the window", now.Add(-OnlineWindow + time.Millisecond), true, true},
		{"flag left by a crashed server", now.Add(-OnlineWindow), true, false},
		{"flag left long ago", now.Add(-time.Hour), true, false},
		{"disconnected, heard just now", now, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hb int64
			if !tc.heartbeat.IsZero() {
				hb = store.Micros(tc.heartbeat)
			}
			g := s.gatewayFromRow("id", "gw", 0, hb, tc.connected, "192.0.2.1:1", "v1", 0)
			if g.Online != tc.online {
				t.Fatalf("Online = %v, want %v", g.Online, tc.online)
			}
			if (g.LastHeartbeatAt == nil) != tc.heartbeat.IsZero() {
				t.Fatalf("LastHeartbeatAt = %v for heartbeat %v", g.LastHeartbeatAt, tc.heartbeat)
			}
			if g.Enrolled {
				t.Fatal("a gateway with no enrollment time counts as enrolled")
			}
		})
	}
}

// TestEnrollment: the enrollment token is stored only as its hash, is
// spent by one enrollment, and expires.
func TestEnrollment(t *testing.T) {
	ctx := context.Background()
	s, c := newService(t)
	if _, err := s.CreateGateway(api.WithPrincipal(ctx, &api.Principal{Kind: api.SubjectUser, ID: "u2", OrgID: "org"}), "edge"); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a user who is not an org admin registered a gateway: %v", err)
	}
	if _, err := s.CreateGateway(orgAdmin(), "Edge_1"); !errs.Is(err, errs.Invalid) {
		t.Fatalf("an invalid gateway name: %v", err)
	}
	g, err := s.CreateGateway(orgAdmin(), "edge")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateGateway(orgAdmin(), "edge"); !errs.Is(err, errs.Conflict) {
		t.Fatalf("a second gateway named edge: %v", err)
	}
	if !strings.HasPrefix(g.EnrollmentToken, "alkg_") || !g.EnrollmentExpiresAt.Equal(c.Now().Add(EnrollmentTTL)) {
		t.Fatalf("token %q expiring %v", g.EnrollmentToken, g.EnrollmentExpiresAt)
	}
	var stored []byte
	if err := s.db.QueryRow(`SELECT enrollment_token_hash FROM gateways WHERE id = $1`, g.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(g.EnrollmentToken))
	if !bytes.Equal(stored, sum[:]) {
		t.Fatal("the stored value is not the token's SHA-256")
	}

	if _, err := s.Enroll(ctx, g.EnrollmentToken, "not a CSR"); !errs.Is(err, errs.Invalid) {
		t.Fatalf("a bad CSR: %v, want invalid", err)
	}
	if _, err := s.Enroll(ctx, g.EnrollmentToken+"x", newCSR(t)); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("a mistyped token: %v, want unauthenticated", err)
	}
	e, err := s.Enroll(ctx, g.EnrollmentToken, newCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	if e.GatewayID != g.ID || e.Name != "edge" || e.OrgID != "org" {
		t.Fatalf("enrollment %+v", e)
	}
	cert := parseCert(t, e.Certificate)
	if pki.IDFromCert(cert, "gateway") != g.ID {
		t.Fatalf("the certificate names gateway %q", pki.IDFromCert(cert, "gateway"))
	}
	pool, err := pki.PoolFromPEM([]byte(e.CACertificate))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: c.Now(), DNSName: pki.GatewayServerName(g.ID)}); err != nil {
		t.Fatalf("the gateway certificate does not verify against the CA it was given: %v", err)
	}
	var serial string
	if err := s.db.QueryRow(`SELECT cert_serial FROM gateways WHERE id = $1`, g.ID).Scan(&serial); err != nil {
		t.Fatal(err)
	}
	if serial != cert.SerialNumber.Text(16) {
		t.Fatalf("recorded serial %s, certificate has %s", serial, cert.SerialNumber.Text(16))
	}
	if _, err := s.Enroll(ctx, g.EnrollmentToken, newCSR(t)); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("a spent token enrolled again: %v", err)
	}

	// A new token replaces the old one, and lasts EnrollmentTTL.
	first, err := s.NewEnrollmentToken(orgAdmin(), "edge")
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.NewEnrollmentToken(orgAdmin(), g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, first.EnrollmentToken, newCSR(t)); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("a replaced token enrolled: %v", err)
	}
	c.Advance(EnrollmentTTL)
	if _, err := s.Enroll(ctx, second.EnrollmentToken, newCSR(t)); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("an expired token enrolled: %v", err)
	}
}

// TestRenewGateway: a renewal issues a certificate for the same gateway and
// makes it the only one accepted.
func TestRenewGateway(t *testing.T) {
	ctx := context.Background()
	s, c := newService(t)
	g, err := s.CreateGateway(orgAdmin(), "edge")
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Enroll(ctx, g.EnrollmentToken, newCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	old := parseCert(t, e.Certificate)

	if _, err := s.RenewGateway(ctx, "", newCSR(t)); !errs.Is(err, errs.Invalid) {
		t.Fatalf("no gateway: %v, want invalid", err)
	}
	if _, err := s.RenewGateway(ctx, g.ID, strings.Replace(newCSR(t), "REQUEST", "REQUESTS", 2)); !errs.Is(err, errs.Invalid) {
		t.Fatalf("a bad CSR: %v, want invalid", err)
	}
	if _, err := s.RenewGateway(ctx, "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", newCSR(t)); !errs.Is(err, errs.NotFound) {
		t.Fatalf("an unknown gateway: %v, want not found", err)
	}

	c.Advance(300 * 24 * time.Hour)
	p, err := s.RenewGateway(ctx, g.ID, newCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	renewed := parseCert(t, p)
	if pki.IDFromCert(renewed, "gateway") != g.ID {
		t.Fatal("the renewed certificate names another gateway")
	}
	if !renewed.NotAfter.Equal(c.Now().Add(GatewayCertTTL)) {
		t.Fatalf("renewed NotAfter %v, want %v", renewed.NotAfter, c.Now().Add(GatewayCertTTL))
	}
	var serial string
	var notAfter int64
	if err := s.db.QueryRow(`SELECT cert_serial, cert_not_after FROM gateways WHERE id = $1`, g.ID).Scan(&serial, &notAfter); err != nil {
		t.Fatal(err)
	}
	if serial != renewed.SerialNumber.Text(16) || serial == old.SerialNumber.Text(16) {
		t.Fatalf("recorded serial %s; renewed %s, old %s", serial, renewed.SerialNumber.Text(16), old.SerialNumber.Text(16))
	}
	if !store.Time(notAfter).Equal(renewed.NotAfter) {
		t.Fatalf("recorded end %v, certificate ends %v", store.Time(notAfter), renewed.NotAfter)
	}
}
