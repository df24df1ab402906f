package pki_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

type fixture struct {
	db    *store.DB
	kr    *keyring.Keyring
	clock *testenv.Clock
	m     *pki.Manager
}

// newFixture opens a SQLite store with two organizations and a Manager on
// a clock that moves only when told to.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, kr := testenv.OpenStore(t)
	for _, org := range []string{"org-a", "org-b"} {
		if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ($1, $1, 0)`, org); err != nil {
			t.Fatal(err)
		}
	}
	c := testenv.NewClock(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	return &fixture{db: db, kr: kr, clock: c, m: pki.NewManager(db, kr, c.Now)}
}

func (f *fixture) ca(t *testing.T, org string) *pki.CA {
	t.Helper()
	ca, err := f.m.ForOrg(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func csr(t *testing.T) *x509.CertificateRequest {
	t.Helper()
	_, p, err := pki.NewKeyAndCSR("cli")
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCSR(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parse(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", p)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCAPersists: an organization keeps one CA across restarts (gateways
// and CLIs pin it), and organizations do not share one.
func TestCAPersists(t *testing.T) {
	f := newFixture(t)
	a := f.ca(t, "org-a")
	if again := f.ca(t, "org-a"); string(again.CertPEM()) != string(a.CertPEM()) {
		t.Fatal("a second ForOrg made a new CA")
	}
	restarted := pki.NewManager(f.db, f.kr, f.clock.Now)
	b, err := restarted.ForOrg(context.Background(), "org-a")
	if err != nil {
		t.Fatal(err)
	}
	if string(b.CertPEM()) != string(a.CertPEM()) {
		t.Fatal("a restarted manager made a new CA instead of loading the stored one")
	}
	if other := f.ca(t, "org-b"); string(other.CertPEM()) == string(a.CertPEM()) {
		t.Fatal("two organizations share a CA")
	}
	var sealed []byte
	if err := f.db.QueryRow(`SELECT key_enc FROM certificate_authorities WHERE org_id = 'org-a'`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "PRIVATE KEY") || len(sealed) == 0 {
		t.Fatal("the CA key is not stored sealed")
	}
	caCert := parse(t, a.CertPEM())
	if !caCert.IsCA {
		t.Fatal("the CA certificate is not a CA")
	}
}

func TestSignSession(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, "org-a")
	const id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
	end := f.clock.Now().Add(90 * time.Minute)
	p, serial, err := ca.SignSession(csr(t), id, end)
	if err != nil {
		t.Fatal(err)
	}
	cert := parse(t, p)
	if got := pki.IDFromCert(cert, "session"); got != id {
		t.Fatalf("IDFromCert(session) = %q, want %q", got, id)
	}
	if got := pki.IDFromCert(cert, "gateway"); got != "" {
		t.Fatalf("a session certificate names a gateway: %q", got)
	}
	if !cert.NotAfter.Equal(end) {
		t.Fatalf("NotAfter %v, want the session's end %v", cert.NotAfter, end)
	}
	if cert.SerialNumber.Text(16) != serial {
		t.Fatalf("serial %s, certificate has %s", serial, cert.SerialNumber.Text(16))
	}

	verify := func(pool *x509.CertPool, at time.Time) error {
		_, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err
	}
	if err := verify(ca.Pool(), f.clock.Now()); err != nil {
		t.Fatalf("the certificate does not verify against its CA: %v", err)
	}
	if err := verify(ca.Pool(), end.Add(time.Second)); err == nil {
		t.Fatal("the certificate verifies after the session's end")
	}
	if err := verify(f.ca(t, "org-b").Pool(), f.clock.Now()); err == nil {
		t.Fatal("the certificate verifies against another organization's CA")
	}
	pool, err := pki.PoolFromPEM(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(pool, f.clock.Now()); err != nil {
		t.Fatalf("the certificate does not verify against the CA PEM a CLI is given: %v", err)
	}
	// A session certificate is for clients only: it cannot serve as a gateway.
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: f.clock.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("a session certificate verifies for server authentication")
	}
}

// TestCertificateEndCappedByCA: nothing the CA signs outlives the CA.
func TestCertificateEndCappedByCA(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, "org-a")
	caEnd := parse(t, ca.CertPEM()).NotAfter
	p, _, err := ca.SignSession(csr(t), "s", caEnd.AddDate(5, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := parse(t, p).NotAfter; !got.Equal(caEnd) {
		t.Fatalf("NotAfter %v, want the CA's end %v", got, caEnd)
	}
}

func TestSignGateway(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, "org-a")
	const id = "gw-1"
	p, _, err := ca.SignGateway(csr(t), id, f.clock.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert := parse(t, p)
	if got := pki.IDFromCert(cert, "gateway"); got != id {
		t.Fatalf("IDFromCert(gateway) = %q", got)
	}
	if got := pki.IDFromCert(cert, "session"); got != "" {
		t.Fatalf("a gateway certificate names a session: %q", got)
	}
	// CLIs verify the gateway by the name they are given with the session.
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: f.clock.Now(),
			DNSName: pki.GatewayServerName(id), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("the gateway certificate does not verify as %s for usage %v: %v", pki.GatewayServerName(id), usage, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: f.clock.Now(),
		DNSName: pki.GatewayServerName("gw-2")}); err == nil {
		t.Fatal("gateway gw-1's certificate verifies as gw-2")
	}
}

func TestParseCSR(t *testing.T) {
	_, good, err := pki.NewKeyAndCSR("cli")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.ParseCSR(good); err != nil {
		t.Fatalf("a good CSR is refused: %v", err)
	}
	block, _ := pem.Decode(good)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-3] ^= 0x40 // inside the signature, the last field
	for name, tc := range map[string]struct {
		in    []byte
		words string
	}{
		"bad signature": {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), "signature is invalid"},
		"not PEM":       {[]byte("hello"), "not a PEM CERTIFICATE REQUEST"},
		"wrong type":    {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), "not a PEM CERTIFICATE REQUEST"},
		"garbage DER":   {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), "cannot be parsed"},
	} {
		_, err := pki.ParseCSR(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.words) {
			t.Errorf("%s: ParseCSR error %v, want one saying %q", name, err, tc.words)
		}
	}
}

// TestRelayCertificate: the relay keeps its certificate until it is within
// a day of expiry, then issues a new one.
func TestRelayCertificate(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, "org-a")
	first, err := ca.RelayCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: f.clock.Now(), DNSName: pki.RelayServerName}); err != nil {
		t.Fatalf("the relay certificate does not verify as %s: %v", pki.RelayServerName, err)
	}
	f.clock.Advance(5 * 24 * time.Hour)
	again, err := ca.RelayCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Fatal("the relay certificate was replaced with days to go")
	}
	f.clock.Advance(36 * time.Hour)
	renewed, err := ca.RelayCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Fatal("the relay certificate was not renewed within a day of its end")
	}
}
