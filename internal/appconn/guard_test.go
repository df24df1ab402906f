package appconn_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/appconn"
)

type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range f[host] {
		out = append(out, netip.MustParseAddr(a))
	}
	if len(out) == 0 {
		return nil, errors.New("no such host")
	}
	return out, nil
}

// TestGuardRefusesInternalAddresses: without the setting, every kind of
// internal address is refused, by address or by a name that resolves to
// one (any of its addresses), and the error names the setting. Nothing is
// dialed: Dialer returns no dial function.
func TestGuardRefusesInternalAddresses(t *testing.T) {
	g := &appconn.Guard{Resolver: fakeResolver{
		"db.loopback.test": {"127.0.0.1"},
		"db.mixed.test":    {"93.184.216.34", "10.1.2.3"},
		"db.public.test":   {"93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"},
	}}
	for _, host := range []string{
		"127.0.0.1", "127.8.9.10", "::1", "[::1]", "10.0.0.1", "10.255.255.254", "172.16.0.1", "192.168.1.1",
		"169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "240.0.0.1", "198.18.0.1",
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1", "2002:7f00:1::1",
		"fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::", "2001:db8::1",
		"db.loopback.test", "db.mixed.test",
	} {
		dial, err := g.Dialer(context.Background(), host, 5432)
		var re *appconn.RefusedError
		if dial != nil || !errors.As(err, &re) || !strings.Contains(err.Error(), appconn.AllowInternalEnv+"=true") {
			t.Errorf("%s: %v, want refused naming %s", host, err, appconn.AllowInternalEnv)
		}
	}
	for _, host := range []string{"93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "db.public.test"} {
		if _, err := g.Check(context.Background(), host, 5432); err != nil {
			t.Errorf("%s: %v, want allowed", host, err)
		}
	}
	// The system resolver: localhost is loopback.
	if _, err := (&appconn.Guard{}).Check(context.Background(), "localhost", 5432); err == nil {
		t.Error("localhost was allowed")
	}
}

// TestGuardAllowsInternalButNotTheStore: the setting lets internal
// addresses through, but never the server's own store.
func TestGuardAllowsInternalButNotTheStore(t *testing.T) {
	g := &appconn.Guard{AllowInternal: true, Forbidden: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:5999")},
		Resolver: fakeResolver{"store.test": {"127.0.0.1"}}}
	for _, host := range []string{"127.0.0.1", "::1", "10.0.0.1", "169.254.169.254"} {
		if _, err := g.Check(context.Background(), host, 5432); err != nil {
			t.Errorf("%s with the setting: %v", host, err)
		}
	}
	for _, host := range []string{"127.0.0.1", "::ffff:127.0.0.1", "store.test"} {
		if _, err := g.Check(context.Background(), host, 5999); err == nil || !strings.Contains(err.Error(), "own store") {
			t.Errorf("the store's address as %s: %v, want refused", host, err)
		}
	}
}

// TestStoreOnThisMachineIsRefusedAtEveryLocalAddress: a store on this
// machine, however its connection string names it (a URL, key=value,
// several hosts, a Unix socket), is refused at its port through any
// loopback address, 0.0.0.0 and the machine's own addresses, even with
// internal addresses allowed; other ports and hosts still pass.
func TestStoreOnThisMachineIsRefusedAtEveryLocalAddress(t *testing.T) {
	ctx := context.Background()
	own := ""
	if ifs, _ := net.InterfaceAddrs(); len(ifs) > 0 {
		for _, ia := range ifs {
			if p, err := netip.ParsePrefix(ia.String()); err == nil && !p.Addr().IsLoopback() && p.Addr().Is4() {
				own = p.Addr().String()
			}
		}
	}
	for _, dsn := range []string{
		"postgres://airlock:pw@127.0.0.1:5999/airlock",
		"host=localhost port=5999 user=airlock dbname=airlock",
		"postgres://airlock@db.invalid:5432,127.0.0.1:5999/airlock",
		"host=/var/run/postgresql port=5999 user=airlock",
	} {
		forbidden, err := appconn.StoreAddrs(ctx, dsn)
		if err != nil {
			t.Fatalf("%s: %v", dsn, err)
		}
		g := &appconn.Guard{AllowInternal: true, Forbidden: forbidden}
		hosts := []string{"127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "0.0.0.0", "localhost"}
		if own != "" {
			hosts = append(hosts, own)
		}
		for _, host := range hosts {
			if _, err := g.Check(ctx, host, 5999); err == nil || !strings.Contains(err.Error(), "own store") {
				t.Errorf("%s: the store as %s: %v, want refused", dsn, host, err)
			}
		}
		if _, err := g.Check(ctx, "127.0.0.1", 5998); err != nil {
			t.Errorf("%s: another port on this machine: %v", dsn, err)
		}
	}
	if addrs, err := appconn.StoreAddrs(ctx, ""); err != nil || addrs != nil {
		t.Errorf("an SQLite store forbids %v, %v", addrs, err)
	}
	if _, err := appconn.StoreAddrs(ctx, "postgres://a@host:notaport/db"); err == nil {
		t.Error("a malformed store address was accepted")
	}
}
