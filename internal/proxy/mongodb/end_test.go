package mongodb

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestEndPendingCommand ends a session while a command waits for its
// reply (held back on the network between the engine and FerretDB, which
// answers at once otherwise): the client gets an error reply that says why,
// the connection closes, and the session log says the command's outcome is
// unknown.
func TestEndPendingCommand(t *testing.T) {
	f := testenv.StartFerretDB(t)
	link := startStall(t, f.Addr())
	cfg := configFor(f, f.SCRAM256User)
	cfg.URI = "mongodb://" + link.addr + "/"
	p := startProxy(t, cfg)
	ctx := testContext(t)
	c := p.connect(t)
	coll := c.Database("end").Collection("pending")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}

	// An idle connection of the same session, which has no reply to wait
	// for: it is only closed.
	idle := dialRaw(t, p)
	_ = roundTripRaw(t, idle, appendMsg(nil, 1, 0, bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).AppendString("$db", "admin").Build()))

	link.hold("pending_marker")
	errc := make(chan error, 1)
	go func() {
		_, err := c.Database("end").Collection("pending_marker").InsertOne(ctx, bson.D{{Key: "n", Value: 2}})
		errc <- err
	}()
	select {
	case <-link.seen:
	case <-ctx.Done():
		t.Fatal("the insert never reached the server")
	}
	endSession(p.sess)

	err := <-errc
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(codeInterrupted) ||
		!strings.Contains(err.Error(), "airlock: session terminated by an administrator") {
		t.Fatalf("the pending insert ended with %v, want code %d and the session's end", err, codeInterrupted)
	}
	var evs []sessionlog.Event
	for _, ev := range p.rec.commands("insert") {
		if ev.Collection == "pending_marker" {
			evs = append(evs, ev)
		}
	}
	if len(evs) != 1 || evs[0].Outcome != OutcomeUnknown || evs[0].ErrorMsg != "airlock: session terminated by an administrator" {
		t.Errorf("the insert was recorded as %+v, want outcome %q", evs, OutcomeUnknown)
	}
	var disc []sessionlog.Event
	for _, ev := range p.rec.all() {
		if ev.Kind == sessionlog.KindDisconnect {
			disc = append(disc, ev)
		}
	}
	if len(disc) == 0 || disc[0].Outcome != OutcomeTerminated || disc[0].ErrorCode != tunnel.EndTerminated {
		t.Errorf("disconnect events %+v, want outcome terminated with the reason", disc)
	}
	if n := p.sess.Conns(); n != 0 {
		t.Errorf("%d connections still served after the end", n)
	}
	_ = idle.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("the idle connection stays open: %v", err)
	}
	// The client's own connection is closed too: its next command fails.
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "n", Value: 3}}); err == nil {
		t.Error("a command succeeded after the session ended")
	}
	for _, err := range p.serveErrors() {
		if err != nil && !isSessionClosed(err) {
			t.Errorf("Serve returned %v", err)
		}
	}
}

// stall is a TCP relay to a server that can hold back the server's
// replies: once hold(marker) is called, the first client bytes holding
// marker are forwarded and signalled on seen, and from then on nothing the
// server sends on that connection is forwarded. It stands for a slow
// network or a slow operation; the server behind it is real.
type stall struct {
	addr string
	seen chan struct{}

	mu     sync.Mutex
	marker []byte
	held   bool
}

func startStall(t *testing.T, target string) *stall {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stall{addr: ln.Addr().String(), seen: make(chan struct{})}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, up)
			connsMu.Unlock()
			holding := make(chan struct{})
			wg.Go(func() {
				defer c.Close()
				defer up.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if s.match(buf[:n]) {
							close(holding)
						}
						if _, err := up.Write(buf[:n]); err != nil {
							return
						}
						if s.justMatched(buf[:n]) {
							close(s.seen)
						}
					}
					if err != nil {
						return
					}
				}
			})
			wg.Go(func() {
				defer c.Close()
				defer up.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := up.Read(buf)
					select {
					case <-holding:
						n = 0 // held back
					default:
					}
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *stall) hold(marker string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marker = []byte(marker)
}

// match reports whether b holds the marker, the first time it does.
func (s *stall) match(b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held || s.marker == nil || !bytes.Contains(b, s.marker) {
		return false
	}
	s.held = true
	return true
}

// justMatched reports whether b is the chunk that match accepted.
func (s *stall) justMatched(b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held && s.marker != nil && bytes.Contains(b, s.marker) {
		s.marker = nil
		return true
	}
	return false
}
