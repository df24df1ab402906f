package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that lives in memory for the length of a
// test. Servers get certificates from it with Issue; clients trust it through
// CertPEM, Pool or TLSConfig.
type CA struct {
	// CertPEM is the CA certificate, PEM encoded.
	CertPEM []byte
	// Cert is the parsed CA certificate.
	Cert *x509.Certificate

	key *ecdsa.PrivateKey
}

// TLSFiles are the paths of the files written by CA.WriteFiles.
type TLSFiles struct {
	CAFile   string // the CA certificate (PEM)
	CertFile string // the server certificate (PEM)
	KeyFile  string // the server's private key (PEM, PKCS #8, mode 0600)
}

// certValidity is how long the test certificates are valid. A clock skew of a
// few minutes must not matter, so they start an hour in the past.
const certValidity = 48 * time.Hour

// NewCA returns a fresh ECDSA P-256 CA. It fails the test if the key cannot be
// generated.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := newCA()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return ca
}

func newCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"airlock tests"}, CommonName: "airlock test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Cert:    cert,
		key:     key,
	}, nil
}

// Issue returns a server certificate and its private key, both PEM encoded,
// for the given hosts: each is put in the certificate as an IP address SAN if
// it parses as one, else as a DNS name SAN. The first host is also the common
// name. It fails the test on error.
func (ca *CA) Issue(t testing.TB, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.issue(hosts...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return certPEM, keyPEM
}

func (ca *CA) issue(hosts ...string) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, fmt.Errorf("issue certificate: no hosts given")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate server key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"airlock tests"}, CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("create server certificate for %v: %w", hosts, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode server key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		nil
}

// Pool returns a certificate pool that holds only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// TLSConfig returns a client configuration that trusts only this CA and
// verifies that the server's certificate names serverName.
func (ca *CA) TLSConfig(serverName string) *tls.Config {
	return &tls.Config{
		RootCAs:    ca.Pool(),
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
	}
}

// WriteFiles issues a server certificate for hosts and writes ca.crt,
// server.crt and server.key (mode 0600) into dir, which must exist.
func (ca *CA) WriteFiles(dir string, hosts ...string) (TLSFiles, error) {
	certPEM, keyPEM, err := ca.issue(hosts...)
	if err != nil {
		return TLSFiles{}, err
	}
	f := TLSFiles{
		CAFile:   filepath.Join(dir, "ca.crt"),
		CertFile: filepath.Join(dir, "server.crt"),
		KeyFile:  filepath.Join(dir, "server.key"),
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.CAFile, ca.CertPEM, 0o644},
		{f.CertFile, certPEM, 0o644},
		{f.KeyFile, keyPEM, 0o600},
	} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return TLSFiles{}, fmt.Errorf("write TLS file: %w", err)
		}
		// WriteFile keeps the mode of an existing file; set it explicitly.
		if err := os.Chmod(w.path, w.mode); err != nil {
			return TLSFiles{}, fmt.Errorf("write TLS file: %w", err)
		}
	}
	return f, nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate certificate serial: %w", err)
	}
	return n, nil
}
