package cli

// The local proxy's TLS, for clients that insist on it (psql and pgx with
// sslmode=require or verify-full, node-postgres with ssl: true, mongosh
// with tls=true, Compass with TLS on).
//
// `db access` makes, in memory, a certificate authority of its own for the
// session and one server certificate signed by it for the names the proxy
// listens on (127.0.0.1, ::1, localhost); the CA's key is dropped at once,
// so nothing can be signed with it afterwards, and the server key never
// leaves memory. Only the CA certificate is written, to
// <config dir>/proxy-ca-<port>.pem, for clients that verify the server
// (sslrootcert=..., tlsCAFile=...). The file is named by the port so that
// two `db access` at once do not overwrite each other's, and so that a
// saved connection (the port is reused, see ports.go) keeps pointing at the
// right file; its content is new for every session, and it is removed when
// the session ends.
//
// The connection to the gateway is TLS already (end-to-end mTLS through the
// relay): the local TLS only protects the loopback hop, for clients that
// will not connect without it. The owner check (peer.go) runs on the TCP or
// unix connection before negotiate reads anything.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// localTLS is the local proxy's TLS server side for one session.
type localTLS struct {
	config *tls.Config // the server certificate and key, in memory only
	caPEM  []byte      // the session CA's certificate (public)
}

// localNames are the names and addresses in the proxy's certificate.
var localNames = struct {
	dns []string
	ips []net.IP
}{[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}

// newLocalTLS makes a session CA and a server certificate signed by it,
// valid from a minute ago until notAfter, both ECDSA P-256. kind
// ("postgres" or "mongodb") sets the ALPN protocol: PostgreSQL 17's direct
// TLS offers "postgresql".
func newLocalTLS(kind string, now, notAfter time.Time) (*localTLS, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "airlock db access local proxy CA", Organization: []string{"Airlock"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"Airlock"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     localNames.dns,
		IPAddresses:  localNames.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	// caKey goes out of scope here: nothing else can be signed by the CA.
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		MinVersion:   tls.VersionTLS12,
	}
	if kind != "mongodb" {
		cfg.NextProtos = []string{"postgresql"}
	}
	return &localTLS{config: cfg, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

// proxyCAPath is where the CA certificate of the proxy on port goes.
func proxyCAPath(port int) (string, error) {
	d, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, fmt.Sprintf("proxy-ca-%d.pem", port)), nil
}

// uriPathEscape escapes a file path for a URL's query (sslrootcert=,
// tlsCAFile=): every byte but letters, digits, "-._~/" becomes %XX. libpq
// decodes %XX in a URI but not "+", so a space must be %20.
func uriPathEscape(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// localHandshakeTimeout bounds the opening of a local connection: the
// client's first bytes and, if it asks for TLS, the handshake.
const localHandshakeTimeout = 30 * time.Second

// PostgreSQL's requests before a startup message (protocol codes).
const (
	pgSSLRequestCode    = 80877103
	pgGSSENCRequestCode = 80877104
)

// tlsRecordHandshake is the first byte of a TLS handshake record: a
// ClientHello, whether after an SSLRequest or as the very first byte
// (PostgreSQL 17's sslnegotiation=direct, or any MongoDB client with TLS).
const tlsRecordHandshake = 0x16

// negotiate reads a local client's opening bytes and, if it asks for TLS
// and cfg is not nil, does the TLS handshake as the server. It returns the
// connection to carry on with (conn, or the TLS connection over it) and
// the bytes already read that belong to the client's first message, which
// must be passed on before the rest. kind is "postgres" or "mongodb".
//
// PostgreSQL: an SSLRequest gets 'S' and the handshake (or 'N' without
// cfg); a GSSENCRequest gets 'N'; a ClientHello as the first byte is direct
// TLS; anything else (a startup message, a CancelRequest) is passed on.
// MongoDB: the first 16 bytes tell a TLS ClientHello from a wire message
// header (see looksLikeClientHello).
func negotiate(conn net.Conn, kind string, cfg *tls.Config) (net.Conn, []byte, error) {
	if kind == "mongodb" {
		var h [16]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			return nil, nil, fmt.Errorf("reading the client's first message: %w", err)
		}
		if cfg != nil && looksLikeClientHello(h[:]) {
			return handshake(&prefixConn{Conn: conn, head: h[:]}, cfg)
		}
		return conn, h[:], nil
	}
	// A client may ask for GSS encryption, then TLS, before its startup
	// message.
	for range 3 {
		var h [8]byte
		if _, err := io.ReadFull(conn, h[:1]); err != nil {
			return nil, nil, fmt.Errorf("reading the client's startup message: %w", err)
		}
		if h[0] == tlsRecordHandshake && cfg != nil {
			// Direct TLS: a startup message starts with its length, and
			// one of 0x16000000 bytes or more is refused by every server,
			// so a first byte of 0x16 is a ClientHello.
			return handshake(&prefixConn{Conn: conn, head: h[:1]}, cfg)
		}
		if _, err := io.ReadFull(conn, h[1:]); err != nil {
			return nil, nil, fmt.Errorf("reading the client's startup message: %w", err)
		}
		length, code := binary.BigEndian.Uint32(h[0:4]), binary.BigEndian.Uint32(h[4:8])
		switch {
		case length == 8 && code == pgSSLRequestCode && cfg != nil:
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, nil, err
			}
			// Nothing has been read past the request, so bytes a client
			// sent before the 'S' go into the handshake, which fails: they
			// are never taken for protected data.
			return handshake(conn, cfg)
		case length == 8 && (code == pgSSLRequestCode || code == pgGSSENCRequestCode):
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, nil, err
			}
		default:
			return conn, h[:], nil
		}
	}
	return nil, nil, errors.New("the client asked for encryption three times without a startup message")
}

// looksLikeClientHello tells the first 16 bytes of a TLS ClientHello from
// a MongoDB wire message header. A TLS record starts 0x16 0x03 (a
// handshake, version 3.x) and its sixth byte is 0x01 (ClientHello); a
// MongoDB message starts with its length (little-endian), and its bytes
// 12-15 are the op code, where a ClientHello has random bytes. A message
// of a length ending in 0x0316 whose request id has 0x01 as its second
// byte and whose op code is unknown is not a MongoDB message a client
// opens with.
func looksLikeClientHello(h []byte) bool {
	if len(h) < 16 || h[0] != tlsRecordHandshake || h[1] != 0x03 || h[5] != 0x01 {
		return false
	}
	switch binary.LittleEndian.Uint32(h[12:16]) {
	case 2004, 2012, 2013: // OP_QUERY, OP_COMPRESSED, OP_MSG
		return false
	}
	return true
}

// handshake runs the TLS server handshake on conn.
func handshake(conn net.Conn, cfg *tls.Config) (net.Conn, []byte, error) {
	tc := tls.Server(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, nil, &handshakeError{err: err}
	}
	return tc, nil, nil
}

// handshakeError is a failed TLS handshake with a local client.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "TLS handshake with a local client: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// clientRejectedCert reports whether a handshake failed because the client
// does not trust the proxy's certificate: it sent an alert about the
// certificate (Go: bad certificate; OpenSSL: unknown CA; Java: certificate
// unknown).
func (e *handshakeError) clientRejectedCert() bool {
	var oe *net.OpError
	return errors.As(e.err, &oe) && oe.Op == "remote error" && strings.Contains(oe.Err.Error(), "certificate")
}

// prefixConn is a connection whose first reads return head, bytes already
// read from it.
type prefixConn struct {
	net.Conn
	head []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// withHead returns conn with head put back in front of what it reads.
func withHead(conn net.Conn, head []byte) net.Conn {
	if len(head) == 0 {
		return conn
	}
	return &prefixConn{Conn: conn, head: bytes.Clone(head)}
}
