package appconn

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// AllowInternalEnv is the setting that lets the server connect to internal
// addresses itself.
const AllowInternalEnv = "AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS"

// Resolver looks up a host name's addresses (net.DefaultResolver).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Guard decides where the server may connect by itself (an app connection
// without a gateway). Every address a host name resolves to is checked; the
// connection then goes to a checked address, so a second lookup cannot
// point it elsewhere.
type Guard struct {
	// AllowInternal lets the server reach loopback, private, link-local,
	// CGNAT, multicast and reserved addresses (AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS=true).
	AllowInternal bool
	// Forbidden are addresses refused always: the server's own store.
	Forbidden []netip.AddrPort
	// Resolver resolves host names; nil means net.DefaultResolver.
	Resolver Resolver
}

// blocked are the ranges that are not the public internet. An IPv4-mapped
// IPv6 address is checked as its IPv4 address; NAT64 and 6to4 addresses as
// the IPv4 address they carry.
var blocked = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/96", "::1/128", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

var (
	nat64   = netip.MustParsePrefix("64:ff9b::/96")
	sixToFo = netip.MustParsePrefix("2002::/16")
)

// Internal says whether a is not a public internet address, and why.
func Internal(a netip.Addr) (bool, string) {
	a = a.Unmap()
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return Internal(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixToFo.Contains(a):
			return Internal(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	switch {
	case a.IsLoopback():
		return true, "a loopback address"
	case a.IsPrivate():
		return true, "a private address"
	case a.IsLinkLocalUnicast():
		return true, "a link-local address"
	case a.IsMulticast():
		return true, "a multicast address"
	case a.IsUnspecified():
		return true, "an unspecified address"
	}
	for _, p := range blocked {
		if p.Contains(a) {
			if p.String() == "100.64.0.0/10" {
				return true, "a carrier-grade NAT address"
			}
			return true, "a reserved address"
		}
	}
	return false, ""
}

// RefusedError is a connection the guard refused; nothing was sent.
type RefusedError struct{ Msg string }

func (e *RefusedError) Error() string { return e.Msg }

// Check resolves host and checks every address it has, and returns them.
func (g *Guard) Check(ctx context.Context, host string, port int) ([]netip.Addr, error) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a.WithZone("")}
	} else {
		r := g.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		addrs, err = r.LookupNetIP(lctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("cannot resolve the host name %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("the host name %s has no address", host)
		}
	}
	for _, a := range addrs {
		for _, f := range g.Forbidden {
			fa, ua := f.Addr().Unmap(), a.Unmap()
			// Every loopback address (and 0.0.0.0, which reaches this
			// machine) is the store when one of them is.
			same := fa == ua || fa.IsLoopback() && (ua.IsLoopback() || ua.IsUnspecified())
			if same && int(f.Port()) == port {
				return nil, &RefusedError{Msg: fmt.Sprintf("%s is Airlock's own store: an app connection cannot point at it", net.JoinHostPort(host, strconv.Itoa(port)))}
			}
		}
		if g.AllowInternal {
			continue
		}
		if bad, why := Internal(a); bad {
			what := host
			if a.String() != host {
				what = host + " (" + a.String() + ")"
			}
			return nil, &RefusedError{Msg: fmt.Sprintf("%s is %s: the server does not connect to internal addresses by itself; "+
				"use a gateway, or set %s=true on the server to allow it", what, why, AllowInternalEnv)}
		}
	}
	return addrs, nil
}

// Dialer returns a dial function that connects to the checked addresses
// of host (whatever address it is asked for), and the addresses. TLS
// still verifies the certificate against host: that is the caller's
// tls.Config's ServerName.
func (g *Guard) Dialer(ctx context.Context, host string, port int) (func(ctx context.Context, network, addr string) (net.Conn, error), error) {
	addrs, err := g.Check(ctx, host, port)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		var last error
		for _, a := range addrs {
			c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}, nil
}

// StoreAddrs returns the addresses of the server's PostgreSQL store, for
// Guard.Forbidden, from its connection string (a URL or key=value, with
// several hosts, or a Unix socket); "" (an SQLite store) gives none. A store
// on this machine (a Unix socket, a loopback address or one of the
// machine's own addresses) is reachable through every one of them, so all
// of them are forbidden at its port.
func StoreAddrs(ctx context.Context, databaseURL string) ([]netip.AddrPort, error) {
	if databaseURL == "" {
		return nil, nil
	}
	cfg, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("reading the store's address: %w", err)
	}
	type hostPort struct {
		host string
		port uint16
	}
	hosts := []hostPort{{cfg.Host, cfg.Port}}
	for _, f := range cfg.Fallbacks {
		hosts = append(hosts, hostPort{f.Host, f.Port})
	}
	own := ownAddrs()
	var out []netip.AddrPort
	for _, h := range hosts {
		var addrs []netip.Addr
		switch a, err := netip.ParseAddr(h.host); {
		case strings.HasPrefix(h.host, "/"):
			addrs = []netip.Addr{netip.IPv6Loopback()} // a Unix socket: the store is here
		case err == nil:
			addrs = []netip.Addr{a.Unmap()}
		default:
			addrs, _ = net.DefaultResolver.LookupNetIP(ctx, "ip", h.host)
		}
		local := false
		for _, a := range addrs {
			a = a.Unmap()
			out = append(out, netip.AddrPortFrom(a, h.port))
			if a.IsLoopback() || a.IsUnspecified() || own[a] {
				local = true
			}
		}
		if local {
			out = append(out, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), h.port), netip.AddrPortFrom(netip.IPv6Loopback(), h.port))
			for a := range own {
				out = append(out, netip.AddrPortFrom(a, h.port))
			}
		}
	}
	return out, nil
}

// ownAddrs are the addresses of this machine's interfaces.
func ownAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	ifAddrs, _ := net.InterfaceAddrs()
	for _, ia := range ifAddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			out[p.Addr().Unmap().WithZone("")] = true
		}
	}
	return out
}
