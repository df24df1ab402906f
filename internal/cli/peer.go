package cli

import (
	"fmt"
	"net"
	osuser "os/user"
	"strconv"
)

// peerUID returns the OS user id of the process at the other end of an
// accepted local connection: SO_PEERCRED (Linux) or LOCAL_PEERCRED (macOS)
// for a unix socket; for TCP on Linux, the uid column of the client's row in
// /proc/net/tcp or /proc/net/tcp6 (the row whose local address is the
// peer's address and whose remote address is the listener's). It fails
// where the lookup cannot be done (TCP outside Linux).
func peerUID(conn net.Conn) (uint32, error) {
	switch c := conn.(type) {
	case *net.UnixConn:
		return unixPeerUID(c)
	case *net.TCPConn:
		return tcpPeerUID(c)
	}
	return 0, fmt.Errorf("cannot tell who opened a %T connection", conn)
}

// userLabel names an OS user for messages: "alice (uid 1000)", or
// "uid 1000" when the name is unknown.
func userLabel(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := osuser.LookupId(id); err == nil && u.Username != "" {
		return u.Username + " (uid " + id + ")"
	}
	return "uid " + id
}
