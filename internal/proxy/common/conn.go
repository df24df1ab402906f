package common

import (
	"io"
	"net"
	"time"
)

// Bounds of Linger.
const (
	// LingerTimeout is how long LingerClose discards a client's late bytes.
	LingerTimeout = time.Second
	// LingerBytes is the most a client's late bytes Linger discards.
	LingerBytes = 64 << 10
)

// Linger makes the error just written to c reach its client although the
// client may still be sending: closing a TCP connection with unread input
// makes the kernel send a reset, which can destroy the error before the
// client reads it. Linger shuts c's sending side and discards what the
// client still sends, at most LingerBytes, for at most d; the caller closes
// c next. A client that keeps sending is cut off all the same.
func Linger(c net.Conn, d time.Duration) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, _ = io.CopyN(io.Discard, c, LingerBytes)
}

// LingerClose lingers on c for LingerTimeout (see Linger), then closes it.
func LingerClose(c net.Conn) {
	defer c.Close()
	Linger(c, LingerTimeout)
}

// RemoteAddr returns c's remote address, or "" if it has none.
func RemoteAddr(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
