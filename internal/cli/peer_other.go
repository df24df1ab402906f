//go:build !linux && !darwin

package cli

import (
	"errors"
	"net"
)

// tcpPeerCheckSupported is false: on this platform the proxy cannot tell
// which OS user opened a connection, so it listens only with
// --allow-other-local-users.
const tcpPeerCheckSupported = false

// unixPeerCheckSupported is false for the same reason.
const unixPeerCheckSupported = false

func tcpPeerUID(*net.TCPConn) (uint32, error) {
	return 0, errors.New("this platform cannot tell which OS user opened a local TCP connection")
}

func unixPeerUID(*net.UnixConn) (uint32, error) {
	return 0, errors.New("this platform cannot tell which OS user opened a unix socket connection")
}
