package tunnel

import (
	"io"
	"sync"
)

const (
	smallBuf = 4 << 10
	largeBuf = 32 << 10
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
)

// copyAdaptive copies src to dst like io.Copy, but holds only a small buffer
// while src is idle: an idle proxied connection costs 4 KiB per direction,
// not 32. While reads keep filling the buffer (a large result streaming) it
// borrows a large pooled buffer, and gives it back when traffic pauses.
func copyAdaptive(dst io.Writer, src io.Reader) error {
	small := smallPool.Get().(*[]byte)
	defer smallPool.Put(small)
	var large *[]byte
	defer func() {
		if large != nil {
			largePool.Put(large)
		}
	}()
	for {
		buf := *small
		if large != nil {
			buf = *large
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		switch {
		case large == nil && n == len(buf):
			large = largePool.Get().(*[]byte)
		case large != nil && n < len(buf)/2:
			largePool.Put(large)
			large = nil
		}
	}
}
