package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// newCAAt returns an organization CA whose clock is now().
func newCAAt(t *testing.T, orgID string, now func() time.Time) *pki.CA {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ($1, 'o', 0)`, orgID); err != nil {
		t.Fatal(err)
	}
	root, _ := keyring.ParseRootKey(keyring.GenerateRootKey())
	kr, err := keyring.New(ctx, db, root)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewManager(db, kr, now).ForOrg(ctx, orgID)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// enrolledDir writes an enrolled gateway's data directory whose certificate,
// issued by ca, ends at notAfter.
func enrolledDir(t *testing.T, ca *pki.CA, notAfter time.Time) string {
	t.Helper()
	dir := t.TempDir()
	key, csrPEM, _ := pki.NewKeyAndCSR("gw")
	csr, _ := pki.ParseCSR(csrPEM)
	certPEM, _, err := ca.SignGateway(csr, "gw1", notAfter)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeIdentity(dir, key, string(certPEM), string(ca.CertPEM())); err != nil {
		t.Fatal(err)
	}
	state, _ := json.Marshal(Identity{Domain: "https://airlock.invalid", GatewayID: "gw1", Name: "gw1", OrgID: "org1"})
	if err := os.WriteFile(filepath.Join(dir, stateFile), state, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fakeRelay answers renew streams on the relay's end of a mux the way the
// server does (tunnel.TypeRenew): it signs the CSR with ca for a year, or
// with sign when set. It counts the requests.
func fakeRelay(t *testing.T, ca *pki.CA, sign func(csrPEM string) tunnel.Result) (*tunnel.Mux, chan tunnel.Header) {
	t.Helper()
	gwEnd, relayEnd := tcpPair(t)
	gwMux, _ := tunnel.MuxServer(gwEnd)
	relayMux, _ := tunnel.MuxClient(relayEnd)
	t.Cleanup(func() { gwMux.Close(); relayMux.Close() })
	got := make(chan tunnel.Header, 10)
	go func() {
		for {
			st, err := relayMux.AcceptStream()
			if err != nil {
				return
			}
			var h tunnel.Header
			if err := tunnel.ReadFrame(st, &h); err != nil {
				st.Close()
				continue
			}
			got <- h
			res := tunnel.Result{Code: tunnel.CodeInvalid, Message: "unexpected stream"}
			if h.Type == tunnel.TypeRenew {
				if sign != nil {
					res = sign(h.CSR)
				} else if csr, err := pki.ParseCSR([]byte(h.CSR)); err != nil {
					res = tunnel.Result{Code: tunnel.CodeInvalid, Message: err.Error()}
				} else if cert, _, err := ca.SignGateway(csr, "gw1", time.Now().Add(365*24*time.Hour)); err != nil {
					res = tunnel.Result{Code: tunnel.CodeInternal, Message: err.Error()}
				} else {
					res = tunnel.Result{OK: true, Certificate: string(cert)}
				}
			}
			tunnel.WriteFrame(st, res)
			st.Close()
		}
	}()
	return gwMux, got
}

func leafOf(t *testing.T, c tls.Certificate) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// A gateway enrolled 364 days ago, whose certificate ends tomorrow, renews
// it over its connection: the new certificate is for a new key, stored in
// the data directory (a restart loads it), and presented from then on.
// The server side of the renew stream is a fake relay here (the server's
// own is tested in the server's tests).
func TestGatewayRenewsACertificateOneDayFromExpiry(t *testing.T) {
	issued := time.Now().Add(-364 * 24 * time.Hour)
	ca := newCAAt(t, "org1", func() time.Time { return issued })
	dir := enrolledDir(t, ca, time.Now().Add(24*time.Hour))
	id, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Identity: id, DataDir: dir, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	old := leafOf(t, a.currentCert())
	if due, _ := a.renewDue(time.Now()); !due {
		t.Fatal("a certificate one day from the end of a year is not due for renewal")
	}

	mux, got := fakeRelay(t, ca, nil)
	if err := a.renewIfDue(context.Background(), mux); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h.Type != tunnel.TypeRenew || h.CSR == "" {
		t.Fatalf("the relay got %+v", h)
	}
	renewed := leafOf(t, a.currentCert())
	if !renewed.NotAfter.After(time.Now().Add(300*24*time.Hour)) || renewed.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Fatalf("the certificate in use ends %v (serial %v; the old one %v)", renewed.NotAfter, renewed.SerialNumber, old.SerialNumber)
	}
	if renewed.PublicKey.(*ecdsa.PublicKey).Equal(old.PublicKey) {
		t.Fatal("the renewed certificate reuses the old key")
	}
	// Not due any more: nothing is sent.
	if err := a.renewIfDue(context.Background(), mux); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-got:
		t.Fatalf("a second renewal was sent: %+v", h)
	case <-time.After(100 * time.Millisecond):
	}
	// A restart loads the renewed pair.
	id2, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if leafOf(t, id2.cert).SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatal("the data directory does not hold the renewed certificate")
	}
	if info, err := os.Stat(filepath.Join(dir, pairFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v", pairFile, info, err)
	}
}

// A certificate that is not for the key sent, or not from the CA, is
// refused; the old one stays in use.
func TestGatewayRefusesAWrongRenewedCertificate(t *testing.T) {
	ca := newCAAt(t, "org1", func() time.Time { return time.Now().Add(-300 * 24 * time.Hour) })
	dir := enrolledDir(t, ca, time.Now().Add(24*time.Hour))
	id, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Identity: id, DataDir: dir, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	old := leafOf(t, a.currentCert())
	other := newCA(t, "org1")
	for name, sign := range map[string]func(string) tunnel.Result{
		"another key": func(string) tunnel.Result {
			_, csrPEM, _ := pki.NewKeyAndCSR("gw")
			csr, _ := pki.ParseCSR(csrPEM)
			cert, _, _ := ca.SignGateway(csr, "gw1", time.Now().Add(time.Hour*24*365))
			return tunnel.Result{OK: true, Certificate: string(cert)}
		},
		"another CA": func(csrPEM string) tunnel.Result {
			csr, _ := pki.ParseCSR([]byte(csrPEM))
			cert, _, _ := other.SignGateway(csr, "gw1", time.Now().Add(time.Hour*24*365))
			return tunnel.Result{OK: true, Certificate: string(cert)}
		},
		"refused": func(string) tunnel.Result { return tunnel.Result{Code: tunnel.CodeInvalid, Message: "no"} },
	} {
		mux, _ := fakeRelay(t, ca, sign)
		if err := a.renewIfDue(context.Background(), mux); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if leafOf(t, a.currentCert()).SerialNumber.Cmp(old.SerialNumber) != 0 {
			t.Fatalf("%s: the certificate in use changed", name)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, pairFile)); err == nil {
		t.Fatal("a refused certificate was stored")
	}
}
