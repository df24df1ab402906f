//go:build !unix

package tunnel

import "io"

// readSocket: outside Unix, sockets are read like any reader, into the
// buffer held while they idle.
func (b *ReadBuffer) readSocket(io.Reader) (p []byte, handled bool, err error) {
	return nil, false, nil
}
