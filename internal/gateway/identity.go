package gateway

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/relay"
)

// Identity is what a gateway keeps in its data directory after enrolling:
// its key (never sent anywhere), its certificate and the organization's CA.
type Identity struct {
	Domain    string `json:"domain"`
	GatewayID string `json:"gatewayId"`
	Name      string `json:"name"`
	OrgID     string `json:"orgId"`

	cert   tls.Certificate
	caPool *x509.CertPool
}

const (
	stateFile = "gateway.json"
	keyFile   = "gateway.key"
	certFile  = "gateway.crt"
	caFile    = "ca.crt"
)

// LoadIdentity reads an enrolled gateway's identity from dir. It returns an
// fs.ErrNotExist error when the gateway has not enrolled there yet.
func LoadIdentity(dir string) (*Identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("%s is damaged: %w", filepath.Join(dir, stateFile), err)
	}
	// A renewed pair (gateway.pem: certificate and key in one file, written
	// atomically) takes precedence over the pair from enrollment.
	if pair := filepath.Join(dir, pairFile); fileExists(pair) {
		if id.cert, err = tls.LoadX509KeyPair(pair, pair); err != nil {
			return nil, fmt.Errorf("loading the gateway's renewed certificate and key from %s: %w", pair, err)
		}
	} else if id.cert, err = tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile)); err != nil {
		return nil, fmt.Errorf("loading the gateway's certificate and key: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, err
	}
	if id.caPool, err = pki.PoolFromPEM(caPEM); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, caFile), err)
	}
	return &id, nil
}

// Enroll makes a key pair in dir, sends a CSR with the one-time token, and
// stores the certificate the server returns. The key never leaves dir.
func Enroll(ctx context.Context, domain, token, dir string, httpClient *http.Client) (*Identity, error) {
	if token == "" {
		return nil, errors.New("this data directory has no enrolled gateway: give the one-time enrollment token from `airlock gateways create NAME` with --token-file FILE, --token-stdin or AIRLOCK_GATEWAY_TOKEN")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the data directory: %w", err)
	}
	key, csrPEM, err := pki.NewKeyAndCSR("airlock gateway")
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(relay.EnrollmentRequest{Token: token, CSR: string(csrPEM)})
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(domain, "/")+"/api/v1/gateways/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Airlock server at %s: %w", domain, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var p struct {
			Detail string `json:"detail"`
		}
		json.Unmarshal(rb, &p)
		if p.Detail == "" {
			p.Detail = resp.Status
		}
		return nil, fmt.Errorf("enrollment refused: %s", p.Detail)
	}
	var e relay.Enrollment
	if err := json.Unmarshal(rb, &e); err != nil {
		return nil, fmt.Errorf("reading the enrollment answer: %w", err)
	}
	if err := writeIdentity(dir, key, e.Certificate, e.CACertificate); err != nil {
		return nil, err
	}
	// A pair renewed under an earlier enrollment must not take precedence.
	if err := os.Remove(filepath.Join(dir, pairFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing the previous enrollment's certificate: %w", err)
	}
	state, _ := json.MarshalIndent(Identity{Domain: domain, GatewayID: e.GatewayID, Name: e.Name, OrgID: e.OrgID}, "", "  ")
	if err := writeFile(filepath.Join(dir, stateFile), state, 0o600); err != nil {
		return nil, err
	}
	return LoadIdentity(dir)
}

func writeIdentity(dir string, key *ecdsa.PrivateKey, certPEM, caPEM string) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, certFile), []byte(certPEM), 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, caFile), []byte(caPEM), 0o644)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// writeFile writes atomically with the given mode.
func writeFile(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
