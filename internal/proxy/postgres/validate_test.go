package postgres

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

func TestValidate(t *testing.T) {
	db := testenv.SharedPostgres(t)
	pg := db.Cluster
	freePort, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	noSSL := startNoSSLServer(t)

	const wrongPassword = "wrong-password-5f2b9c7e1d"
	with := func(cfg Config, change func(*Config)) Config {
		change(&cfg)
		return cfg
	}
	scram := accountConfig(db, pg.SCRAMUser, tunnel.TLS{})
	tests := []struct {
		name     string
		cfg      Config
		wantCode string // empty: success
		contains []string
	}{
		{name: "scram", cfg: scram},
		{name: "md5", cfg: accountConfig(db, pg.MD5User, tunnel.TLS{})},
		{name: "TLS-only role, verified TLS", cfg: accountConfig(db, pg.TLSUser, verifiedTLS(db))},
		{name: "TLS-only role, unverified TLS", cfg: accountConfig(db, pg.TLSUser, tunnel.TLS{Enabled: true})},
		{name: "host name in the certificate", cfg: with(accountConfig(db, pg.TLSUser, verifiedTLS(db)), func(c *Config) { c.Host = "localhost" })},
		{
			name: "wrong password", cfg: with(scram, func(c *Config) { c.Password = wrongPassword }),
			wantCode: tunnel.CodeAuthFailed,
			contains: []string{"PostgreSQL refused the login for user scram_user: wrong username or password"},
		},
		{
			name: "wrong user", cfg: with(scram, func(c *Config) { c.User = "nobody" }),
			wantCode: tunnel.CodeAuthFailed,
			contains: []string{"user nobody: wrong username or password"},
		},
		{
			name: "unreachable port", cfg: with(scram, func(c *Config) { c.Port = freePort }),
			wantCode: tunnel.CodeUnreachable,
			contains: []string{"127.0.0.1:" + strconv.Itoa(freePort), "connection refused"},
		},
		{
			name: "unknown host", cfg: with(scram, func(c *Config) { c.Host = "no-such-host.invalid" }),
			wantCode: tunnel.CodeUnreachable,
			contains: []string{"no-such-host.invalid"},
		},
		{
			name:     "wrong CA",
			cfg:      accountConfig(db, pg.TLSUser, tunnel.TLS{Enabled: true, RejectUnauthorized: true, CAPEM: string(testenv.NewCA(t).CertPEM)}),
			wantCode: tunnel.CodeTLS,
			contains: []string{"certificate signed by unknown authority"},
		},
		{
			name: "TLS-only role without TLS", cfg: accountConfig(db, pg.TLSUser, tunnel.TLS{}),
			wantCode: tunnel.CodeTLS,
			contains: []string{"only over TLS"},
		},
		{
			name: "server without TLS", cfg: with(scram, func(c *Config) { c.Port = noSSL; c.TLS = tunnel.TLS{Enabled: true} }),
			wantCode: tunnel.CodeTLS,
			contains: []string{"does not support TLS"},
		},
		{
			name: "missing database", cfg: with(scram, func(c *Config) { c.Database = "no_such_db" }),
			wantCode: tunnel.CodeNoDatabase,
			contains: []string{`database "no_such_db" does not exist`},
		},
		{
			name: "invalid CA", cfg: accountConfig(db, pg.TLSUser, tunnel.TLS{Enabled: true, RejectUnauthorized: true, CAPEM: "not a certificate"}),
			wantCode: tunnel.CodeInvalid,
			contains: []string{"CA certificate"},
		},
		{
			name: "no host", cfg: with(scram, func(c *Config) { c.Host = "" }),
			wantCode: tunnel.CodeInvalid,
			contains: []string{"host is empty"},
		},
		{
			name: "timeout", cfg: with(scram, func(c *Config) { c.Port = startSilentServer(t); c.ConnectTimeout = 300 * time.Millisecond }),
			wantCode: tunnel.CodeUnreachable,
			contains: []string{"no answer within 300ms"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := Validate(testContext(t), tt.cfg)
			t.Logf("%+v", res)
			if tt.wantCode == "" {
				if !res.OK || res.Code != "" || res.Message != "" {
					t.Errorf("Validate = %+v, want OK", res)
				}
				return
			}
			if res.OK || res.Code != tt.wantCode {
				t.Errorf("Validate = %+v, want code %s", res, tt.wantCode)
			}
			for _, s := range tt.contains {
				if !strings.Contains(res.Message, s) {
					t.Errorf("message %q does not contain %q", res.Message, s)
				}
			}
			for _, pw := range []string{tt.cfg.Password, pg.SCRAMUser.Password, pg.MD5User.Password, pg.TLSUser.Password} {
				if strings.Contains(res.Message, pw) {
					t.Errorf("message %q holds a password", res.Message)
				}
			}
		})
	}
}

// startNoSSLServer listens like a PostgreSQL server with ssl off: it answers
// an SSLRequest with 'N'. It returns the port.
func startNoSSLServer(t testing.TB) int {
	return startFakeServer(t, func(c net.Conn) {
		var req [8]byte
		if _, err := io.ReadFull(c, req[:]); err == nil {
			_, _ = c.Write([]byte{'N'})
		}
		_, _ = io.Copy(io.Discard, c)
	})
}

// startSilentServer accepts connections and never answers. It returns the
// port.
func startSilentServer(t testing.TB) int {
	return startFakeServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

func startFakeServer(t testing.TB, handle func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// TestClassify covers failures that are hard to cause with a real server.
func TestClassify(t *testing.T) {
	cfg := Config{Host: "db.example", Port: 5433, User: "app", Database: "main", Password: "s3cret-password"}
	hostErr := x509.HostnameError{Certificate: &x509.Certificate{DNSNames: []string{"other.example"}}, Host: "db.example"}
	tests := []struct {
		name     string
		err      error
		code     string
		sqlState string
		contains string
	}{
		{"host name mismatch", fmt.Errorf("tls error: %w", hostErr), tunnel.CodeTLS, "08006", "certificate is valid for other.example, not db.example"},
		{"expired certificate", x509.CertificateInvalidError{Reason: x509.Expired, Detail: "expired yesterday"}, tunnel.CodeTLS, "08006", "expired"},
		{"DNS", &net.DNSError{Err: "no such host", Name: "db.example", IsNotFound: true}, tunnel.CodeUnreachable, "08006", "cannot resolve the host name db.example"},
		{"deadline", fmt.Errorf("dial: %w", context.DeadlineExceeded), tunnel.CodeUnreachable, "08006", "no answer within 10s"},
		{"canceled", fmt.Errorf("dial: %w", context.Canceled), tunnel.CodeInternal, "08006", "canceled"},
		{"EOF", fmt.Errorf("receive message: %w", io.ErrUnexpectedEOF), tunnel.CodeUnreachable, "08006", "closed the connection"},
		{"too many connections", &pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}, tunnel.CodeUnreachable, "53300", "too many clients"},
		{"no CONNECT privilege", &pgconn.PgError{Code: "42501", Message: "permission denied for database main"}, tunnel.CodeAuthFailed, "42501", "may not connect"},
		{"other server error", &pgconn.PgError{Code: "XX000", Message: "boom"}, tunnel.CodeInternal, "XX000", "boom"},
		{"password echoed", errors.New("weird driver error with s3cret-password inside"), tunnel.CodeInternal, "08006", "withheld"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := describeConnectError(cfg, tt.err)
			if f.code != tt.code || f.sqlState != tt.sqlState || !strings.Contains(f.message, tt.contains) {
				t.Errorf("got %+v, want %s %s %q", f, tt.code, tt.sqlState, tt.contains)
			}
			if strings.Contains(f.message, cfg.Password) {
				t.Errorf("message %q holds the password", f.message)
			}
		})
	}
}
