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
	lfd, port, err := listenLoopback()
	if err != nil {
		return err
	}
	defer syscall.Close(lfd)
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer syscall.Close(ep)
	l := &eventLoop{ep: ep, lfd: lfd, up: &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()},
		socks: map[int]*loopSock{}, buf: make([]byte, 32<<10)}
	defer l.closeAll()
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return err
	}
	listening(port)

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
				if err := l.accept(); err != nil {
					return err
				}
				continue
			}
			l.serve(fd, ev.Events)
		}
	}
	return nil
}

// listenLoopback opens a non-blocking listening socket on 127.0.0.1 and a
// free port.
func listenLoopback() (fd, port int, err error) {
	fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	if err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err == nil {
		err = syscall.Listen(fd, 1024)
	}
	var sa syscall.Sockaddr
	if err == nil {
		sa, err = syscall.Getsockname(fd)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	return fd, sa.(*syscall.SockaddrInet4).Port, nil
}

// eventLoop is the state of eventLoopRelay: every socket, by descriptor.
type eventLoop struct {
	ep, lfd int
	up      *syscall.SockaddrInet4
	socks   map[int]*loopSock
	buf     []byte
}

// loopSock is one socket of a relayed pair.
type loopSock struct {
	peer     int
	pending  []byte // read from the peer, not yet taken by this socket
	interest uint32 // the epoll events it is watched for
}

// accept takes every waiting connection and connects each to upstream.
func (l *eventLoop) accept() error {
	for {
		cfd, _, err := syscall.Accept4(l.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return nil // none left
		case errors.Is(err, syscall.EINTR), errors.Is(err, syscall.ECONNABORTED):
			continue
		case err != nil:
			// Out of descriptors or memory: the listener stays readable, so
			// carrying on would spin. Fail the run instead.
			return fmt.Errorf("accept: %w", err)
		}
		ufd, err := dialBlocking(l.up)
		if err != nil {
			syscall.Close(cfd)
			continue
		}
		for _, fd := range []int{cfd, ufd} {
			_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		}
		l.socks[cfd] = &loopSock{peer: ufd, interest: syscall.EPOLLIN}
		l.socks[ufd] = &loopSock{peer: cfd, interest: syscall.EPOLLIN}
		for _, fd := range []int{cfd, ufd} {
			if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
				l.hangUp(cfd)
				break
			}
		}
	}
}

// serve handles the events of one relayed socket: it sends what waits for
// it, then reads what it has and writes it to its peer. Whatever the peer
// does not take at once waits in the peer's pending buffer; meanwhile the
// peer is watched for room to write and this socket is not read, so memory
// stays bounded and the loop never blocks.
func (l *eventLoop) serve(fd int, events uint32) {
	s, ok := l.socks[fd]
	if !ok {
		return // hung up earlier in this batch
	}
	if events&syscall.EPOLLOUT != 0 && len(s.pending) > 0 {
		if !l.flush(fd, s) {
			return
		}
	}
	if len(l.socks[s.peer].pending) > 0 {
		if events&(syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			l.hangUp(fd)
		}
		return // not read until its peer has taken what waits
	}
	if events&(syscall.EPOLLIN|syscall.EPOLLHUP|syscall.EPOLLERR) == 0 {
		return
	}
	n, err := syscall.Read(fd, l.buf)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		return
	}
	if n <= 0 {
		l.hangUp(fd)
		return
	}
	p := l.socks[s.peer]
	p.pending = append(p.pending[:0], l.buf[:n]...)
	l.flush(s.peer, p)
}

// flush writes fd's pending bytes as far as the socket takes them and sets
// what the pair is watched for. It reports false if it hung the pair up.
func (l *eventLoop) flush(fd int, s *loopSock) bool {
	for len(s.pending) > 0 {
		n, err := syscall.Write(fd, s.pending)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil {
			l.hangUp(fd)
			return false
		}
		s.pending = s.pending[n:]
	}
	// fd is watched for room while bytes wait for it, and its peer, the
	// source of those bytes, is read only when none wait (and the other
	// way round). Most messages leave both as they were: no system call.
	p := l.socks[s.peer]
	if !l.watch(fd, s, len(p.pending) == 0, len(s.pending) > 0) ||
		!l.watch(s.peer, p, len(s.pending) == 0, len(p.pending) > 0) {
		l.hangUp(fd)
		return false
	}
	return true
}

// watch sets which events fd is watched for, if that changed.
func (l *eventLoop) watch(fd int, s *loopSock, read, write bool) bool {
	var want uint32
	if read {
		want |= syscall.EPOLLIN
	}
	if write {
		want |= syscall.EPOLLOUT
	}
	if want == s.interest {
		return true
	}
	s.interest = want
	return syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_MOD, fd, &syscall.EpollEvent{Events: want, Fd: int32(fd)}) == nil
}

// hangUp closes fd and its peer.
func (l *eventLoop) hangUp(fd int) {
	s, ok := l.socks[fd]
	if !ok {
		return
	}
	delete(l.socks, fd)
	delete(l.socks, s.peer)
	syscall.Close(fd) // closing removes it from the epoll set
	syscall.Close(s.peer)
}

// closeAll closes every relayed socket.
func (l *eventLoop) closeAll() {
	for fd := range l.socks {
		syscall.Close(fd)
	}
}

// dialBlocking connects a new socket to addr, then makes it non-blocking.
// The connect blocks the loop; the upstream is PostgreSQL on loopback, which
// accepts or refuses at once.
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
