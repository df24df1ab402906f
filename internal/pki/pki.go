// Package pki is the organization's certificate authority. It signs:
//
//   - gateway certificates, from a CSR the gateway makes at enrollment (its
//     key never leaves it); they authenticate the gateway to the relay and
//     to CLIs (URI SAN airlock://gateway/<id>, DNS SAN <id>.gateway.airlock);
//   - session client certificates, from a CSR the CLI makes (URI SAN
//     airlock://session/<id>, NotAfter = the session's end);
//   - the relay's own server certificate for the gateway connection.
//
// The CA key is generated on first use and stored sealed with the root key.
package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
)

// RelayServerName is the name the relay's certificate is issued for; gateways
// verify it when they connect.
const RelayServerName = "relay.airlock"

// GatewayServerName is the DNS name in gateway id's certificate.
func GatewayServerName(id string) string { return id + ".gateway.airlock" }

// CA is one organization's certificate authority.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
	pool    *x509.CertPool
	now     func() time.Time

	mu    sync.Mutex
	relay *tls.Certificate
}

// Manager loads CAs from the store, creating them on first use.
type Manager struct {
	db  *store.DB
	kr  *keyring.Keyring
	now func() time.Time

	mu  sync.Mutex
	cas map[string]*CA
}

// NewManager returns a Manager. now may be nil.
func NewManager(db *store.DB, kr *keyring.Keyring, now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	return &Manager{db: db, kr: kr, now: now, cas: map[string]*CA{}}
}

// ForOrg returns the CA of an organization.
func (m *Manager) ForOrg(ctx context.Context, orgID string) (*CA, error) {
	const op = "pki.(*Manager).ForOrg"
	m.mu.Lock()
	defer m.mu.Unlock()
	if ca, ok := m.cas[orgID]; ok {
		return ca, nil
	}
	ca, err := m.load(ctx, orgID)
	if errors.Is(err, sql.ErrNoRows) {
		if err := m.create(ctx, orgID); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "creating the certificate authority failed", err)
		}
		ca, err = m.load(ctx, orgID)
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "loading the certificate authority failed", err)
	}
	m.cas[orgID] = ca
	return ca, nil
}

func aad(orgID string) string { return "ca-key:" + orgID }

func (m *Manager) load(ctx context.Context, orgID string) (*CA, error) {
	var certPEM string
	var sealed []byte
	if err := m.db.QueryRowContext(ctx, `SELECT cert_pem, key_enc FROM certificate_authorities WHERE org_id = $1`, orgID).Scan(&certPEM, &sealed); err != nil {
		return nil, err
	}
	der, err := m.kr.OpenSystem(aad(orgID), sealed)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return nil, errors.New("stored CA certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, certPEM: []byte(certPEM), key: key, pool: pool, now: m.now}, nil
}

func (m *Manager) create(ctx context.Context, orgID string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := m.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Airlock CA " + orgID, Organization: []string{"Airlock"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	sealed, err := m.kr.SealSystem(aad(orgID), keyDER)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	_, err = m.db.ExecContext(ctx, `INSERT INTO certificate_authorities (org_id, cert_pem, key_enc, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (org_id) DO NOTHING`, orgID, string(certPEM), sealed, store.Micros(now))
	return err
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// CertPEM is the CA certificate, which clients and gateways trust.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Pool holds the CA certificate.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// ParseCSR checks a PEM certificate request and its signature.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the certificate request is not a PEM CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the certificate request cannot be parsed: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the certificate request's signature is invalid: %w", err)
	}
	return csr, nil
}

func (ca *CA) sign(pub crypto.PublicKey, cn string, uri string, dns []string, notAfter time.Time, usage []x509.ExtKeyUsage) ([]byte, string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, "", err
	}
	now := ca.now()
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	sn := serial()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Airlock"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		URIs:         []*url.URL{u},
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), sn.Text(16), nil
}

// SignGateway issues a gateway's certificate from its CSR.
func (ca *CA) SignGateway(csr *x509.CertificateRequest, gatewayID string, notAfter time.Time) ([]byte, string, error) {
	return ca.sign(csr.PublicKey, "gateway "+gatewayID, GatewayURI(gatewayID), []string{GatewayServerName(gatewayID)}, notAfter,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth})
}

// SignSession issues a session's client certificate from the CLI's CSR.
func (ca *CA) SignSession(csr *x509.CertificateRequest, sessionID string, notAfter time.Time) ([]byte, string, error) {
	return ca.sign(csr.PublicKey, "session "+sessionID, SessionURI(sessionID), nil, notAfter,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
}

// RelayCertificate returns the relay's server certificate, issuing a new one
// when the current one is within a day of expiry.
func (ca *CA) RelayCertificate() (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.relay != nil && ca.now().Add(24*time.Hour).Before(ca.relay.Leaf.NotAfter) {
		return ca.relay, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	certPEM, _, err := ca.sign(&key.PublicKey, RelayServerName, "airlock://relay", []string{RelayServerName}, ca.now().Add(7*24*time.Hour),
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	ca.relay = &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
	return ca.relay, nil
}

// GatewayURI is the URI SAN of a gateway certificate.
func GatewayURI(id string) string { return "airlock://gateway/" + id }

// SessionURI is the URI SAN of a session certificate.
func SessionURI(id string) string { return "airlock://session/" + id }

// IDFromCert returns the id of kind ("gateway" or "session") named by the
// certificate's URI SAN, or "".
func IDFromCert(cert *x509.Certificate, kind string) string {
	for _, u := range cert.URIs {
		if u.Scheme == "airlock" && u.Host == kind {
			return strings.TrimPrefix(u.Path, "/")
		}
	}
	return ""
}

// NewKeyAndCSR makes a P-256 key and a CSR for it; used by the gateway and
// the CLI, which keep the key.
func NewKeyAndCSR(cn string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// PoolFromPEM returns a pool holding the PEM certificates.
func PoolFromPEM(p []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}
