package tunnel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/iotest"
	"time"
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

func TestReadBufferIsSmallWhileIdleAndLargeWhileStreaming(t *testing.T) {
	var rb ReadBuffer
	defer rb.Release()
	if n := len(rb.Next()); n != smallBuf {
		t.Fatalf("a new buffer holds %d bytes, want %d", n, smallBuf)
	}
	rb.Adapt(100) // a query
	if n := len(rb.Next()); n != smallBuf {
		t.Fatalf("after a short read the buffer holds %d bytes, want %d", n, smallBuf)
	}
	rb.Adapt(smallBuf) // the read filled it: a result is streaming
	if n := len(rb.Next()); n != largeBuf {
		t.Fatalf("after a full read the buffer holds %d bytes, want %d", n, largeBuf)
	}
	rb.Adapt(largeBuf - 1) // still streaming
	if n := len(rb.Next()); n != largeBuf {
		t.Fatalf("while streaming the buffer holds %d bytes, want %d", n, largeBuf)
	}
	rb.Adapt(10) // traffic paused
	if n := len(rb.Next()); n != smallBuf {
		t.Fatalf("after the stream paused the buffer holds %d bytes, want %d", n, smallBuf)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestCopyAdaptiveFromASocketCopiesEverything(t *testing.T) {
	a, b := tcpPair(t)
	data := make([]byte, 3<<20+17)
	rand.Read(data)
	go func() {
		// Bursts and pauses: small writes (the buffer is given back
		// between them) and large ones (it grows).
		for rest, i := data, 0; len(rest) > 0; i++ {
			n := min(len(rest), []int{5, 100000, 3000, 1}[i%4])
			if _, err := a.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		a.Close()
	}()
	var got bytes.Buffer
	if err := copyAdaptive(&got, b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("copied %d bytes, not the same as the %d sent", got.Len(), len(data))
	}
}

func TestReadOnceFromASocketEndsOnDeadlineAndClose(t *testing.T) {
	_, b := tcpPair(t)
	var rb ReadBuffer
	defer rb.Release()
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := rb.ReadOnce(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a deadline error", err)
	}
	b.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		b.Close()
	}()
	if _, err := rb.ReadOnce(b); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read of a connection closed meanwhile: %v, want net.ErrClosed", err)
	}
}
