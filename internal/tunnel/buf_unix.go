//go:build unix

package tunnel

import (
	"io"
	"os"
	"syscall"
)

// readSocket reads from src if it is a socket, borrowing the small buffer
// only for the read that finds data: on EAGAIN it gives the buffer back and
// lets the poller wait for the socket, as net.Conn's Read does. handled is false
// when src is not a socket or the buffer is large (data is streaming).
func (b *ReadBuffer) readSocket(src io.Reader) (p []byte, handled bool, err error) {
	sc, isSocket := src.(syscall.Conn)
	if !isSocket || b.large != nil {
		return nil, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false, nil
	}
	var (
		n    int
		rerr error
	)
	err = rc.Read(func(fd uintptr) bool {
		buf := b.Next()
		for {
			n, rerr = syscall.Read(int(fd), buf)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			b.Release()
			return false
		}
		return true
	})
	switch {
	case err != nil:
		return nil, true, err // closed, or a deadline passed
	case rerr != nil:
		return nil, true, os.NewSyscallError("read", rerr)
	case n == 0:
		return nil, true, io.EOF
	}
	return b.Next()[:n], true, nil
}
