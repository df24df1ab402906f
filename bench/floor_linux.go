package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
)

// eventLoopRelay relays every connection to upstream (an IPv4 address) from
// one epoll loop on one locked thread, with raw system calls, until ctx
// ends. It calls listening with its port once it accepts connections.
func eventLoopRelay(ctx context.Context, upstream string, listening func(port int)) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ap, err := netip.ParseAddrPort(upstream)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("the event-loop relay needs an IPv4 address and port, not %q", upstream)
	}
	up := &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}

	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(lfd)
	if err := syscall.Bind(lfd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := syscall.Listen(lfd, 1024); err != nil {
		return err
	}
	sa, err := syscall.Getsockname(lfd)
	if err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer syscall.Close(ep)
	watch := func(fd int) error {
		return syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
	}
	if err := watch(lfd); err != nil {
		return err
	}
	listening(sa.(*syscall.SockaddrInet4).Port)

	peer := map[int]int{} // each socket's other end
	defer func() {
		for fd := range peer {
			syscall.Close(fd)
		}
	}()
	hangUp := func(fd int) {
		other := peer[fd]
		delete(peer, fd)
		delete(peer, other)
		syscall.Close(fd) // closing removes it from the epoll set
		syscall.Close(other)
	}
	accept := func() {
		for {
			cfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			if err != nil {
				return // EAGAIN: none left
			}
			ufd, err := dialBlocking(up)
			if err != nil {
				syscall.Close(cfd)
				continue
			}
			for _, fd := range []int{cfd, ufd} {
				_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
			}
			peer[cfd], peer[ufd] = ufd, cfd
			if watch(cfd) != nil || watch(ufd) != nil {
				hangUp(cfd)
			}
		}
	}

	buf := make([]byte, 32<<10)
	events := make([]syscall.EpollEvent, 256)
	for ctx.Err() == nil {
		n, err := syscall.EpollWait(ep, events, 200) // ms: how often ctx is checked
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				accept()
				continue
			}
			other, ok := peer[fd]
			if !ok {
				continue // hung up earlier in this batch
			}
			k, err := syscall.Read(fd, buf)
			if errors.Is(err, syscall.EAGAIN) {
				continue
			}
			if k <= 0 || writeAll(other, buf[:k]) != nil {
				hangUp(fd)
			}
		}
	}
	return nil
}

// dialBlocking connects a new socket to addr, then makes it non-blocking.
func dialBlocking(addr syscall.Sockaddr) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := syscall.Connect(fd, addr); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// writeAll writes p to the non-blocking socket fd. When the socket's buffer
// is full (a large result), it finishes in blocking mode, stalling the loop:
// a floor measured with small messages never gets there.
func writeAll(fd int, p []byte) error {
	blocking := false
	for len(p) > 0 {
		k, err := syscall.Write(fd, p)
		switch {
		case errors.Is(err, syscall.EAGAIN) && !blocking:
			if err := syscall.SetNonblock(fd, false); err != nil {
				return err
			}
			blocking = true
			continue
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return err
		}
		p = p[k:]
	}
	if blocking {
		return syscall.SetNonblock(fd, true)
	}
	return nil
}
