package tunnel

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
	"testing/iotest"
)

// chunkReader returns its data in reads of the given sizes, in turn.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.sizes[r.i%len(r.sizes)], len(r.data))
	r.i++
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestCopyAdaptiveCopiesEverything(t *testing.T) {
	data := make([]byte, 1<<20+123)
	rand.Read(data)
	for name, src := range map[string]io.Reader{
		"bulk":        bytes.NewReader(data),
		"one byte":    iotest.OneByteReader(bytes.NewReader(data)),
		"bursts":      &chunkReader{data: data, sizes: []int{largeBuf, largeBuf, 10, smallBuf, 7}},
		"data at EOF": iotest.DataErrReader(bytes.NewReader(data)),
	} {
		var dst bytes.Buffer
		if err := copyAdaptive(&dst, src); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(dst.Bytes(), data) {
			t.Fatalf("%s: copied %d bytes, not the same as the %d sent", name, dst.Len(), len(data))
		}
	}
	if err := copyAdaptive(io.Discard, iotest.ErrReader(io.ErrUnexpectedEOF)); err != io.ErrUnexpectedEOF {
		t.Fatalf("read error: %v", err)
	}
}

func BenchmarkCopyAdaptive(b *testing.B) {
	data := make([]byte, 8<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		copyAdaptive(io.Discard, bytes.NewReader(data))
	}
}
