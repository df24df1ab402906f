package postgres

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestPgConnConfigIgnoresEnvironment sets every PG* variable pgconn reads,
// and a ~/.pgpass, and checks that none reaches the connection settings.
func TestPgConnConfigIgnoresEnvironment(t *testing.T) {
	home := t.TempDir()
	passfile := filepath.Join(home, ".pgpass")
	if err := os.WriteFile(passfile, []byte("*:*:*:*:from-pgpass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(home, ".postgresql"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".postgresql", "root.crt"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"HOME":                 home,
		"PGHOST":               "evil.example",
		"PGPORT":               "6543",
		"PGDATABASE":           "evil_db",
		"PGUSER":               "evil_user",
		"PGPASSWORD":           "from-environment",
		"PGPASSFILE":           passfile,
		"PGAPPNAME":            "evil-app",
		"PGCONNECT_TIMEOUT":    "1",
		"PGSSLMODE":            "prefer",
		"PGSSLKEY":             "/nonexistent/key",
		"PGSSLCERT":            "/nonexistent/cert",
		"PGSSLROOTCERT":        "/nonexistent/root.crt",
		"PGSSLNEGOTIATION":     "direct",
		"PGTARGETSESSIONATTRS": "read-only",
		"PGTZ":                 "Antarctica/Troll",
		"PGOPTIONS":            "-c search_path=evil",
		"PGMINPROTOCOLVERSION": "3.2",
		"PGMAXPROTOCOLVERSION": "3.2",
		"PGCHANNELBINDING":     "require",
		"PGREQUIREAUTH":        "none",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}

	for _, password := range []string{"", "the-real-password"} {
		cfg := Config{Host: "db.internal", Port: 5433, Database: "app", User: "app_user", Password: password}
		pc, err := cfg.PgConnConfig()
		if err != nil {
			t.Fatal(err)
		}
		if pc.Host != "db.internal" || pc.Port != 5433 || pc.Database != "app" || pc.User != "app_user" {
			t.Errorf("connects to %s:%d/%s as %s", pc.Host, pc.Port, pc.Database, pc.User)
		}
		if pc.Password != password {
			t.Errorf("password %q, want %q", pc.Password, password)
		}
		if pc.TLSConfig != nil || len(pc.Fallbacks) != 0 {
			t.Errorf("TLS %v, fallbacks %d: want neither", pc.TLSConfig, len(pc.Fallbacks))
		}
		if len(pc.RuntimeParams) != 0 {
			t.Errorf("runtime parameters %v, want none", pc.RuntimeParams)
		}
		if pc.ValidateConnect != nil || pc.AfterConnect != nil {
			t.Error("a connection validator is set (from PGTARGETSESSIONATTRS?)")
		}
		if pc.ConnectTimeout != DefaultConnectTimeout {
			t.Errorf("connect timeout %s", pc.ConnectTimeout)
		}
		if pc.SSLNegotiation != "postgres" || pc.MinProtocolVersion != "3.0" || pc.MaxProtocolVersion != "3.0" ||
			pc.ChannelBinding != "prefer" || pc.RequireAuth != "scram-sha-256" {
			t.Errorf("sslnegotiation %q, protocol %s-%s, channel binding %q, require_auth %q",
				pc.SSLNegotiation, pc.MinProtocolVersion, pc.MaxProtocolVersion, pc.ChannelBinding, pc.RequireAuth)
		}
	}
}

func TestPgConnConfigTLS(t *testing.T) {
	ca := testenv.NewCA(t)
	tests := []struct {
		name       string
		host       string
		tls        tunnel.TLS
		wantTLS    bool
		wantVerify bool
		wantRoots  bool
		wantErr    string
	}{
		{name: "disabled", host: "db.internal", tls: tunnel.TLS{}},
		{name: "disabled, other settings ignored", host: "db.internal", tls: tunnel.TLS{RejectUnauthorized: true, CAPEM: "junk"}},
		{name: "required, not verified", host: "db.internal", tls: tunnel.TLS{Enabled: true}, wantTLS: true},
		{name: "verified against the system roots", host: "db.internal", tls: tunnel.TLS{Enabled: true, RejectUnauthorized: true}, wantTLS: true, wantVerify: true},
		{name: "verified against a CA", host: "10.0.0.5", tls: tunnel.TLS{Enabled: true, RejectUnauthorized: true, CAPEM: string(ca.CertPEM)}, wantTLS: true, wantVerify: true, wantRoots: true},
		{name: "invalid CA", host: "db.internal", tls: tunnel.TLS{Enabled: true, RejectUnauthorized: true, CAPEM: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, wantErr: "CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc, err := Config{Host: tt.host, User: "u", Password: "p", TLS: tt.tls}.PgConnConfig()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(pc.Fallbacks) != 0 {
				t.Errorf("%d fallbacks", len(pc.Fallbacks))
			}
			if pc.Port != DefaultPort {
				t.Errorf("port %d", pc.Port)
			}
			tc := pc.TLSConfig
			if (tc != nil) != tt.wantTLS {
				t.Fatalf("TLS config %v, want TLS %v", tc, tt.wantTLS)
			}
			if tc == nil {
				return
			}
			if tc.InsecureSkipVerify == tt.wantVerify || tc.VerifyPeerCertificate != nil {
				t.Errorf("InsecureSkipVerify = %v, want %v", tc.InsecureSkipVerify, !tt.wantVerify)
			}
			if tc.ServerName != tt.host {
				t.Errorf("ServerName = %q, want %q", tc.ServerName, tt.host)
			}
			if (tc.RootCAs != nil) != tt.wantRoots {
				t.Errorf("RootCAs set = %v, want %v", tc.RootCAs != nil, tt.wantRoots)
			}
		})
	}
}

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"valid", Config{Host: "db", User: "u"}, ""},
		{"quotes and spaces in names", Config{Host: "db", User: `it's a "user" \`, Database: `my db's`}, ""},
		{"no host", Config{User: "u"}, "host is empty"},
		{"socket directory", Config{Host: "/var/run/postgresql", User: "u"}, "not a host name"},
		{"several hosts", Config{Host: "a,b", User: "u"}, "not a host name"},
		{"port", Config{Host: "db", Port: 70000, User: "u"}, "port 70000"},
		{"no user", Config{Host: "db"}, "user is empty"},
		{"NUL", Config{Host: "db", User: "u", Password: "a\x00b"}, "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Check()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				// A valid Config also builds, quotes and all.
				pc, err := tt.cfg.PgConnConfig()
				if err != nil {
					t.Fatal(err)
				}
				if pc.User != tt.cfg.User || pc.Database != tt.cfg.Database {
					t.Errorf("user %q, database %q", pc.User, pc.Database)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Check() = %v, want %q", err, tt.wantErr)
			}
			if _, err := tt.cfg.PgConnConfig(); err == nil {
				t.Error("PgConnConfig accepted it")
			}
		})
	}
}

func TestConfigHidesPassword(t *testing.T) {
	const password = "hunter2-very-secret"
	cfg := Config{Host: "db", Port: 5432, Database: "app", User: "u", Password: password,
		TLS: tunnel.TLS{Enabled: true, RejectUnauthorized: true}, ConnectTimeout: time.Second}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "cfg", cfg)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "cfg", cfg)
	for _, s := range []string{
		fmt.Sprint(cfg), fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg), fmt.Sprintf("%v", &cfg), logged.String(),
	} {
		if strings.Contains(s, password) {
			t.Errorf("printed the password: %s", s)
		}
	}
	if got, want := cfg.String(), "postgres db:5432/app as u (tls verify-full)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestConfigFromTarget(t *testing.T) {
	target := tunnel.Target{Kind: tunnel.KindPostgres, Host: "h", Port: 1, Database: "d", Username: "u", Password: "p",
		TLS: tunnel.TLS{Enabled: true}, AuthMethods: []string{tunnel.AuthMD5}}
	want := Config{Host: "h", Port: 1, Database: "d", User: "u", Password: "p", TLS: tunnel.TLS{Enabled: true}, AuthMethods: []string{tunnel.AuthMD5}}
	if got := ConfigFromTarget(target); !reflect.DeepEqual(got, want) {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestEngineConfig(t *testing.T) {
	if _, err := NewEngine(WithStartupTimeout(-time.Second)); err == nil {
		t.Error("accepted a negative startup timeout")
	}
	if _, err := NewEngine(WithCancelTimeout(-time.Second)); err == nil {
		t.Error("accepted a negative cancel timeout")
	}
	var c EngineConfig
	if err := c.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.Logger == nil || c.Random == nil || c.StartupTimeout != DefaultStartupTimeout || c.CancelTimeout != DefaultCancelTimeout {
		t.Errorf("defaults: %+v", c)
	}
}
