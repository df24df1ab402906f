package tunnel

import (
	"io"
	"os"
	"sync"
	"syscall"
)

const (
	smallBuf = 2 << 10
	largeBuf = 32 << 10
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
)

// ReadBuffer is the read buffer of one direction of a long-lived proxied
// connection. It is small while the connection idles (an idle connection
// costs 2 KiB per direction, not 32), and while reads keep filling it (a
// large result streaming) it borrows a large pooled buffer, which it gives
// back when traffic pauses. The zero value is ready; Release returns its
// memory to the pools.
type ReadBuffer struct {
	small, large *[]byte
}

// Next returns the buffer to read into next.
func (b *ReadBuffer) Next() []byte {
	if b.large != nil {
		return *b.large
	}
	if b.small == nil {
		b.small = smallPool.Get().(*[]byte)
	}
	return *b.small
}

// Adapt sizes the buffer after a read of n bytes into Next's buffer.
func (b *ReadBuffer) Adapt(n int) {
	switch {
	case b.large == nil && b.small != nil && n == len(*b.small):
		b.large = largePool.Get().(*[]byte)
	case b.large != nil && n < len(*b.large)/2:
		largePool.Put(b.large)
		b.large = nil
	}
}

// ReadOnce reads once from src into the buffer and returns the bytes read,
// valid until the next call of Adapt, ReadOnce or Release; call Adapt with
// their length once they are used. When src is a socket (TCP or Unix, not
// TLS) the buffer is taken only when data has arrived and given back while
// src has none, so an idle connection holds no buffer for that direction;
// it costs no system call more than a plain Read.
func (b *ReadBuffer) ReadOnce(src io.Reader) ([]byte, error) {
	if sc, ok := src.(syscall.Conn); ok && b.large == nil {
		if rc, err := sc.SyscallConn(); err == nil {
			return b.readRaw(rc)
		}
	}
	buf := b.Next()
	n, err := src.Read(buf)
	return buf[:n], err
}

// readRaw reads from a socket, borrowing the small buffer only for the read
// that finds data: on EAGAIN it gives the buffer back and lets the poller
// wait for the socket, as net.Conn's Read does.
func (b *ReadBuffer) readRaw(rc syscall.RawConn) ([]byte, error) {
	var (
		n    int
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
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
		return nil, err // closed, or a deadline passed
	case rerr != nil:
		return nil, os.NewSyscallError("read", rerr)
	case n == 0:
		return nil, io.EOF
	}
	return b.Next()[:n], nil
}

// Release gives the buffers back to the pools. The ReadBuffer may be used
// again afterwards.
func (b *ReadBuffer) Release() {
	if b.large != nil {
		largePool.Put(b.large)
		b.large = nil
	}
	if b.small != nil {
		smallPool.Put(b.small)
		b.small = nil
	}
}

// copyAdaptive copies src to dst like io.Copy through a ReadBuffer.
func copyAdaptive(dst io.Writer, src io.Reader) error {
	var rb ReadBuffer
	defer rb.Release()
	for {
		p, err := rb.ReadOnce(src)
		if len(p) > 0 {
			if _, werr := dst.Write(p); werr != nil {
				return werr
			}
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		rb.Adapt(len(p))
	}
}
