//go:build darwin

package cli

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// tcpPeerCheckSupported is false: macOS offers no supported way to find the
// owner of the other end of a loopback TCP connection, so the proxy listens
// on TCP only with --allow-other-local-users; --unix-socket is checked.
const tcpPeerCheckSupported = false

// unixPeerCheckSupported says that the owner check works for unix sockets.
const unixPeerCheckSupported = true

func tcpPeerUID(*net.TCPConn) (uint32, error) {
	return 0, errors.New("this platform cannot tell which OS user opened a local TCP connection")
}

func unixPeerUID(c *net.UnixConn) (uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Xucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("LOCAL_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}
