package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongoopts "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// negotiatingListener answers every connection as the local proxy does up
// to the gateway: negotiate (TLS when asked), then, in place of the
// gateway, a refusal whose message says whether the connection is TLS.
// It returns the address and the file of the session CA certificate; the
// handshake errors go to errs.
func negotiatingListener(t *testing.T, kind string) (addr, caFile string, errs <-chan error) {
	t.Helper()
	lt, err := newLocalTLS(kind, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "proxy-ca.pem")
	if err := writeFileAtomic(caFile, lt.caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ec := make(chan error, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				conn, head, err := negotiate(c, kind, lt.config)
				if err != nil {
					ec <- err
					return
				}
				how := "plain"
				if tc, ok := conn.(*tls.Conn); ok {
					how = "tls alpn=" + tc.ConnectionState().NegotiatedProtocol
				}
				_ = refuse(withHead(conn, head), kind, refuseUnavailable(how))
				conn.Close()
			}()
		}
	}()
	return ln.Addr().String(), caFile, ec
}

func TestLocalTLSWithPostgresClients(t *testing.T) {
	addr, caFile, errs := negotiatingListener(t, "postgres")
	for _, tc := range []struct{ name, params, want string }{
		{"disable", "sslmode=disable", "airlock: plain"},
		{"prefer", "sslmode=prefer", "airlock: tls alpn="},
		{"require", "sslmode=require", "airlock: tls alpn="},
		{"verify-full", "sslmode=verify-full&sslrootcert=" + uriPathEscape(caFile), "airlock: tls alpn="},
		{"verify-ca", "sslmode=verify-ca&sslrootcert=" + uriPathEscape(caFile), "airlock: tls alpn="},
		{"direct", "sslmode=require&sslnegotiation=direct", "airlock: tls alpn=postgresql"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, host := range []string{addr, strings.Replace(addr, "127.0.0.1", "localhost", 1)} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := pgconn.Connect(ctx, "postgres://u@"+host+"/d?"+tc.params)
				cancel()
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Message != tc.want {
					t.Fatalf("%s: got %v, want the refusal %q", host, err, tc.want)
				}
			}
		})
	}

	// verify-full without the CA certificate: the client refuses the
	// proxy's certificate, and the proxy can tell why.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgconn.Connect(ctx, "postgres://u@"+addr+"/d?sslmode=verify-full&sslrootcert="+uriPathEscape(writeOtherCA(t)))
	var ue x509.UnknownAuthorityError
	if !errors.As(err, &ue) {
		t.Fatalf("verify-full with another CA: %v", err)
	}
	select {
	case err := <-errs:
		var he *handshakeError
		if !errors.As(err, &he) || !he.clientRejectedCert() {
			t.Fatalf("the proxy's side of the rejected handshake: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy saw no failed handshake")
	}
}

// TestNegotiateGSSThenTLS: libpq with gssencmode=prefer asks for GSS
// encryption first (N), then for TLS (S) on the same connection; the
// startup message then comes inside TLS.
func TestNegotiateGSSThenTLS(t *testing.T) {
	lt, err := newLocalTLS("postgres", time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	type result struct {
		conn net.Conn
		head []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, head, err := negotiate(server, "postgres", lt.config)
		done <- result{conn, head, err}
	}()
	answer := func(code uint32) byte {
		t.Helper()
		req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), code)
		if _, err := client.Write(req); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(client, b); err != nil {
			t.Fatal(err)
		}
		return b[0]
	}
	if a := answer(pgGSSENCRequestCode); a != 'N' {
		t.Fatalf("GSSENCRequest answered %q", a)
	}
	if a := answer(pgSSLRequestCode); a != 'S' {
		t.Fatalf("SSLRequest answered %q", a)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(lt.caPEM)
	tc := tls.Client(client, &tls.Config{ServerName: "localhost", RootCAs: roots})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if _, ok := r.conn.(*tls.Conn); !ok || r.err != nil || len(r.head) != 0 {
		t.Fatalf("negotiate: %T %x %v", r.conn, r.head, r.err)
	}
	// Without TLS (a unix socket), an SSLRequest gets N and the startup
	// message is passed on whole.
	client2, server2 := net.Pipe()
	defer client2.Close()
	go func() {
		conn, head, err := negotiate(server2, "postgres", nil)
		done <- result{conn, head, err}
	}()
	client = client2
	if a := answer(pgSSLRequestCode); a != 'N' {
		t.Fatalf("SSLRequest without TLS answered %q", a)
	}
	startup := []byte{0, 0, 0, 9, 0, 3, 0, 0, 0}
	go client2.Write(startup)
	r = <-done
	if r.err != nil || r.conn != server2 || string(r.head) != string(startup[:8]) {
		t.Fatalf("negotiate without TLS: %v %x", r.err, r.head)
	}
}

// writeOtherCA writes the CA certificate of another session.
func writeOtherCA(t *testing.T) string {
	t.Helper()
	other, err := newLocalTLS("postgres", time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, other.caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLocalTLSWithMongoClients(t *testing.T) {
	addr, caFile, _ := negotiatingListener(t, "mongodb")
	for _, tc := range []struct{ name, params, want string }{
		{"plain", "", "airlock: plain"},
		{"tls", "&tls=true&tlsCAFile=" + uriPathEscape(caFile), "airlock: tls alpn="},
		{"tls insecure", "&tls=true&tlsInsecure=true", "airlock: tls alpn="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			client, err := mongo.Connect(mongoopts.Client().ApplyURI("mongodb://" + addr + "/?directConnection=true" + tc.params).
				SetServerSelectionTimeout(2 * time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Disconnect(context.Background())
			err = client.Ping(ctx, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ping: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLocalTLSCertificate(t *testing.T) {
	now := time.Now()
	lt, err := newLocalTLS("postgres", now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(lt.caPEM), "PRIVATE KEY") {
		t.Fatal("the CA file holds a key")
	}
	block, _ := pem.Decode(lt.caPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	leaf := lt.config.Certificates[0].Leaf
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: roots}); err == nil {
		t.Error("the certificate is valid for example.com")
	}
	if !leaf.NotAfter.Equal(now.Add(time.Hour).Truncate(time.Second)) || leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("leaf: not after %s, key %s", leaf.NotAfter, leaf.PublicKeyAlgorithm)
	}
}

func TestLooksLikeClientHello(t *testing.T) {
	// A real ClientHello, as a Go client sends it.
	c, s := net.Pipe()
	go func() {
		_ = tls.Client(c, &tls.Config{ServerName: "localhost"}).Handshake()
	}()
	hello := make([]byte, 16)
	if _, err := s.Read(hello); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	if !looksLikeClientHello(hello) {
		t.Errorf("a ClientHello %x is not recognized", hello)
	}
	// MongoDB headers: an OP_MSG of 790 bytes (0x0316) with request id
	// 0x0100 starts like a TLS record, but its op code tells it apart.
	msg := []byte{0x16, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xdd, 0x07, 0x00, 0x00}
	if looksLikeClientHello(msg) {
		t.Error("an OP_MSG header is taken for a ClientHello")
	}
	plain := []byte{0x2c, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xdd, 0x07, 0x00, 0x00}
	if looksLikeClientHello(plain) {
		t.Error("an ordinary OP_MSG header is taken for a ClientHello")
	}
}

func TestURIPathEscape(t *testing.T) {
	for in, want := range map[string]string{
		"/home/alice/.config/airlock/proxy-ca-5432.pem":                 "/home/alice/.config/airlock/proxy-ca-5432.pem",
		"/Users/a b/Library/Application Support/airlock/proxy-ca-1.pem": "/Users/a%20b/Library/Application%20Support/airlock/proxy-ca-1.pem",
		`C:\Users\a&b=c+d\proxy-ca-1.pem`:                               "C%3A%5CUsers%5Ca%26b%3Dc%2Bd%5Cproxy-ca-1.pem",
	} {
		if got := uriPathEscape(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
