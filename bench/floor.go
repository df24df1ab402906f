package main

import (
	"context"
	"fmt"
	"net"
)

// The floors: two relays that only copy bytes between the client and
// PostgreSQL, each in a process of its own like the engine hop. They parse
// nothing, record nothing and have no TLS, so they show what a relay in Go
// costs on this machine before it does any of Airlock's work, next to
// PgBouncer, which is C and one thread with an event loop:
//
//   - goroutineRelay is the usual Go design, and the one Airlock's processes
//     use: a goroutine per direction, each blocked in Read until the runtime's
//     network poller wakes it;
//   - eventLoopRelay is PgBouncer's design in Go: one goroutine locked to one
//     thread, serving every socket from one epoll loop with raw system calls
//     (floor_linux.go).

// Hop modes: what a hop process serves (hopConfig.Mode).
const (
	hopEngine         = ""           // the gateway's PostgreSQL engine
	hopGoroutineRelay = "goroutines" // goroutineRelay
	hopEventLoopRelay = "event-loop" // eventLoopRelay
)

// goroutineRelay relays every connection ln accepts to upstream, with one
// goroutine per direction, until ctx ends.
func goroutineRelay(ctx context.Context, ln net.Listener, upstream string) error {
	return serveEach(ctx, ln, func(c net.Conn) {
		u, err := net.Dial("tcp", upstream)
		if err != nil {
			c.Close()
			return
		}
		go copyThenClose(u, c)
		copyThenClose(c, u)
	})
}

// copyThenClose copies src to dst through a buffer of its own (io.Copy would
// splice(2) between the two sockets, which no proxy that reads the protocol
// can do) and closes both when either ends.
func copyThenClose(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// serveFloor serves one of the floor relays on a new loopback port, printing
// "listening PORT" as the engine hop does.
func serveFloor(ctx context.Context, cfg hopConfig) error {
	upstream := net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
	switch cfg.Mode {
	case hopGoroutineRelay:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)
		return goroutineRelay(ctx, ln, upstream)
	case hopEventLoopRelay:
		return eventLoopRelay(ctx, upstream, func(port int) { fmt.Printf("listening %d\n", port) })
	}
	return fmt.Errorf("unknown hop mode %q", cfg.Mode)
}
