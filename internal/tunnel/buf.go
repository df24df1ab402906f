package tunnel

import (
	"io"
	"sync"
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
// their length once they are used. On Unix, when src is a socket (TCP or
// Unix, not TLS) the buffer is taken only when data has arrived and given
// back while src has none, so an idle connection holds no buffer for that
// direction; it costs no system call more than a plain Read.
func (b *ReadBuffer) ReadOnce(src io.Reader) ([]byte, error) {
	if p, handled, err := b.readSocket(src); handled {
		return p, err
	}
	buf := b.Next()
	n, err := src.Read(buf)
	return buf[:n], err
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
