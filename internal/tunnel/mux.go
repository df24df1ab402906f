package tunnel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// The multiplexer speaks yamux's wire protocol (hashicorp/yamux, spec.md),
// so either end may be hashicorp/yamux, and the tests check that both
// directions interoperate. It is written for the relay's one job, carrying
// small request/response messages with low latency, and differs from
// hashicorp/yamux where the profile showed that library's cost:
//
//   - A stream's Write writes its frame to the connection from the writing
//     goroutine. yamux hands every frame to a send loop and waits for it, two
//     goroutine switches per write.
//   - A writer that finds another write in progress leaves its frame for
//     that writer, which sends everything waiting in one write: concurrent
//     streams share TLS records and system calls instead of queueing on a
//     lock. A Write returns once its frame is queued; the writer writes only
//     the batch with its own frame and hands the rest to a goroutine, so no
//     stream's Write waits for another stream's data.
//   - Each frame's header and body go out in one write, so a small query is
//     one TLS record.
//   - A stream holds received data in pooled chunks only while it is unread;
//     an idle stream holds no buffer.

// Frame header: version, type, flags, stream id, length (12 bytes).
const (
	headerSize   = 12
	protoVersion = 0

	typeData         = 0
	typeWindowUpdate = 1
	typePing         = 2
	typeGoAway       = 3

	flagSYN = 1
	flagACK = 2
	flagFIN = 4
	flagRST = 8
)

const (
	// initialWindow is the window every stream starts with (the protocol's).
	initialWindow = 256 << 10
	// maxWindow is the receive window each stream grants once opened, large
	// enough for one stream to carry a large result at full speed over a
	// long-latency link.
	maxWindow = 4 << 20
	// maxFrameBody keeps a frame with its header within one TLS record.
	maxFrameBody = 16<<10 - headerSize
	// pendingLimit bounds the bytes waiting for the current writer; more
	// writers wait for the write to finish.
	pendingLimit = 256 << 10
	// acceptBacklog is how many opened streams may wait for AcceptStream;
	// more are refused with a reset.
	acceptBacklog = 1024
	// closeTimeout is how long a closed stream waits for the other end to
	// close too before it is reset.
	closeTimeout = time.Minute
)

// keepAliveInterval and pingTimeout detect a dead connection, and
// writeTimeout bounds one write to it (variables for the tests).
var (
	keepAliveInterval = 10 * time.Second
	pingTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
)

var (
	// ErrMuxClosed is returned by operations on a closed multiplexer. It is
	// a net.ErrClosed.
	ErrMuxClosed = fmt.Errorf("tunnel: the connection is closed: %w", net.ErrClosed)
	// ErrStreamReset is returned when the other end reset the stream.
	ErrStreamReset = errors.New("tunnel: the stream was reset by the other end")
	// ErrStreamClosed is returned by Read and Write after Close. It is a
	// net.ErrClosed.
	ErrStreamClosed = fmt.Errorf("tunnel: the stream is closed: %w", net.ErrClosed)
	errGoAway       = errors.New("tunnel: the other end is shutting down and accepts no new streams")
	errPingTimeout  = errors.New("tunnel: no answer to a keepalive ping")
)

// Mux is one end of a multiplexed connection.
type Mux struct {
	conn        net.Conn
	parity      uint32 // the parity of the stream ids this end opens
	keepAlive   time.Duration
	pingTimeout time.Duration
	accept      chan *Stream
	done        chan struct{}

	// Writing: frames are appended to pending; the goroutine that finds no
	// write in progress writes them (see send).
	wmu     sync.Mutex
	wcond   *sync.Cond
	pending []byte
	writing bool
	werr    error

	mu       sync.Mutex
	streams  map[uint32]*Stream
	nextID   uint32
	pings    map[uint32]chan struct{}
	pingID   uint32
	goAway   bool // the other end sent GoAway
	closed   bool
	closeErr error
}

// MuxClient starts the client end (odd stream ids) of a multiplexed
// connection over conn.
func MuxClient(conn net.Conn) (*Mux, error) { return newMux(conn, 1), nil }

// MuxServer starts the server end (even stream ids) of a multiplexed
// connection over conn.
func MuxServer(conn net.Conn) (*Mux, error) { return newMux(conn, 2), nil }

func newMux(conn net.Conn, firstID uint32) *Mux {
	m := &Mux{
		parity:      firstID % 2,
		keepAlive:   keepAliveInterval,
		pingTimeout: pingTimeout,
		conn:        conn,
		accept:      make(chan *Stream, acceptBacklog),
		done:        make(chan struct{}),
		streams:     map[uint32]*Stream{},
		nextID:      firstID,
		pings:       map[uint32]chan struct{}{},
	}
	m.wcond = sync.NewCond(&m.wmu)
	go m.recvLoop()
	go m.keepAliveLoop()
	return m
}

// OpenStream opens a new stream.
func (m *Mux) OpenStream() (*Stream, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrMuxClosed
	}
	if m.goAway {
		m.mu.Unlock()
		return nil, errGoAway
	}
	id := m.nextID
	if id >= 1<<32-2 {
		m.mu.Unlock()
		return nil, errors.New("tunnel: stream ids exhausted; reconnect")
	}
	m.nextID += 2
	st := newStream(m, id)
	st.recvWindow = maxWindow
	m.streams[id] = st
	m.mu.Unlock()
	if err := m.send(typeWindowUpdate, flagSYN, id, maxWindow-initialWindow, nil, false); err != nil {
		return nil, err
	}
	return st, nil
}

// AcceptStream waits for the other end to open a stream.
func (m *Mux) AcceptStream() (*Stream, error) {
	select {
	case st := <-m.accept:
		st.mu.Lock()
		st.recvWindow += maxWindow - initialWindow
		st.mu.Unlock()
		if err := m.send(typeWindowUpdate, flagACK, st.id, maxWindow-initialWindow, nil, false); err != nil {
			return nil, err
		}
		return st, nil
	case <-m.done:
		return nil, ErrMuxClosed
	}
}

// Ping sends a ping and waits for its answer.
func (m *Mux) Ping() (time.Duration, error) {
	ch := make(chan struct{})
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return 0, ErrMuxClosed
	}
	id := m.pingID
	m.pingID++
	m.pings[id] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.pings, id)
		m.mu.Unlock()
	}()
	start := time.Now()
	// Sent without waiting for a write in progress: when the connection has
	// stopped taking writes, the timeout below is what notices.
	if err := m.send(typePing, flagSYN, 0, id, nil, true); err != nil {
		return 0, err
	}
	t := time.NewTimer(m.pingTimeout)
	defer t.Stop()
	select {
	case <-ch:
		return time.Since(start), nil
	case <-t.C:
		return 0, errPingTimeout
	case <-m.done:
		return 0, ErrMuxClosed
	}
}

// Close closes the connection and every stream on it.
func (m *Mux) Close() error {
	m.shutdown(ErrMuxClosed)
	return nil
}

// CloseChan is closed when the multiplexer closes.
func (m *Mux) CloseChan() <-chan struct{} { return m.done }

// IsClosed reports whether the multiplexer is closed.
func (m *Mux) IsClosed() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// NumStreams is the number of streams open on the connection.
func (m *Mux) NumStreams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.streams)
}

func (m *Mux) shutdown(err error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.closeErr = err
	streams := m.streams
	m.streams = map[uint32]*Stream{}
	m.mu.Unlock()

	close(m.done)
	m.wmu.Lock()
	if m.werr == nil {
		m.werr = err
	}
	m.wcond.Broadcast()
	m.wmu.Unlock()
	m.conn.Close()
	for _, st := range streams {
		st.notifyAll()
	}
}

// send writes one frame. If another goroutine is writing, the frame is
// left in pending for it and send returns at once; otherwise this goroutine
// writes pending until it is empty. async (for frames sent from the receive
// loop, which must never block on the connection) hands the writing to a
// new goroutine instead, and ignores pendingLimit.
func (m *Mux) send(typ uint8, flags uint16, id, length uint32, body []byte, async bool) error {
	m.wmu.Lock()
	for !async && m.werr == nil && len(m.pending) >= pendingLimit {
		m.wcond.Wait()
	}
	if m.werr != nil {
		err := m.werr
		m.wmu.Unlock()
		return err
	}
	if async && len(m.pending) >= 2*pendingLimit {
		// Frames the receive loop answers with (pings, resets) pile up
		// only when the other end sends them faster than it reads.
		m.wmu.Unlock()
		m.shutdown(errors.New("tunnel: the other end sends control frames and does not read the answers"))
		return ErrMuxClosed
	}
	if m.pending == nil {
		m.pending = getBuf(max(4<<10, headerSize+len(body)))
	}
	m.pending = appendHeader(m.pending, typ, flags, id, length)
	m.pending = append(m.pending, body...)
	if m.writing {
		m.wmu.Unlock()
		return nil
	}
	m.writing = true
	if async {
		m.wmu.Unlock()
		go m.flush(false)
		return nil
	}
	return m.flushLocked(true)
}

// flush takes wmu and calls flushLocked.
func (m *Mux) flush(once bool) error {
	m.wmu.Lock()
	return m.flushLocked(once)
}

// flushLocked writes pending; it is called with wmu held and writing set,
// and returns with wmu released. With once, the caller writes one batch,
// the one that holds its own frame, and leaves what other writers added
// meanwhile to a new goroutine, so that a stream's Write never waits for
// other streams' data. Otherwise it writes until pending is empty.
func (m *Mux) flushLocked(once bool) error {
	var err error
	for len(m.pending) > 0 && m.werr == nil {
		buf := m.pending
		m.pending = nil
		m.wmu.Unlock()
		// A connection that stops taking writes (a link gone without a
		// reset) fails the write instead of holding every stream.
		if err = m.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err == nil {
			_, err = m.conn.Write(buf)
		}
		putBuf(buf)
		m.wmu.Lock()
		if err != nil && m.werr == nil {
			m.werr = err
		}
		m.wcond.Broadcast()
		if once && len(m.pending) > 0 && m.werr == nil {
			m.wmu.Unlock()
			go m.flush(false)
			return nil
		}
	}
	if m.werr != nil {
		err = m.werr
		putBuf(m.pending)
		m.pending = nil
	}
	m.writing = false
	m.wmu.Unlock()
	if err != nil && !errors.Is(err, ErrMuxClosed) {
		m.shutdown(fmt.Errorf("tunnel: writing to the connection: %w", err))
	}
	return err
}

func appendHeader(b []byte, typ uint8, flags uint16, id, length uint32) []byte {
	b = append(b, protoVersion, typ)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint32(b, id)
	return binary.BigEndian.AppendUint32(b, length)
}

// recvLoop reads frames until the connection fails or breaks the protocol;
// either closes the multiplexer, never anything beyond it.
func (m *Mux) recvLoop() {
	br := bufio.NewReaderSize(m.conn, 16<<10)
	var hdr [headerSize]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			m.shutdown(ErrMuxClosed)
			return
		}
		if hdr[0] != protoVersion {
			m.protocolError("unsupported protocol version %d", hdr[0])
			return
		}
		typ := hdr[1]
		flags := binary.BigEndian.Uint16(hdr[2:4])
		id := binary.BigEndian.Uint32(hdr[4:8])
		length := binary.BigEndian.Uint32(hdr[8:12])
		var err error
		switch typ {
		case typeData, typeWindowUpdate:
			err = m.handleStreamFrame(br, typ, flags, id, length)
		case typePing:
			m.handlePing(flags, length)
		case typeGoAway:
			m.mu.Lock()
			m.goAway = true
			m.mu.Unlock()
		default:
			err = fmt.Errorf("unknown frame type %d", typ)
		}
		if err != nil {
			m.protocolError("%v", err)
			return
		}
	}
}

func (m *Mux) protocolError(format string, args ...any) {
	m.shutdown(fmt.Errorf("tunnel: protocol error: "+format, args...))
}

func (m *Mux) handlePing(flags uint16, id uint32) {
	if flags&flagSYN != 0 {
		_ = m.send(typePing, flagACK, 0, id, nil, true)
		return
	}
	m.mu.Lock()
	ch := m.pings[id]
	delete(m.pings, id)
	m.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

func (m *Mux) handleStreamFrame(br *bufio.Reader, typ uint8, flags uint16, id, length uint32) error {
	if id == 0 {
		return errors.New("a stream frame for stream 0")
	}
	m.mu.Lock()
	st := m.streams[id]
	if flags&flagSYN != 0 {
		if st != nil {
			m.mu.Unlock()
			return fmt.Errorf("stream %d opened twice", id)
		}
		if id%2 == m.parity {
			m.mu.Unlock()
			return fmt.Errorf("stream %d opened with an id of this end's", id)
		}
		if m.closed {
			m.mu.Unlock()
			return nil
		}
		st = newStream(m, id)
		m.streams[id] = st
		select {
		case m.accept <- st:
		default:
			delete(m.streams, id)
			st = nil
			_ = m.send(typeWindowUpdate, flagRST, id, 0, nil, true)
		}
	}
	m.mu.Unlock()

	if typ == typeWindowUpdate {
		if st != nil {
			st.addSendWindow(length)
		}
	} else if length > 0 {
		if st == nil {
			// A stream that is gone: its data is read and dropped.
			_, err := br.Discard(int(length))
			return err
		}
		if err := st.receive(br, length); err != nil {
			return err
		}
	}
	if st != nil && flags&(flagFIN|flagRST) != 0 {
		st.remoteClose(flags&flagRST != 0)
	}
	return nil
}

func (m *Mux) removeStream(id uint32) {
	m.mu.Lock()
	delete(m.streams, id)
	m.mu.Unlock()
}

// keepAliveLoop pings the other end every keepAliveInterval and closes the
// connection when a ping goes unanswered.
func (m *Mux) keepAliveLoop() {
	t := time.NewTicker(m.keepAlive)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
			if _, err := m.Ping(); err != nil {
				m.shutdown(err)
				return
			}
		}
	}
}

// Stream is one bidirectional stream of a Mux. It is a net.Conn.
type Stream struct {
	m  *Mux
	id uint32

	readWake  chan struct{} // a Read may proceed: data, a close or a new deadline
	writeWake chan struct{} // a Write may proceed: window, a close or a new deadline
	wlock     sync.Mutex    // one Write at a time, so writes do not interleave

	mu            sync.Mutex
	chunks        [][]byte // received, unread
	off           int      // read offset in chunks[0]
	recvWindow    uint32   // bytes the other end may still send
	consumed      uint32   // bytes read and not yet granted back
	sendWindow    uint32   // bytes this end may still send
	remoteFIN     bool
	reset         bool
	closed        bool // Close was called
	finSent       bool
	closeTimer    *time.Timer // resets the stream if the other end never closes
	sending       bool        // a Write is handing a data frame to the Mux
	finDeferred   bool        // Close left its FIN to that Write
	readDeadline  time.Time
	writeDeadline time.Time
}

func newStream(m *Mux, id uint32) *Stream {
	return &Stream{
		m: m, id: id,
		readWake:   make(chan struct{}, 1),
		writeWake:  make(chan struct{}, 1),
		recvWindow: initialWindow,
		sendWindow: initialWindow,
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *Stream) notifyAll() {
	wake(s.readWake)
	wake(s.writeWake)
}

// StreamID is the stream's id on its connection.
func (s *Stream) StreamID() uint32 { return s.id }

// receive reads a data frame's body from br into the stream's buffer.
func (s *Stream) receive(br *bufio.Reader, length uint32) error {
	s.mu.Lock()
	if length > s.recvWindow {
		s.mu.Unlock()
		return fmt.Errorf("stream %d sent %d bytes with %d left in its window", s.id, length, s.recvWindow)
	}
	s.recvWindow -= length
	drop := s.closed || s.reset
	// Data for a stream closed here (a client gone while its result
	// streams): reset it, so that the sender stops at once instead of
	// waiting for window until closeTimeout.
	resetNow := s.closed && !s.reset && !s.remoteFIN
	if resetNow {
		s.reset = true
		if s.closeTimer != nil {
			s.closeTimer.Stop()
		}
	}
	s.mu.Unlock()
	if resetNow {
		s.m.removeStream(s.id)
		_ = s.m.send(typeWindowUpdate, flagRST, s.id, 0, nil, true)
	}
	if drop {
		_, err := br.Discard(int(length))
		return err
	}
	chunk := getBuf(int(length))[:length]
	if _, err := io.ReadFull(br, chunk); err != nil {
		putBuf(chunk)
		return err
	}
	s.mu.Lock()
	if s.closed || s.reset {
		s.mu.Unlock()
		putBuf(chunk)
		return nil
	}
	s.chunks = append(s.chunks, chunk)
	s.mu.Unlock()
	wake(s.readWake)
	return nil
}

func (s *Stream) addSendWindow(delta uint32) {
	s.mu.Lock()
	s.sendWindow = uint32(min(uint64(s.sendWindow)+uint64(delta), 1<<32-1))
	s.mu.Unlock()
	wake(s.writeWake)
}

// remoteClose records the other end's FIN or RST.
func (s *Stream) remoteClose(reset bool) {
	s.mu.Lock()
	if reset {
		s.reset = true
		s.releaseLocked()
	} else {
		s.remoteFIN = true
	}
	gone := s.reset || s.finSent
	if gone && s.closeTimer != nil {
		s.closeTimer.Stop()
	}
	s.mu.Unlock()
	if gone {
		s.m.removeStream(s.id)
	}
	s.notifyAll()
}

// releaseLocked gives the unread chunks back to the pool.
func (s *Stream) releaseLocked() {
	for _, c := range s.chunks {
		putBuf(c)
	}
	s.chunks, s.off = nil, 0
}

// Read reads data the other end sent. After the other end closes its side,
// Read returns what is left and then io.EOF.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	if err := s.waitDataLocked(); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	n := 0
	for n < len(p) && len(s.chunks) > 0 {
		c := s.chunks[0]
		k := copy(p[n:], c[s.off:])
		n += k
		s.off += k
		if s.off == len(c) {
			putBuf(c)
			s.chunks[0] = nil
			s.chunks = s.chunks[1:]
			s.off = 0
		}
	}
	if len(s.chunks) == 0 {
		s.chunks = nil
	}
	grant := s.consumeLocked(n)
	s.mu.Unlock()
	s.sendGrant(grant)
	return n, nil
}

// WriteTo writes everything the other end sends to w until it closes its
// side, without copying through a buffer of the caller's (io.Copy uses it).
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		s.mu.Lock()
		if err := s.waitDataLocked(); err != nil {
			s.mu.Unlock()
			if err == io.EOF {
				err = nil
			}
			return total, err
		}
		chunks := s.chunks
		off := s.off
		s.chunks, s.off = nil, 0
		s.mu.Unlock()
		var err error
		n := 0
		for i, c := range chunks {
			if err == nil {
				var k int
				k, err = w.Write(c[off:])
				total += int64(k)
			}
			n += len(c) - off
			off = 0
			putBuf(c)
			chunks[i] = nil
		}
		if err != nil {
			return total, err
		}
		// The window goes back only once the data is written on, so a
		// slow destination holds the other end back.
		s.mu.Lock()
		grant := s.consumeLocked(n)
		s.mu.Unlock()
		s.sendGrant(grant)
	}
}

// waitDataLocked returns nil once data is queued, or why none will come. It
// is called with s.mu held, which it releases while it waits.
func (s *Stream) waitDataLocked() error {
	for len(s.chunks) == 0 {
		if err := s.readErrLocked(); err != nil {
			wake(s.readWake) // for any other reader of the stream
			return err
		}
		dl := s.readDeadline
		s.mu.Unlock()
		err := s.wait(s.readWake, dl)
		s.mu.Lock()
		if err != nil {
			return err
		}
	}
	return nil
}

// sendGrant gives the other end grant more bytes of window, if any.
func (s *Stream) sendGrant(grant uint32) {
	if grant > 0 {
		_ = s.m.send(typeWindowUpdate, 0, s.id, grant, nil, false)
	}
}

// readErrLocked is the error a Read with no data returns, nil to wait.
func (s *Stream) readErrLocked() error {
	switch {
	case s.closed:
		return ErrStreamClosed
	case s.reset:
		return ErrStreamReset
	case s.remoteFIN:
		return io.EOF
	case s.m.IsClosed():
		return ErrMuxClosed
	}
	return nil
}

// consumeLocked counts n bytes read and returns the window to grant back,
// 0 until half the window has been read.
func (s *Stream) consumeLocked(n int) uint32 {
	s.consumed += uint32(n)
	if s.consumed < maxWindow/2 || s.remoteFIN || s.reset || s.closed {
		return 0
	}
	g := s.consumed
	s.consumed = 0
	s.recvWindow += g
	return g
}

// wait blocks until ch is signalled, the deadline passes or the connection
// closes.
func (s *Stream) wait(ch chan struct{}, deadline time.Time) error {
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ch:
		return nil
	case <-timeout:
		return os.ErrDeadlineExceeded
	case <-s.m.done:
		return nil // the caller sees the closed connection
	}
}

// Write sends p to the other end, waiting for window as needed.
func (s *Stream) Write(p []byte) (int, error) {
	s.wlock.Lock()
	defer s.wlock.Unlock()
	total := 0
	for len(p) > 0 {
		s.mu.Lock()
		for s.sendWindow == 0 {
			if err := s.writeErrLocked(); err != nil {
				s.mu.Unlock()
				wake(s.writeWake)
				return total, err
			}
			dl := s.writeDeadline
			s.mu.Unlock()
			if err := s.wait(s.writeWake, dl); err != nil {
				return total, err
			}
			s.mu.Lock()
		}
		if err := s.writeErrLocked(); err != nil {
			s.mu.Unlock()
			return total, err
		}
		if !s.writeDeadline.IsZero() && !time.Now().Before(s.writeDeadline) {
			s.mu.Unlock()
			return total, os.ErrDeadlineExceeded
		}
		n := min(len(p), maxFrameBody)
		if uint32(n) > s.sendWindow {
			n = int(s.sendWindow) // less than maxFrameBody, so it fits an int
		}
		s.sendWindow -= uint32(n)
		s.sending = true
		s.mu.Unlock()
		err := s.m.send(typeData, 0, s.id, uint32(n), p[:n], false)
		s.mu.Lock()
		s.sending = false
		fin := s.finDeferred
		s.finDeferred = false
		s.mu.Unlock()
		if fin {
			// Close ran while this frame was being sent: its FIN follows it.
			_ = s.m.send(typeWindowUpdate, flagFIN, s.id, 0, nil, false)
		}
		if err != nil {
			return total, err
		}
		total += n
		p = p[n:]
	}
	return total, nil
}

func (s *Stream) writeErrLocked() error {
	switch {
	case s.closed || s.finSent:
		return ErrStreamClosed
	case s.reset:
		return ErrStreamReset
	case s.m.IsClosed():
		return ErrMuxClosed
	}
	return nil
}

// Close closes the stream: the other end reads io.EOF after what was
// written, and what it sends from now on is dropped. If the other end does
// not close its side within closeTimeout, the stream is reset.
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.releaseLocked()
	sendFIN := !s.finSent && !s.reset
	s.finSent = true
	if sendFIN && s.sending {
		// A Write is sending a data frame; the FIN must not overtake it.
		s.finDeferred, sendFIN = true, false
	}
	gone := s.remoteFIN || s.reset
	s.mu.Unlock()
	s.notifyAll()
	if sendFIN {
		_ = s.m.send(typeWindowUpdate, flagFIN, s.id, 0, nil, false)
	}
	if gone {
		s.m.removeStream(s.id)
		return nil
	}
	s.mu.Lock()
	if !s.remoteFIN && !s.reset {
		s.closeTimer = time.AfterFunc(closeTimeout, s.closeTimedOut)
	}
	s.mu.Unlock()
	return nil
}

func (s *Stream) closeTimedOut() {
	s.mu.Lock()
	gone := s.remoteFIN || s.reset
	s.reset = true
	s.mu.Unlock()
	if !gone {
		s.m.removeStream(s.id)
		_ = s.m.send(typeWindowUpdate, flagRST, s.id, 0, nil, true)
	}
}

// LocalAddr is the connection's local address.
func (s *Stream) LocalAddr() net.Addr { return s.m.conn.LocalAddr() }

// RemoteAddr is the connection's remote address.
func (s *Stream) RemoteAddr() net.Addr { return s.m.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets when a waiting Read gives up; zero means never.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.readDeadline = t
	s.mu.Unlock()
	wake(s.readWake)
	return nil
}

// SetWriteDeadline sets when a Write waiting for window gives up; zero
// means never. A frame already handed to the connection is not taken back;
// the connection's own write timeout (writeTimeout) and the keepalive close
// a connection that stops moving.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	s.writeDeadline = t
	s.mu.Unlock()
	wake(s.writeWake)
	return nil
}

// Receive chunks and write batches come from size-classed pools, so a
// stream holds memory only while data waits in it.
var bufPools = [...]struct {
	size int
	pool sync.Pool
}{{size: 512}, {size: 4 << 10}, {size: 16 << 10}, {size: 64 << 10}}

func getBuf(n int) []byte {
	for i := range bufPools {
		p := &bufPools[i]
		if n <= p.size {
			if b, ok := p.pool.Get().(*[]byte); ok {
				return (*b)[:0]
			}
			return make([]byte, 0, p.size)
		}
	}
	return make([]byte, 0, n)
}

func putBuf(b []byte) {
	c := cap(b)
	for i := range bufPools {
		p := &bufPools[i]
		if c == p.size {
			b = b[:0]
			p.pool.Put(&b)
			return
		}
	}
}
