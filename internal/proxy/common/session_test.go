package common

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"testing"
	"time"
)

// fakeConn stands for a protocol's connection: it records the calls End
// makes, and, like an engine's Serve, removes itself from the session once
// closed.
type fakeConn struct {
	sess *Session

	mu      sync.Mutex
	calls   []string
	goodbye string
}

func (c *fakeConn) record(call string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, call)
}

func (c *fakeConn) Interrupt(context.Context) { c.record("interrupt") }

func (c *fakeConn) Goodbye(message string) {
	c.record("goodbye")
	c.mu.Lock()
	c.goodbye = message
	c.mu.Unlock()
}

func (c *fakeConn) Close() {
	c.record("close")
	go c.sess.Remove(c) // Serve returns after the close, on its own goroutine
}

type closer struct{ closed chan struct{} }

func (c *closer) Close() { close(c.closed) }

func TestSessionEnd(t *testing.T) {
	s := NewSession("s1")
	conns := []*fakeConn{{sess: s}, {sess: s}, {sess: s}}
	for _, c := range conns {
		if err := s.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	state := &closer{closed: make(chan struct{})}
	if v, err := s.Value("k", func() (any, error) { return state, nil }); err != nil || v != state {
		t.Fatalf("Value: %v %v", v, err)
	}
	if v, _ := s.Value("k", func() (any, error) { return nil, errors.New("created twice") }); v != state {
		t.Fatalf("Value created the state twice")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.End(ctx, "terminated", "session terminated by an administrator")
	if n := s.Conns(); n != 0 {
		t.Errorf("End returned with %d connections still served", n)
	}
	for i, c := range conns {
		if got := c.calls; len(got) != 3 || got[0] != "interrupt" || got[1] != "goodbye" || got[2] != "close" {
			t.Errorf("connection %d: calls %v, want interrupt, goodbye, close", i, got)
		}
		if c.goodbye != "airlock: session terminated by an administrator" {
			t.Errorf("connection %d was told %q", i, c.goodbye)
		}
	}
	select {
	case <-state.closed:
	default:
		t.Error("the protocol state was not closed")
	}
	if reason, msg := s.EndReason(); reason != "terminated" || msg != "session terminated by an administrator" {
		t.Errorf("EndReason() = %q, %q", reason, msg)
	}

	// Ending again changes nothing, and new connections are refused.
	s.End(ctx, "expired", "session expired")
	if reason, _ := s.EndReason(); reason != "terminated" {
		t.Errorf("a second End changed the reason to %q", reason)
	}
	for _, c := range conns {
		if len(c.calls) != 3 {
			t.Errorf("a second End called the connection again: %v", c.calls)
		}
	}
	if err := s.Add(&fakeConn{sess: s}); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("Add after End: %v, want ErrSessionEnded", err)
	}
	if _, err := s.Value("other", func() (any, error) { return 1, nil }); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("Value after End: %v, want ErrSessionEnded", err)
	}
}

// TestSessionEndWaits checks that a second, concurrent End returns only
// once the first has ended every connection.
func TestSessionEndWaits(t *testing.T) {
	s := NewSession("s2")
	release := make(chan struct{})
	c := &slowConn{fakeConn: fakeConn{sess: s}, release: release, started: make(chan struct{})}
	if err := s.Add(c); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first := make(chan struct{})
	go func() {
		s.End(ctx, "terminated", "bye")
		close(first)
	}()
	<-c.started
	second := make(chan struct{})
	go func() {
		s.End(ctx, "expired", "bye")
		close(second)
	}()
	select {
	case <-second:
		t.Fatal("the second End returned while the first was still ending the connection")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-first
	<-second
	if s.Conns() != 0 {
		t.Error("a connection is still served")
	}
}

// slowConn is a connection whose interruption takes until release is
// closed.
type slowConn struct {
	fakeConn
	release chan struct{}
	started chan struct{}
}

func (c *slowConn) Interrupt(context.Context) {
	close(c.started)
	<-c.release
}

func (c *slowConn) Close() { go c.sess.Remove(c) }

func TestSessionSettings(t *testing.T) {
	s := NewSession("s3", WithMaskPatterns([]*regexp.Regexp{regexp.MustCompile("a")}), WithRedactValues(true))
	if len(s.MaskPatterns()) != 1 || !s.RedactValues() {
		t.Fatalf("options not applied: %v %v", s.MaskPatterns(), s.RedactValues())
	}
	s.SetMaskPatterns(nil)
	s.SetRedactValues(false)
	if len(s.MaskPatterns()) != 0 || s.RedactValues() {
		t.Fatalf("settings not changed: %v %v", s.MaskPatterns(), s.RedactValues())
	}
}
