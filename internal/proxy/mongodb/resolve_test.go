package mongodb

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/dns"

	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestValidateUnresolvableHost: a host that does not resolve is
// unreachable, named as such, and not a malformed connection string: for
// mongodb+srv:// the driver looks the host up while it reads the URI (here
// from a resolver that answers "no such host" without any network).
func TestValidateUnresolvableHost(t *testing.T) {
	orig := *dns.DefaultResolver
	t.Cleanup(func() { *dns.DefaultResolver = orig })
	dns.DefaultResolver.LookupTXT = func(string) ([]string, error) { return nil, nil }
	dns.DefaultResolver.LookupSRV = func(service, proto, name string) (string, []*net.SRV, error) {
		return "", nil, &net.DNSError{Err: "no such host", Name: "_" + service + "._" + proto + "." + name, IsNotFound: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := Validate(ctx, Config{URI: "mongodb+srv://cluster0.example.invalid/", User: "u", Password: "secret-pw"})
	if r.OK || r.Code != tunnel.CodeUnreachable || !strings.Contains(r.Message, "cannot resolve host cluster0.example.invalid") ||
		strings.Contains(r.Message, "pars") || strings.Contains(r.Message, "invalid MongoDB resource") {
		t.Fatalf("SRV host that does not resolve: %+v", r)
	}

	// A plain host's lookup fails when it is dialed.
	f := describeConnectError(Config{URI: "mongodb://db.example.invalid:27017/"},
		fmt.Errorf("dial: %w", &net.DNSError{Err: "no such host", Name: "db.example.invalid", IsNotFound: true}))
	if f.code != tunnel.CodeUnreachable || f.message != "cannot resolve host db.example.invalid: no such host" {
		t.Fatalf("plain host: %+v", f)
	}
}
