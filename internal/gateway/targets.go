package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// DefaultAllowTargets describes the policy a gateway applies when
// --allow-targets is not given: every address, private or public, except the
// gateway's own loopback (127.0.0.0/8, ::1), the unspecified addresses,
// link-local ranges (169.254.0.0/16, fe80::/10), which hold the cloud
// metadata services (169.254.169.254, AWS's fd00:ec2::254 and the like, also
// refused by name), and IPv4-mapped forms of all of them.
const DefaultAllowTargets = "any address except loopback (127.0.0.0/8, ::1), unspecified (0.0.0.0, ::), link-local (169.254.0.0/16, fe80::/10) and cloud metadata (169.254.169.254, fd00:ec2::254)"

// defaultDenied are the prefixes the default policy refuses.
var defaultDenied = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS IMDS over IPv6
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
}

// targetRule allows one prefix, on every port (port 0) or one.
type targetRule struct {
	prefix netip.Prefix
	port   uint16
}

// TargetPolicy says which addresses a gateway may dial. The zero value (and
// a nil *TargetPolicy) allows everything: the dev server's built-in gateway
// uses it; `airlock gateway` always sets one.
type TargetPolicy struct {
	rules  []targetRule // allowed; nil with def means "the default"
	def    bool         // the default policy
	source string       // as given, for messages
}

// DefaultTargetPolicy returns the policy of DefaultAllowTargets.
func DefaultTargetPolicy() *TargetPolicy {
	return &TargetPolicy{def: true, source: "default"}
}

// ParseAllowTargets parses a --allow-targets value: a comma-separated list
// of CIDR[:port] entries (an address alone means that one address; an IPv6
// prefix with a port is written [2001:db8::/32]:5432). An empty value gives
// the default policy. The list replaces the default entirely, so a list that
// includes 127.0.0.1/32 allows the gateway's loopback. An entry that does not
// parse is an error naming it and its position.
func ParseAllowTargets(s string) (*TargetPolicy, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultTargetPolicy(), nil
	}
	p := &TargetPolicy{source: s}
	for i, raw := range strings.Split(s, ",") {
		entry := strings.TrimSpace(raw)
		r, err := parseTargetRule(entry)
		if err != nil {
			return nil, fmt.Errorf("--allow-targets: entry %d (%q) is not CIDR[:port] (such as 10.0.0.0/8, 10.1.2.3/32:5432 or [fd00::/8]:27017): %w", i+1, entry, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func parseTargetRule(entry string) (targetRule, error) {
	if entry == "" {
		return targetRule{}, errors.New("empty entry")
	}
	addr, portStr := entry, ""
	switch {
	case strings.HasPrefix(entry, "["):
		end := strings.Index(entry, "]")
		if end < 0 {
			return targetRule{}, errors.New("missing ]")
		}
		addr = entry[1:end]
		rest := entry[end+1:]
		if rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return targetRule{}, errors.New("unexpected text after ]")
			}
			portStr = p
		}
	case strings.Count(entry, ":") == 1:
		addr, portStr, _ = strings.Cut(entry, ":")
	}
	var r targetRule
	if portStr != "" {
		n, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || n == 0 {
			return targetRule{}, fmt.Errorf("bad port %q", portStr)
		}
		r.port = uint16(n)
	}
	if strings.Contains(addr, "/") {
		pfx, err := netip.ParsePrefix(addr)
		if err != nil {
			return targetRule{}, err
		}
		r.prefix = pfx.Masked()
	} else {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return targetRule{}, err
		}
		r.prefix = netip.PrefixFrom(a, a.BitLen())
	}
	return r, nil
}

// String returns the policy as given ("default" for the default).
func (p *TargetPolicy) String() string {
	if p == nil {
		return "any address"
	}
	if p.def {
		return DefaultAllowTargets
	}
	return p.source
}

// Allows reports whether the policy lets the gateway dial ip:port.
func (p *TargetPolicy) Allows(ip netip.Addr, port uint16) bool {
	if p == nil || (!p.def && p.rules == nil) {
		return true
	}
	ip = ip.WithZone("")
	if p.def {
		for _, d := range defaultDenied {
			if d.Contains(ip) || d.Contains(ip.Unmap()) {
				return false
			}
		}
		return true
	}
	for _, r := range p.rules {
		if (r.prefix.Contains(ip) || r.prefix.Contains(ip.Unmap())) && (r.port == 0 || r.port == port) {
			return true
		}
	}
	return false
}

// ErrTargetNotAllowed is wrapped by the errors of a dial the policy refuses.
var ErrTargetNotAllowed = errors.New("target not allowed by --allow-targets")

// Resolver looks host names up; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DialFunc returns the dialer the engines use: it resolves the host, checks
// every address it will try against the policy (so a name that resolves to a
// refused address, as in DNS rebinding, is refused too), and connects to the
// first allowed address that answers, by IP, so that what was checked is
// what is dialed. A nil resolver or dialer uses net's defaults.
func (p *TargetPolicy) DialFunc(res Resolver, d *net.Dialer) common.DialFunc {
	if res == nil {
		res = net.DefaultResolver
	}
	if d == nil {
		d = &net.Dialer{}
	}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		host, portStr, err := net.SplitHostPort(address)
		if err != nil {
			return nil, fmt.Errorf("cannot reach %s: %w", address, err)
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			// A service name: resolve it as net does.
			n, lerr := net.DefaultResolver.LookupPort(ctx, network, portStr)
			if lerr != nil {
				return nil, fmt.Errorf("cannot reach %s: %w", address, lerr)
			}
			port = uint64(n)
		}
		var ips []netip.Addr
		if ip, perr := netip.ParseAddr(host); perr == nil {
			ips = []netip.Addr{ip}
		} else {
			lookup := "ip"
			switch network {
			case "tcp4":
				lookup = "ip4"
			case "tcp6":
				lookup = "ip6"
			}
			if ips, err = res.LookupNetIP(ctx, lookup, host); err != nil {
				return nil, fmt.Errorf("cannot reach %s: %w", address, err)
			}
		}
		var firstErr error
		for _, ip := range ips {
			target := netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
			if !p.Allows(ip, uint16(port)) {
				if firstErr == nil {
					firstErr = fmt.Errorf("cannot reach: the gateway's --allow-targets does not include %s: %w", target, ErrTargetNotAllowed)
				}
				continue
			}
			c, err := d.DialContext(ctx, network, target)
			if err == nil {
				return c, nil
			}
			if firstErr == nil || errors.Is(firstErr, ErrTargetNotAllowed) {
				firstErr = err
			}
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("cannot reach %s: no address", address)
		}
		return nil, firstErr
	}
}

// targetDialer is the dialer the gateway gives its engines: the policy's, or
// a plain one when there is no policy.
func targetDialer(p *TargetPolicy) common.DialFunc {
	if p == nil {
		d := &net.Dialer{}
		return d.DialContext
	}
	return p.DialFunc(nil, nil)
}

// checkTarget refuses, before an engine is involved, a target whose
// addresses the policy refuses, so that a validation gets the policy's
// words rather than an engine's. The engines' dialer checks again at dial
// time, on the addresses it actually dials (a name that resolves
// differently later gains nothing).
func (a *Agent) checkTarget(ctx context.Context, t tunnel.Target) error {
	p := a.cfg.Targets
	if p == nil {
		return nil
	}
	var hosts []string
	switch t.Kind {
	case tunnel.KindMongoDB:
		u, err := url.Parse(t.URI)
		if err != nil || u.Scheme != "mongodb" {
			return nil // mongodb+srv: checked by the dialer on each host it finds
		}
		for _, h := range strings.Split(u.Host, ",") {
			if _, _, err := net.SplitHostPort(h); err != nil {
				h = net.JoinHostPort(strings.Trim(h, "[]"), "27017")
			}
			hosts = append(hosts, h)
		}
	default:
		hosts = []string{net.JoinHostPort(t.Host, strconv.Itoa(t.Port))}
	}
	for _, hp := range hosts {
		host, portStr, err := net.SplitHostPort(hp)
		if err != nil {
			continue
		}
		port, _ := strconv.ParseUint(portStr, 10, 16)
		var ips []netip.Addr
		if ip, err := netip.ParseAddr(host); err == nil {
			ips = []netip.Addr{ip}
		} else {
			ips, _ = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
		for _, ip := range ips {
			if !p.Allows(ip, uint16(port)) {
				return fmt.Errorf("cannot reach: the gateway's --allow-targets does not include %s: %w",
					netip.AddrPortFrom(ip.Unmap(), uint16(port)), ErrTargetNotAllowed)
			}
		}
	}
	return nil
}
