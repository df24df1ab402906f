package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Certificate renewal.
//
// A gateway's certificate is renewed when less than RenewBefore (a third by
// default) of its lifetime is left, checked at every connection and once a
// day while connected: the gateway makes a new key and CSR (the key never
// leaves it), sends them on a renew stream, checks that the certificate it
// gets back is for the new key, for this gateway and from its
// organization's CA, writes certificate and key together to gateway.pem in
// the data directory (one atomic rename, so a crash leaves the old pair or
// the new one, never a mix), and uses them from the next connection on; the
// connection in use is not interrupted.

const (
	// DefaultRenewBefore is the fraction of a certificate's lifetime left
	// at which the gateway renews it.
	DefaultRenewBefore = 1.0 / 3
	// renewCheckEvery is how often a connected gateway checks.
	renewCheckEvery = 24 * time.Hour
	// pairFile holds the renewed certificate and key in one file.
	pairFile = "gateway.pem"
)

// currentCert returns the certificate the gateway presents.
func (a *Agent) currentCert() tls.Certificate {
	a.certMu.RLock()
	defer a.certMu.RUnlock()
	return a.cert
}

// leaf returns the parsed current certificate, nil if it has none.
func (a *Agent) leaf() *x509.Certificate {
	cert := a.currentCert()
	if cert.Leaf != nil || len(cert.Certificate) == 0 {
		return cert.Leaf
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	return leaf
}

// renewFraction is Config.RenewBefore, or its default.
func (a *Agent) renewFraction() float64 {
	if frac := a.cfg.RenewBefore; frac > 0 && frac < 1 {
		return frac
	}
	return DefaultRenewBefore
}

// renewDue reports whether the certificate should be renewed at now, and
// when it expires.
func (a *Agent) renewDue(now time.Time) (bool, time.Time) {
	at, ok := a.renewAt()
	if !ok {
		return false, time.Time{}
	}
	return !now.Before(at), a.leaf().NotAfter
}

// renewIfDue renews the certificate over mux when it is due. Errors are
// logged by the caller; the old certificate stays in use.
func (a *Agent) renewIfDue(ctx context.Context, mux *tunnel.Mux) error {
	due, notAfter := a.renewDue(a.cfg.Now())
	if !due {
		return nil
	}
	a.log.Info("renewing the gateway's certificate", "expires", notAfter.UTC().Format(time.RFC3339))
	return a.renew(ctx, mux)
}

// renew sends a renew stream and installs the certificate it returns.
func (a *Agent) renew(ctx context.Context, mux *tunnel.Mux) error {
	key, csrPEM, err := pki.NewKeyAndCSR("airlock gateway")
	if err != nil {
		return fmt.Errorf("making a key for the gateway's new certificate: %w", err)
	}
	st, err := mux.OpenStream()
	if err != nil {
		return fmt.Errorf("opening a renew stream: %w", err)
	}
	defer st.Close()
	deadline := time.Now().Add(60 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	st.SetDeadline(deadline)
	if err := tunnel.WriteFrame(st, tunnel.Header{Type: tunnel.TypeRenew, CSR: string(csrPEM)}); err != nil {
		return fmt.Errorf("sending the certificate request: %w", err)
	}
	var res tunnel.Result
	if err := tunnel.ReadFrame(st, &res); err != nil {
		return fmt.Errorf("reading the server's answer to the certificate request: %w", err)
	}
	if !res.OK {
		return fmt.Errorf("the server refused to renew the gateway's certificate: %s", res.Message)
	}
	cert, err := a.checkRenewed(key, []byte(res.Certificate))
	if err != nil {
		return err
	}
	if dir := a.cfg.DataDir; dir != "" {
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		pair := append([]byte(res.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...)
		if err := writeFile(filepath.Join(dir, pairFile), pair, 0o600); err != nil {
			return fmt.Errorf("storing the gateway's new certificate in %s: %w", dir, err)
		}
	}
	a.certMu.Lock()
	a.cert = cert
	a.certMu.Unlock()
	a.log.Info("renewed the gateway's certificate; it is used from the next connection",
		"expires", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// checkRenewed parses the returned certificate and checks that it is for
// key, names this gateway, and chains to the organization's CA.
func (a *Agent) checkRenewed(key *ecdsa.PrivateKey, certPEM []byte) (tls.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return tls.Certificate{}, errors.New("the server's answer to the certificate request holds no certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("the renewed certificate does not parse: %w", err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return tls.Certificate{}, errors.New("the renewed certificate is not for the key the gateway sent")
	}
	if got := pki.IDFromCert(leaf, "gateway"); got != a.cfg.Identity.GatewayID {
		return tls.Certificate{}, fmt.Errorf("the renewed certificate is for gateway %q, not this one (%q)", got, a.cfg.Identity.GatewayID)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.cfg.Identity.caPool, CurrentTime: a.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return tls.Certificate{}, fmt.Errorf("the renewed certificate does not chain to the organization's CA: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}, nil
}

// renewLoop checks the certificate at once, then again when its renewal is
// due (at least every renewCheckEvery), while mux is up. A failed renewal is
// tried again after a twentieth of the certificate's lifetime (at least a
// second, at most an hour).
func (a *Agent) renewLoop(ctx context.Context, mux *tunnel.Mux) {
	for {
		wait := renewCheckEvery
		if err := a.renewIfDue(ctx, mux); err != nil {
			a.log.Error("renewing the gateway's certificate failed; the current one stays in use and renewal is tried again",
				"err", err)
			wait = min(wait, time.Hour, a.certLifetime()/20)
		} else if at, ok := a.renewAt(); ok {
			wait = min(wait, at.Sub(a.cfg.Now()))
		}
		t := time.NewTimer(max(wait, time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-mux.CloseChan():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// renewAt returns when the current certificate is due for renewal.
func (a *Agent) renewAt() (time.Time, bool) {
	leaf := a.leaf()
	if leaf == nil {
		return time.Time{}, false
	}
	return leaf.NotAfter.Add(-time.Duration(float64(leaf.NotAfter.Sub(leaf.NotBefore)) * a.renewFraction())), true
}

// certLifetime returns the current certificate's lifetime (a day if unknown).
func (a *Agent) certLifetime() time.Duration {
	if leaf := a.leaf(); leaf != nil {
		return leaf.NotAfter.Sub(leaf.NotBefore)
	}
	return 24 * time.Hour
}
