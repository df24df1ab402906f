//go:build linux

package cli

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// tcpPeerCheckSupported says that the owner check works for TCP here.
const tcpPeerCheckSupported = true

// unixPeerCheckSupported says that the owner check works for unix sockets.
const unixPeerCheckSupported = true

// procNetTCP are the kernel's socket tables, IPv4 then IPv6 (a dual-stack
// client socket connected to 127.0.0.1 appears in tcp6 with a mapped
// address).
var procNetTCP = [...]string{"/proc/net/tcp", "/proc/net/tcp6"}

func tcpPeerUID(c *net.TCPConn) (uint32, error) {
	peer, ok1 := c.RemoteAddr().(*net.TCPAddr)
	self, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, errors.New("the connection has no TCP addresses")
	}
	for _, path := range procNetTCP {
		f, err := os.Open(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // no IPv6 in this kernel
			}
			return 0, fmt.Errorf("reading the socket table %s: %w", path, err)
		}
		uid, found, err := findSocketUID(f, peer.AddrPort(), self.AddrPort())
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("reading the socket table %s: %w", path, err)
		}
		if found {
			return uid, nil
		}
	}
	return 0, fmt.Errorf("the client's socket %s is not in the socket table (it closed, or it lives in another network namespace)", peer)
}

// findSocketUID scans a /proc/net/tcp or tcp6 table for the socket whose
// local address is local and whose remote address is remote, and returns
// its uid column. Addresses are compared with IPv4-mapped IPv6 unmapped.
func findSocketUID(r io.Reader, local, remote netip.AddrPort) (uint32, bool, error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), 64<<10)
	first := true
	for sc.Scan() {
		if first { // the header line
			first = false
			continue
		}
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		l, err := parseProcAddr(f[1])
		if err != nil {
			return 0, false, err
		}
		if l != local {
			continue
		}
		rem, err := parseProcAddr(f[2])
		if err != nil {
			return 0, false, err
		}
		if rem != remote {
			continue
		}
		uid, err := strconv.ParseUint(f[7], 10, 32)
		if err != nil {
			return 0, false, fmt.Errorf("uid column %q: %w", f[7], err)
		}
		return uint32(uid), true, nil
	}
	return 0, false, sc.Err()
}

// parseProcAddr parses "0100007F:1F90" (IPv4) or 32 hex digits then a port
// (IPv6). The kernel prints each 32-bit word of the address as the host
// reads it from memory, so each word goes back to memory in host order.
func parseProcAddr(s string) (netip.AddrPort, error) {
	host, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("socket address %q has no port", s)
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("socket address %q: port: %w", s, err)
	}
	raw, err := hex.DecodeString(host)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("socket address %q is not an IPv4 or IPv6 address", s)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

func unixPeerUID(c *net.UnixConn) (uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}
