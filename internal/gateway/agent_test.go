package gateway

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// newCA returns an organization CA backed by a real (SQLite) store, on
// the real clock.
func newCA(t *testing.T, orgID string) *pki.CA { return newCAAt(t, orgID, nil) }

func clientCert(t *testing.T, ca *pki.CA, sessionID string, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, csrPEM, err := pki.NewKeyAndCSR("test")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.SignSession(csr, sessionID, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
}

func newTestAgent(t *testing.T, ca *pki.CA) (*Agent, string) {
	t.Helper()
	key, csrPEM, _ := pki.NewKeyAndCSR("gw")
	csr, _ := pki.ParseCSR(csrPEM)
	certPEM, _, err := ca.SignGateway(csr, "gw1", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	id := &Identity{GatewayID: "gw1", Name: "gw1", cert: tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}, caPool: ca.Pool()}
	a, err := New(Config{Identity: id, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, pki.GatewayServerName("gw1")
}

// handshake runs serveData on one end of a pipe and a TLS client with cert
// on the other, and returns the client's handshake error.
func handshake(t *testing.T, a *Agent, serverName string, trust *pki.CA, cert tls.Certificate, h tunnel.Header) error {
	t.Helper()
	srv, cli := tcpPair(t)
	done := make(chan error, 1)
	go func() { done <- a.serveData(context.Background(), srv, h) }()
	tc := tls.Client(cli, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: trust.Pool(), ServerName: serverName, MinVersion: tls.VersionTLS13})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	err := tc.Handshake()
	if err == nil {
		// TLS 1.3: the server's verdict on the client certificate arrives
		// with the first read. Speak PostgreSQL: an SSLRequest is answered
		// with 'N' by the gateway's engine once the connection is accepted.
		if _, err = tc.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err == nil {
			b := make([]byte, 1)
			if _, err = tc.Read(b); err == nil && b[0] != 'N' {
				err = fmt.Errorf("answer %q to SSLRequest", b)
			}
		}
	}
	cli.Close()
	<-done
	return err
}

func TestGatewayRefusesWrongClientCertificates(t *testing.T) {
	ca := newCA(t, "org1")
	a, name := newTestAgent(t, ca)
	target := &tunnel.Target{Kind: tunnel.KindPostgres, Host: "127.0.0.1", Port: 1, Database: "x", Username: "u", Password: "p"}
	h := tunnel.Header{Type: tunnel.TypeData, SessionID: "s1", Target: target, ExpiresAt: time.Now().Add(time.Hour).Unix()}

	if err := handshake(t, a, name, ca, clientCert(t, ca, "s1", time.Now().Add(time.Hour)), h); err != nil {
		t.Fatalf("the right certificate was refused: %v", err)
	}
	other := newCA(t, "org2")
	cases := map[string]tls.Certificate{
		"another CA":      clientCert(t, other, "s1", time.Now().Add(time.Hour)),
		"another session": clientCert(t, ca, "s2", time.Now().Add(time.Hour)),
		"expired":         clientCert(t, ca, "s1", time.Now().Add(-30*time.Second)),
	}
	for name2, cert := range cases {
		if err := handshake(t, a, name, ca, cert, h); err == nil {
			t.Errorf("%s: accepted", name2)
		}
	}
	a.terminate(context.Background(), "s1", tunnel.EndTerminated, "")
	if err := a.serveData(context.Background(), nopConn{}, h); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("terminated session: %v", err)
	}
}

type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

// tcpPair returns two ends of a loopback TCP connection (buffered, unlike
// net.Pipe, so a refused handshake does not deadlock on its alert).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return <-accepted, cli
}
