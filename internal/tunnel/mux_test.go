package tunnel

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// writeLog records every write to a connection, to see how frames reach it.
// While gate is set, a write waits for it to be closed first (or for the
// connection to be closed, as a write blocked in the kernel would).
type writeLog struct {
	net.Conn
	mu        sync.Mutex
	writes    [][]byte
	gate      chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	delay     time.Duration // added to each write
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, bytes.Clone(p))
	gate, delay := w.gate, w.delay
	w.mu.Unlock()
	time.Sleep(delay)
	if gate != nil {
		select {
		case <-gate:
		case <-w.closed:
			return 0, net.ErrClosed
		}
	}
	return w.Conn.Write(p)
}

func (w *writeLog) Close() error {
	w.closeOnce.Do(func() { close(w.closed) })
	return w.Conn.Close()
}

func (w *writeLog) take() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.writes
	w.writes = nil
	return out
}

// session is what the tests need of either implementation, so the same
// test runs Mux against Mux and Mux against hashicorp/yamux.
type session interface {
	open() (net.Conn, error)
	accept() (net.Conn, error)
	Close() error
}

type ours struct{ *Mux }

func (m ours) open() (net.Conn, error)   { return m.OpenStream() }
func (m ours) accept() (net.Conn, error) { return m.AcceptStream() }

type theirs struct{ *yamux.Session }

func (m theirs) open() (net.Conn, error)   { return m.OpenStream() }
func (m theirs) accept() (net.Conn, error) { return m.AcceptStream() }

// yamuxConfig matches Mux's window, as a peer running hashicorp/yamux would.
func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = maxWindow
	c.LogOutput = io.Discard
	return c
}

// muxPair returns a client and a server Mux over loopback TCP, and the log
// of the client's writes to its connection.
func muxPair(t *testing.T) (client, server *Mux, log *writeLog) {
	t.Helper()
	c, sc := tcpPair(t)
	log = &writeLog{Conn: c, closed: make(chan struct{})}
	client, _ = MuxClient(log)
	server, _ = MuxServer(sc)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server, log
}

// pairs are the combinations every protocol test runs on.
func pairs(t *testing.T) map[string]func() (client, server session) {
	return map[string]func() (session, session){
		"mux-mux": func() (session, session) {
			c, s, _ := muxPair(t)
			return ours{c}, ours{s}
		},
		"mux-client-yamux-server": func() (session, session) {
			a, b := tcpPair(t)
			c, _ := MuxClient(a)
			s, err := yamux.Server(b, yamuxConfig())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			return ours{c}, theirs{s}
		},
		"yamux-client-mux-server": func() (session, session) {
			a, b := tcpPair(t)
			c, err := yamux.Client(a, yamuxConfig())
			if err != nil {
				t.Fatal(err)
			}
			s, _ := MuxServer(b)
			t.Cleanup(func() { c.Close(); s.Close() })
			return theirs{c}, ours{s}
		},
	}
}

// echo serves every stream of sess by writing back what it reads.
func echo(sess session) {
	for {
		st, err := sess.accept()
		if err != nil {
			return
		}
		go func() {
			defer st.Close()
			io.Copy(st, st)
		}()
	}
}

func TestMuxWritesEachSmallDataFrameInOneWrite(t *testing.T) {
	client, server, log := muxPair(t)
	go echo(ours{server})
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	const messages = 50
	msg := bytes.Repeat([]byte("select 1;"), 20)
	got := make([]byte, len(msg))
	for range messages {
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo returned %q", got)
		}
	}
	frames := 0
	for _, w := range log.take() {
		if w[1] != typeData {
			continue
		}
		frames++
		if body := int(binary.BigEndian.Uint32(w[8:12])); len(w) != headerSize+body {
			t.Fatalf("a data frame of %d bytes went out in a write of %d bytes: header and body were not joined", body, len(w))
		}
	}
	if frames != messages {
		t.Fatalf("saw %d data frames written, want %d (one write per message)", frames, messages)
	}
}

func TestMuxWritersThatFindAWriteInProgressShareTheNextWrite(t *testing.T) {
	client, server, log := muxPair(t)
	go echo(ours{server})
	const streams = 8
	sts := make([]*Stream, streams)
	for i := range sts {
		var err error
		if sts[i], err = client.OpenStream(); err != nil {
			t.Fatal(err)
		}
	}
	log.take()

	// The first writer blocks inside its write; the others find it busy.
	gate := make(chan struct{})
	log.mu.Lock()
	log.gate = gate
	log.mu.Unlock()
	go sts[0].Write([]byte("first"))
	for {
		log.mu.Lock()
		n := len(log.writes)
		log.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < streams; i++ {
		// Each returns at once: its frame waits for the writer in progress.
		if _, err := sts[i].Write(fmt.Appendf(nil, "stream %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	for i, st := range sts {
		want := "first"
		if i > 0 {
			want = fmt.Sprintf("stream %d", i)
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(st, got); err != nil || string(got) != want {
			t.Fatalf("stream %d echoed %q, %v; want %q", i, got, err, want)
		}
	}
	writes := log.take()
	if len(writes) != 2 {
		t.Fatalf("%d frames on %d streams went out in %d writes, want 2: the one in progress and one for all that waited", streams, streams, len(writes))
	}
}

func TestMuxStreamsCarryEveryByteEitherWay(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			client, server := pair()
			go echo(server)
			// Sizes on both sides of a frame, of the initial window and of
			// the full window, so the writers wait for window updates.
			sizes := []int{1, 100, maxFrameBody, maxFrameBody + 1, 200 << 10, initialWindow + 1, maxWindow + 5000}
			var wg sync.WaitGroup
			errc := make(chan error, len(sizes))
			for _, size := range sizes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errc <- echoThrough(client, size)
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// echoThrough sends size random bytes on a new stream of sess, in writes of
// mixed sizes as a proxy makes them, and checks the echo.
func echoThrough(sess session, size int) error {
	data := make([]byte, size)
	rand.Read(data)
	st, err := sess.open()
	if err != nil {
		return err
	}
	defer st.Close()
	go func() {
		for rest, i := data, 0; len(rest) > 0; i++ {
			n := min(len(rest), []int{7, 5000, 70000}[i%3])
			if _, err := st.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(st, got); err != nil {
		return fmt.Errorf("%d bytes: %w", size, err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("%d bytes: the echo differs from what was sent", size)
	}
	return nil
}

func TestMuxCloseDeliversWhatWasWrittenThenEOF(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			client, server := pair()
			st, err := client.open()
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte("row;"), 100_000)
			go func() {
				st.Write(data)
				st.Close()
			}()
			peer, err := server.accept()
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(peer)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d of %d bytes, err %v", len(got), len(data), err)
			}
			peer.Close()
		})
	}
}

func TestMuxForgetsStreamsClosedOnBothEnds(t *testing.T) {
	client, server, _ := muxPair(t)
	go echo(ours{server})
	for range 20 {
		if err := echoThrough(ours{client}, 1000); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for client.NumStreams()+server.NumStreams() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d client and %d server streams still held after every stream closed", client.NumStreams(), server.NumStreams())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMuxWriterWaitsForTheReadersWindow(t *testing.T) {
	client, server, _ := muxPair(t)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte{0}) // so the server accepts and grants the full window
	peer, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads: the writer may send one window and must then wait.
	st.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := st.Write(make([]byte, 2*maxWindow))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write returned %v, want it to time out waiting for window", err)
	}
	if n != maxWindow-1 {
		t.Fatalf("wrote %d bytes before waiting, want the window: %d", n, maxWindow-1)
	}
	// Reading frees the window and the writer goes on.
	st.SetWriteDeadline(time.Time{})
	go io.Copy(io.Discard, peer)
	if _, err := st.Write(make([]byte, maxWindow)); err != nil {
		t.Fatalf("Write after the reader caught up: %v", err)
	}
}

func TestMuxReadDeadline(t *testing.T) {
	client, server, _ := muxPair(t)
	go echo(ours{server})
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = st.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read returned %v, want a timeout", err)
	}
	// A cleared deadline lets the stream be used again.
	st.SetReadDeadline(time.Time{})
	st.Write([]byte("x"))
	if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

func TestMuxCloseEndsEveryWaitingReadAndWrite(t *testing.T) {
	client, server, _ := muxPair(t)
	reader, _ := client.OpenStream()
	writer, _ := client.OpenStream()
	errc := make(chan error, 3)
	go func() { _, err := reader.Read(make([]byte, 1)); errc <- err }()
	go func() { _, err := writer.Write(make([]byte, 2*maxWindow)); errc <- err }()
	go func() { _, err := client.AcceptStream(); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	server.Close()
	for range 3 {
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("an operation succeeded on a closed connection")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("an operation still waits after the other end closed the connection")
		}
	}
	<-client.CloseChan()
	if _, err := client.OpenStream(); !errors.Is(err, ErrMuxClosed) {
		t.Fatalf("OpenStream on a closed connection: %v", err)
	}
}

func TestMuxPing(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			client, server := pair()
			for _, s := range []session{client, server} {
				if m, ok := s.(ours); ok {
					if _, err := m.Ping(); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

func TestMuxKeepaliveClosesAConnectionThatStopsTakingWrites(t *testing.T) {
	defer func(k, p time.Duration) { keepAliveInterval, pingTimeout = k, p }(keepAliveInterval, pingTimeout)
	keepAliveInterval, pingTimeout = 50*time.Millisecond, 200*time.Millisecond
	client, server, log := muxPair(t)
	go echo(ours{server})
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// From now on every write to the connection hangs, as on a link that
	// died without a reset.
	log.mu.Lock()
	log.gate = make(chan struct{})
	log.mu.Unlock()
	werr := make(chan error, 1)
	go func() { _, err := st.Write(make([]byte, 1<<20)); werr <- err }()
	select {
	case <-client.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection is still open although no write completes and pings go unanswered")
	}
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("the hung write reported success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write still waits after the connection was closed")
	}
}

func TestMuxWriteTimeoutClosesAConnectionWhosePeerStopsReading(t *testing.T) {
	defer func(w time.Duration) { writeTimeout = w }(writeTimeout)
	writeTimeout = 300 * time.Millisecond
	a, _ := tcpPair(t) // the other end never reads: the socket buffers fill up
	m, _ := MuxClient(a)
	defer m.Close()
	// Each new stream may send the initial window without an answer, so
	// enough streams fill the kernel's buffers and the write blocks.
	go func() { // opening a stream blocks too once the writes do
		for range 64 {
			st, err := m.OpenStream()
			if err != nil {
				return
			}
			go st.Write(make([]byte, initialWindow))
		}
	}()
	select {
	case <-m.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection is still open although its writes have been blocked for far longer than the write timeout")
	}
}

// Malformed bytes close the one connection they arrived on, with no panic,
// and leave other connections working.
func TestMuxMalformedFramesCloseOnlyTheirConnection(t *testing.T) {
	frame := func(typ uint8, flags uint16, id, length uint32, body ...byte) []byte {
		return append(appendHeader(nil, typ, flags, id, length), body...)
	}
	// The connection is a server's, whose streams have even ids.
	broken := map[string][]byte{
		"version":         {9, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},
		"type":            frame(7, 0, 1, 0),
		"stream 0":        frame(typeData, flagSYN, 0, 1, 'x'),
		"opened twice":    append(frame(typeWindowUpdate, flagSYN, 1, 0), frame(typeWindowUpdate, flagSYN, 1, 0)...),
		"window exceeded": append(frame(typeWindowUpdate, flagSYN, 1, 0), frame(typeData, 0, 1, initialWindow+1)...),
		"id of this end":  frame(typeWindowUpdate, flagSYN, 2, 0),
	}
	_, healthy, _ := muxPair(t)
	for name, b := range broken {
		t.Run(name, func(t *testing.T) {
			a, c := tcpPair(t)
			m, _ := MuxServer(c)
			defer m.Close()
			a.Write(b) // the connection stays open on this side
			select {
			case <-m.CloseChan():
			case <-time.After(10 * time.Second):
				t.Fatal("the connection stayed open after a frame that breaks the protocol")
			}
		})
	}
	// Frames for streams that are gone are dropped; the connection goes on.
	harmless := map[string][]byte{
		"data on unknown id":  frame(typeData, 0, 99, 3, 'a', 'b', 'c'),
		"reset of unknown id": frame(typeWindowUpdate, flagRST, 99, 0),
		"window of unknown":   frame(typeWindowUpdate, 0, 97, 1000),
	}
	for name, b := range harmless {
		t.Run(name, func(t *testing.T) {
			a, c := tcpPair(t)
			m, _ := MuxServer(c)
			defer m.Close()
			a.Write(append(b, frame(typeData, flagSYN, 5, 5, 'h', 'e', 'l', 'l', 'o')...))
			st, err := m.AcceptStream()
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 5)
			if _, err := io.ReadFull(st, got); err != nil || string(got) != "hello" {
				t.Fatalf("the stream opened after the dropped frame read %q, %v", got, err)
			}
		})
	}
	// Bytes cut short close the connection at EOF, with no panic.
	for name, b := range map[string][]byte{"header": {0, 0, 0}, "body": frame(typeData, flagSYN, 1, 100, 'x')} {
		t.Run("truncated "+name, func(t *testing.T) {
			a, c := tcpPair(t)
			m, _ := MuxServer(c)
			defer m.Close()
			a.Write(b)
			a.(*net.TCPConn).CloseWrite()
			select {
			case <-m.CloseChan():
			case <-time.After(10 * time.Second):
				t.Fatal("the connection stayed open after EOF")
			}
		})
	}
	if _, err := healthy.Ping(); err != nil {
		t.Fatalf("another connection failed: %v", err)
	}
}

func TestMuxClosingAStreamResetsItsSender(t *testing.T) {
	client, server, _ := muxPair(t)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte{0})
	peer, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	// The server streams a large result; the client goes away without
	// reading it (a user's Ctrl+C).
	werr := make(chan error, 1)
	go func() {
		_, err := peer.Write(make([]byte, 3*maxWindow))
		werr <- err
	}()
	io.ReadFull(st, make([]byte, 1000))
	st.Close()
	select {
	case err := <-werr:
		if !errors.Is(err, ErrStreamReset) {
			t.Fatalf("the sender's Write returned %v, want ErrStreamReset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sender still waits for window after the reader closed the stream")
	}
}

func TestMuxEveryReaderOfAStreamSeesItsEnd(t *testing.T) {
	client, server, _ := muxPair(t)
	st, _ := client.OpenStream()
	st.Write([]byte{0})
	peer, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(peer, make([]byte, 1))
	// Each reader reports whether it saw the end as its kind of read says
	// it: io.EOF from Read, nil from WriteTo.
	errc := make(chan error, 3)
	readEOF := func() {
		_, err := peer.Read(make([]byte, 1))
		if err != io.EOF {
			err = fmt.Errorf("Read returned %v, want io.EOF", err)
		} else {
			err = nil
		}
		errc <- err
	}
	go readEOF()
	go readEOF()
	go func() {
		if _, err := peer.WriteTo(io.Discard); err != nil {
			errc <- fmt.Errorf("WriteTo returned %v, want nil at the end", err)
			return
		}
		errc <- nil
	}()
	time.Sleep(50 * time.Millisecond) // let all three wait
	st.Close()
	for range 3 {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a reader still waits after the other end closed the stream")
		}
	}
}

func TestMuxWriterIsNotHeldByOtherStreamsData(t *testing.T) {
	c, sc := tcpPair(t)
	slow := &writeLog{Conn: c, closed: make(chan struct{})}
	client, _ := MuxClient(slow)
	server, _ := MuxServer(sc)
	t.Cleanup(func() { client.Close(); server.Close() })
	go func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, st)
		}
	}()
	small, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	bulk, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	slow.mu.Lock()
	slow.gate = make(chan struct{})
	slow.mu.Unlock()

	// small's frame is written first, by small's own goroutine, while the
	// connection is held; bulk's frames pile up behind it.
	slow.take()
	smallDone := make(chan error, 1)
	go func() { _, err := small.Write([]byte("select 1")); smallDone <- err }()
	for { // until small's frame is in the held write
		slow.mu.Lock()
		n := len(slow.writes)
		slow.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var bulkDone atomic.Bool
	go func() {
		// 8 MiB in small writes with pauses: less arrives during one write
		// to the connection than the pending limit, so there is always
		// more waiting and never a wait for room.
		for range 1024 {
			if _, err := bulk.Write(make([]byte, 8<<10)); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
		bulkDone.Store(true)
	}()
	time.Sleep(50 * time.Millisecond)
	// From now on each write to the connection takes a while, so bulk
	// always has more waiting than one write takes.
	slow.mu.Lock()
	gate := slow.gate
	slow.gate, slow.delay = nil, 2*time.Millisecond
	slow.mu.Unlock()
	close(gate)
	if err := <-smallDone; err != nil {
		t.Fatal(err)
	}
	if bulkDone.Load() {
		t.Fatal("a small Write returned only after another stream's 8 MiB were written: it was kept writing them")
	}
}

func FuzzMuxFrames(f *testing.F) {
	f.Add(appendHeader(nil, typeWindowUpdate, flagSYN, 1, 10))
	f.Add(append(appendHeader(nil, typeData, flagSYN|flagFIN, 3, 2), 'h', 'i'))
	f.Add(appendHeader(nil, typePing, flagSYN, 0, 7))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, c := net.Pipe()
		m, _ := MuxServer(c)
		go func() {
			for {
				st, err := m.AcceptStream()
				if err != nil {
					return
				}
				go io.Copy(io.Discard, st)
			}
		}()
		go io.Copy(io.Discard, a) // the answers
		a.Write(b)
		a.Close()
		<-m.CloseChan()
	})
}
