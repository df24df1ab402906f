package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestFloorRelays checks that both floor relays carry bytes intact both
// ways, with more data in flight than the sockets buffer, so that the event
// loop has to wait for room to write and stop reading meanwhile.
func TestFloorRelays(t *testing.T) {
	for _, mode := range []string{hopGoroutineRelay, hopEventLoopRelay} {
		t.Run(mode, func(t *testing.T) {
			echo := startEcho(t)
			ctx, cancel := context.WithCancel(context.Background())
			ports := make(chan int, 1)
			done := make(chan error, 1)
			go func() {
				switch mode {
				case hopGoroutineRelay:
					ln, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						done <- err
						return
					}
					ports <- ln.Addr().(*net.TCPAddr).Port
					done <- goroutineRelay(ctx, ln, echo)
				default:
					done <- eventLoopRelay(ctx, echo, func(p int) { ports <- p })
				}
			}()
			var port int
			select {
			case port = <-ports:
			case err := <-done:
				t.Fatalf("the relay stopped before listening: %v", err)
			}

			// Three connections at once, each 16 MiB each way: more than
			// loopback's socket buffers hold once they have grown.
			const size = 16 << 20
			errc := make(chan error, 3)
			for i := 0; i < 3; i++ {
				go func() { errc <- echoThrough(port, size) }()
			}
			for i := 0; i < 3; i++ {
				if err := <-errc; err != nil {
					t.Error(err)
				}
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("the relay ended with %v, want nil after its context ended", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the relay did not stop within 10 s of its context ending")
			}
		})
	}
}

// echoThrough sends size random bytes through the relay at port to the echo
// server and checks that the same bytes come back.
func echoThrough(port, size int) error {
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))

	want := make([]byte, size)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		werr <- err
	}()
	got := make([]byte, size)
	// Read late: the relay's writes back find this socket full too.
	time.Sleep(200 * time.Millisecond)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errors.New("the bytes that came back differ from those sent")
	}
	return nil
}

// startEcho starts a TCP server on 127.0.0.1 that sends back what it
// receives, slowly (16 KiB, then a pause of 1 ms), and returns its address.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Slower than the client writes: the relay's writes to
				// this side keep finding the socket full, and it must
				// stop reading the client until there is room.
				buf := make([]byte, 16<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
		}
	}()
	return ln.Addr().String()
}
