package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func TestParseAllowTargets(t *testing.T) {
	good := []struct {
		in          string
		allow, deny []string // addr:port
	}{
		{"", []string{"10.1.2.3:5432", "192.168.0.9:27017", "8.8.8.8:5432", "[2001:db8::1]:5432"},
			[]string{"127.0.0.1:5432", "127.9.9.9:1", "[::1]:5432", "169.254.169.254:80", "169.254.1.1:5432", "[fd00:ec2::254]:80",
				"[fe80::1]:5432", "0.0.0.0:5432", "[::ffff:127.0.0.1]:5432", "[::ffff:169.254.169.254]:80"}},
		{"10.0.0.0/8", []string{"10.9.9.9:5432", "10.0.0.1:1"}, []string{"11.0.0.1:5432", "127.0.0.1:5432"}},
		{"10.0.0.0/8:5432, 192.168.1.7", []string{"10.1.1.1:5432", "192.168.1.7:27017"}, []string{"10.1.1.1:5433", "192.168.1.8:27017"}},
		{"[fd00::/8]:27017,127.0.0.1/32", []string{"[fd12::1]:27017", "127.0.0.1:5432"}, []string{"[fd12::1]:5432", "127.0.0.2:5432"}},
	}
	for _, tc := range good {
		p, err := ParseAllowTargets(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		for _, a := range tc.allow {
			ap := netip.MustParseAddrPort(a)
			if !p.Allows(ap.Addr(), ap.Port()) {
				t.Errorf("%q refuses %s", tc.in, a)
			}
		}
		for _, a := range tc.deny {
			ap := netip.MustParseAddrPort(a)
			if p.Allows(ap.Addr(), ap.Port()) {
				t.Errorf("%q allows %s", tc.in, a)
			}
		}
	}
	bad := map[string]string{
		"10.0.0.0/33":         "entry 1",
		"10.0.0.0/8,nonsense": `entry 2 ("nonsense")`,
		"10.0.0.0/8:99999":    "bad port",
		"10.0.0.0/8,,":        "entry 2",
		"[fd00::/8":           "missing ]",
		"db.example.com":      "entry 1",
	}
	for in, want := range bad {
		_, err := ParseAllowTargets(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--allow-targets") {
			t.Errorf("%q: err = %v; want one naming %q", in, err, want)
		}
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

// The policy is checked on the address dialed, after resolution: a name
// that resolves to the gateway's loopback (DNS rebinding) is refused like
// the address itself, and nothing connects.
func TestTargetDialerChecksResolvedAddresses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	res := fakeResolver{
		"rebind.example": {netip.MustParseAddr("127.0.0.1")},
		"meta.example":   {netip.MustParseAddr("169.254.169.254")},
	}
	def := DefaultTargetPolicy().DialFunc(res, nil)
	for _, addr := range []string{ln.Addr().String(), net.JoinHostPort("rebind.example", itoa(port)), "meta.example:80", "[::1]:" + itoa(port)} {
		c, err := def(context.Background(), "tcp", addr)
		if err == nil {
			c.Close()
			t.Fatalf("the default policy dialed %s", addr)
		}
		if !errors.Is(err, ErrTargetNotAllowed) || !strings.Contains(err.Error(), "cannot reach: the gateway's --allow-targets does not include") {
			t.Fatalf("dialing %s: %v", addr, err)
		}
	}
	select {
	case <-accepted:
		t.Fatal("a refused dial reached the listener")
	default:
	}
	p, err := ParseAllowTargets("127.0.0.1/32:" + itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.DialFunc(res, nil)(context.Background(), "tcp", net.JoinHostPort("rebind.example", itoa(port)))
	if err != nil {
		t.Fatalf("an allowed target: %v", err)
	}
	c.Close()
}

func itoa(n int) string { return strconv.Itoa(n) }
