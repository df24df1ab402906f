package mongodb

import (
	"fmt"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/tunnel"
)

func TestConfigFromTarget(t *testing.T) {
	cfg := ConfigFromTarget(tunnel.Target{Kind: tunnel.KindMongoDB, URI: "mongodb+srv://cluster.example.net/", Database: "users",
		Username: "app", Password: "hunter2-secret", TLS: tunnel.TLS{Enabled: true, RejectUnauthorized: true}})
	if cfg.URI != "mongodb+srv://cluster.example.net/" || cfg.AuthDatabase != "users" || cfg.User != "app" || cfg.Password != "hunter2-secret" || !cfg.TLS.Enabled {
		t.Fatalf("%+v", cfg)
	}
	for _, s := range []string{cfg.String(), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", cfg)} {
		if strings.Contains(s, cfg.Password) {
			t.Errorf("printed config holds the password: %s", s)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	good := Config{URI: "mongodb://a:27017,b:27017/?replicaSet=rs0", User: "u", Password: "p"}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := good.clientOptions(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]Config{
		"scheme":       {URI: "postgres://h/", User: "u"},
		"credentials":  {URI: "mongodb://u:p@h/", User: "u"},
		"tls option":   {URI: "mongodb://h/?tlsInsecure=true", User: "u"},
		"ssl option":   {URI: "mongodb://h/?ssl=false", User: "u"},
		"authSource":   {URI: "mongodb://h/?authSource=x", User: "u"},
		"compressors":  {URI: "mongodb://h/?compressors=zlib", User: "u"},
		"no host":      {URI: "mongodb:///", User: "u"},
		"no user":      {URI: "mongodb://h/"},
		"bad auth db":  {URI: "mongodb://h/", User: "u", AuthDatabase: "a.b"},
		"bad CA":       {URI: "mongodb://h/", User: "u", TLS: tunnel.TLS{Enabled: true, RejectUnauthorized: true, CAPEM: "junk"}},
		"NUL password": {URI: "mongodb://h/", User: "u", Password: "a\x00b"},
	}
	for name, c := range cases {
		if err := c.Check(); err == nil {
			t.Errorf("%s: Check accepted %v", name, c)
		}
	}
}

func TestClientOptionsTLS(t *testing.T) {
	c := Config{URI: "mongodb://h/", User: "u", Password: "p"}
	o, err := c.clientOptions()
	if err != nil || o.TLSConfig != nil {
		t.Fatalf("TLS off: %v %v", err, o.TLSConfig)
	}
	c.TLS = tunnel.TLS{Enabled: true}
	if o, err = c.clientOptions(); err != nil || o.TLSConfig == nil || !o.TLSConfig.InsecureSkipVerify {
		t.Fatalf("TLS without verification: %v", err)
	}
	c.TLS.RejectUnauthorized = true
	if o, err = c.clientOptions(); err != nil || o.TLSConfig == nil || o.TLSConfig.InsecureSkipVerify {
		t.Fatalf("TLS with verification: %v", err)
	}
	if o.Auth == nil || o.Auth.AuthSource != DefaultAuthDatabase || o.Auth.Username != "u" {
		t.Fatalf("auth: %+v", o.Auth)
	}
	if len(o.Compressors) != 0 {
		t.Fatalf("compressors: %v", o.Compressors)
	}
}
