package sessionlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
)

// ErrSpoolClosed is returned by Run and Flush once Close has been called.
var ErrSpoolClosed = errors.New("the session log spool is closed")

var errLocked = errors.New("locked by another process")

// Spool is the gateway's durable queue of session events: Record puts an
// event in memory, a writer goroutine appends the buffered events to a
// segment file in batches and fsyncs each batch, and Run uploads what is on
// disk, oldest first, until the server acknowledges it.
//
// Guarantees and their limits:
//   - Record never drops an event and never writes to disk itself. When the
//     in-memory buffer is full (WithMaxBuffer) it waits for the writer, which
//     normally takes a few milliseconds; if the disk keeps failing, it waits
//     until the disk works again: a stalled session is preferred to a lost
//     audit record.
//   - An event is durable once Flush returns after it was recorded, or at the
//     latest one flush interval (50 ms) plus one fsync after Record. Events
//     recorded but not yet written are lost if the process is killed; Close
//     writes them.
//   - Delivery is at least once, in the order events were recorded: Run sends
//     a batch until Upload succeeds, then records the acknowledged position in
//     the "ack" file. A batch acknowledged by the server just before a crash,
//     but not yet in the ack file, is sent again; the server ignores event
//     ids it already holds.
//   - An event the server rejects for good (Upload returns a *RejectedError,
//     for example for an unknown session) is not retried forever: it is
//     appended to rejected.jsonl in the spool directory and logged, and
//     delivery goes on.
//   - A crash can tear only the end of the newest segment; OpenSpool detects
//     it by length and CRC-32C and truncates it. A damaged record in an older
//     segment (a disk fault) ends that segment there; its remaining bytes are
//     kept in a .damaged file and an error is logged.
//
// The files hold the statements in plain text, on the gateway's own disk
// (directory mode 0700, files 0600). That is deliberate: the gateway already
// holds the database credentials, and a spool encrypted with a key kept only
// in memory could not be sent after the gateway restarts. The server
// encrypts the events at rest (see Store).
//
// One process at a time may open a spool directory (an flock on its "lock"
// file). Record, Flush, Pending and Close are safe for concurrent use; Run
// runs at most once at a time.
type Spool struct {
	dir  string
	cfg  spoolConfig
	log  *slog.Logger
	lock *os.File

	mu          sync.Mutex
	space       *sync.Cond // broadcast when the writer takes the buffer, and on Close
	buf         []Event    // recorded, not yet taken by the writer
	spare       []Event    // the writer's previous batch, reused as the next buffer
	bufBytes    int
	recorded    uint64 // events Record accepted since OpenSpool
	written     uint64 // of those, events fsynced to a segment
	pending     int    // events not yet acknowledged, in memory or on disk
	flushWanted int    // Flush calls waiting: the writer does not linger
	closed      bool
	running     bool          // a Run is active
	writeSeg    uint64        // the segment the writer appends to
	writeSize   int64         // its durable size: the reader reads up to here
	segs        []uint64      // segments on disk, ascending
	ack         position      // the next event not acknowledged
	synced      chan struct{} // closed (and replaced) whenever written data grows
	writeErr    error         // why events were lost at Close, if they were

	kick       chan struct{} // wakes the writer
	closing    chan struct{} // closed by Close
	writerDone chan struct{}
	runDone    sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error

	// Used by the writer goroutine only.
	f    *os.File // the segment being written
	size int64    // its durable size
	enc  []byte   // encoding buffer

	// failAppend, set by tests before the first Record, makes a write fail
	// when it returns an error.
	failAppend func() error
}

// OpenSpool opens (creating it if needed) the spool in dir, checks its
// files, truncates a torn tail left by a crash, and starts the writer. Events
// on disk that were not acknowledged are sent by the next Run.
func OpenSpool(dir string, opts ...SpoolOption) (*Spool, error) {
	const op = "sessionlog.OpenSpool"
	cfg := defaultSpoolConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if dir == "" {
		return nil, errs.E(op, errs.Invalid, "no session log spool directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, fmt.Sprintf("cannot create the session log spool directory %s", dir), err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, fmt.Sprintf("cannot restrict the session log spool directory %s to its owner", dir), err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, fmt.Sprintf("cannot open the lock file of the session log spool %s", dir), err)
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		if errors.Is(err, errLocked) {
			return nil, errs.E(op, errs.Conflict, fmt.Sprintf("the session log spool %s is in use by another process; give each gateway its own spool directory", dir))
		}
		return nil, errs.Wrap(op, errs.Unavailable, fmt.Sprintf("cannot lock the session log spool %s", dir), err)
	}
	s := &Spool{
		dir: dir, cfg: cfg, log: cfg.log, lock: lock,
		synced:     make(chan struct{}),
		kick:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	s.space = sync.NewCond(&s.mu)
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, errs.Wrap(op, errs.Unavailable, fmt.Sprintf("cannot open the session log spool %s", dir), err)
	}
	go s.writeLoop()
	return s, nil
}

// recover scans the segments on disk: it truncates torn tails, removes
// acknowledged and empty segments, counts the events still to send, and
// starts a new segment for this process to write.
func (s *Spool) recover() error {
	ack, haveAck, err := readAck(s.dir)
	if err != nil && !errors.Is(err, errBadRecord) {
		return fmt.Errorf("reading the ack file: %w", err)
	}
	if errors.Is(err, errBadRecord) {
		s.log.Warn("the session log spool's ack file is damaged; every event in the spool will be sent again (the server ignores duplicates)", "dir", s.dir)
	}
	if !haveAck {
		ack = position{}
	}
	segs, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	var keep []uint64
	removed := false
	start := position{} // where the reader starts: the first unacknowledged record
	for i, n := range segs {
		path := filepath.Join(s.dir, segmentName(n))
		sc, err := scanSegment(path)
		if err != nil {
			return fmt.Errorf("%s: %w; move it out of the spool directory if it does not belong there", path, err)
		}
		if sc.validEnd == 0 {
			// Its creation was interrupted before the header reached the disk.
			if err := os.Remove(path); err != nil {
				return err
			}
			removed = true
			continue
		}
		if sc.validEnd < sc.size {
			if err := s.truncateDamaged(path, sc, i == len(segs)-1); err != nil {
				return err
			}
		}
		// Count the records not yet acknowledged.
		unacked := 0
		first := int64(-1)
		for _, off := range sc.starts {
			if n > ack.seg || (n == ack.seg && off >= ack.off) {
				if first < 0 {
					first = off
				}
				unacked++
			}
		}
		if unacked == 0 {
			// Acknowledged or empty: nothing in it will be read again.
			if err := os.Remove(path); err != nil {
				return err
			}
			removed = true
			continue
		}
		if start.seg == 0 {
			start = position{seg: n, off: first}
		}
		s.pending += unacked
		keep = append(keep, n)
	}
	if removed {
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	// Always past the acknowledged segment: a new segment numbered like an
	// old, removed one would have its first records taken for acknowledged.
	next := ack.seg + 1
	if len(segs) > 0 {
		next = max(next, segs[len(segs)-1]+1)
	}
	f, err := createSegment(s.dir, next)
	if err != nil {
		return fmt.Errorf("creating a segment: %w", err)
	}
	s.f, s.size = f, headerSize
	s.writeSeg, s.writeSize = next, headerSize
	s.segs = append(keep, next)
	if start.seg == 0 {
		start = position{seg: next, off: headerSize}
	}
	s.ack = start
	return nil
}

// truncateDamaged cuts a segment after its last intact record. In the newest
// segment that is the torn tail of a crash. In an older one it is damage
// (the writer never leaves a segment with a partial record); the cut bytes
// are kept in a .damaged file for an operator.
func (s *Spool) truncateDamaged(path string, sc segmentScan, newest bool) error {
	lost := sc.size - sc.validEnd
	if newest {
		s.log.Warn("the session log spool ends with a torn record, as after a crash; truncating it (the events it held were never flushed)",
			"file", path, "offset", sc.validEnd, "bytes", lost)
	} else {
		s.log.Error("a session log spool segment is damaged; the events after the damage cannot be read and are kept in a .damaged file",
			"file", path, "offset", sc.validEnd, "bytes", lost)
		if err := copyTail(path, sc.validEnd, path+".damaged"); err != nil {
			return fmt.Errorf("saving the damaged part of %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(sc.validEnd); err != nil {
		return err
	}
	return f.Sync()
}

func copyTail(path string, from int64, to string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	b, err := io.ReadAll(io.NewSectionReader(src, from, 1<<62))
	if err != nil {
		return err
	}
	return writeFileSync(to, b)
}

// Record adds an event to the spool. It returns at once unless the memory
// buffer is full (see WithMaxBuffer), when it waits for the writer. An event
// recorded after Close is lost and logged.
func (s *Spool) Record(ev Event) {
	size := eventSize(&ev)
	s.mu.Lock()
	for !s.closed && len(s.buf) > 0 && (len(s.buf) >= s.cfg.maxBufferEvents || s.bufBytes+size > s.cfg.maxBufferBytes) {
		s.space.Wait()
	}
	if s.closed {
		s.mu.Unlock()
		s.log.Error("a session event was recorded after the spool was closed; it is lost", "id", ev.ID, "session", ev.SessionID)
		return
	}
	s.buf = append(s.buf, ev)
	s.bufBytes += size
	s.recorded++
	s.pending++
	n := len(s.buf)
	s.mu.Unlock()
	if n == 1 || n >= s.cfg.writeBatch {
		s.wake()
	}
}

// eventSize estimates the memory an event holds.
func eventSize(ev *Event) int {
	n := 256 + len(ev.ID) + len(ev.SessionID) + len(ev.ConnID) + len(ev.Kind) + len(ev.Statement) +
		len(ev.Database) + len(ev.Collection) + len(ev.Command) + len(ev.Outcome) + len(ev.ErrorCode) + len(ev.ErrorMsg)
	for _, p := range ev.Params {
		n += 16 + len(p)
	}
	return n
}

func (s *Spool) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Flush waits until every event recorded before the call is on disk. It
// returns ctx's error if ctx ends first.
func (s *Spool) Flush(ctx context.Context) error {
	s.mu.Lock()
	target := s.recorded
	if s.written >= target {
		s.mu.Unlock()
		return nil
	}
	s.flushWanted++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.flushWanted--
		s.mu.Unlock()
	}()
	s.wake()
	for {
		s.mu.Lock()
		done, ch := s.written >= target, s.synced
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.writerDone:
			s.mu.Lock()
			done, werr := s.written >= target, s.writeErr
			s.mu.Unlock()
			if done {
				return nil
			}
			if werr != nil {
				return werr
			}
			return ErrSpoolClosed
		}
	}
}

// Pending returns how many events are recorded but not yet acknowledged by
// the server, counting those still in memory.
func (s *Spool) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// Close writes the events still in memory, stops Run (an upload in flight is
// cancelled and will be sent again by the next Run), and closes the files.
// It returns an error if recorded events could not be written.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.space.Broadcast()
		s.mu.Unlock()
		close(s.closing)
		s.wake()
		<-s.writerDone
		s.runDone.Wait()
		s.mu.Lock()
		s.closeErr = s.writeErr
		s.mu.Unlock()
		if s.f != nil {
			if err := s.f.Close(); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
		s.lock.Close()
	})
	return s.closeErr
}

// writeLoop takes the buffered events in batches, appends them to the
// current segment and fsyncs it, until Close.
func (s *Spool) writeLoop() {
	defer close(s.writerDone)
	for {
		// Wait for an event.
		s.mu.Lock()
		for len(s.buf) == 0 && !s.closed {
			s.mu.Unlock()
			<-s.kick
			s.mu.Lock()
		}
		if len(s.buf) == 0 { // closed, and nothing left
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()

		s.linger()

		s.mu.Lock()
		batch := s.buf
		s.buf, s.spare = s.spare[:0], nil
		s.bufBytes = 0
		s.space.Broadcast()
		s.mu.Unlock()

		ok := s.writeBatch(batch)

		s.mu.Lock()
		if ok {
			s.written += uint64(len(batch))
			s.writeSize = s.size
			close(s.synced)
			s.synced = make(chan struct{})
		}
		clear(batch)
		s.spare = batch[:0]
		s.mu.Unlock()

		if ok && s.size >= s.cfg.segmentSize {
			s.rotate()
		}
	}
}

// linger waits, up to the flush interval, for a full batch, a Flush or Close.
func (s *Spool) linger() {
	t := time.NewTimer(s.cfg.flushInterval)
	defer t.Stop()
	for {
		s.mu.Lock()
		ready := len(s.buf) >= s.cfg.writeBatch || s.flushWanted > 0 || s.closed
		s.mu.Unlock()
		if ready {
			return
		}
		select {
		case <-t.C:
			return
		case <-s.kick:
		}
	}
}

// writeBatch appends batch to the current segment and fsyncs it, retrying
// with backoff until the disk accepts it. After Close it gives up after a
// few more attempts and reports false (the events are lost and logged).
func (s *Spool) writeBatch(batch []Event) bool {
	s.enc = s.enc[:0]
	for i := range batch {
		b, err := json.Marshal(&batch[i])
		if err != nil {
			// Event holds only strings, numbers and a time: only an
			// out-of-range time can fail. Keep the event without it.
			s.log.Error("a session event could not be encoded; its time is dropped", "id", batch[i].ID, "session", batch[i].SessionID, "err", err)
			ev := batch[i]
			ev.Time = time.Time{}
			b, _ = json.Marshal(&ev)
		}
		s.enc = appendRecord(s.enc, b)
	}
	delay := s.cfg.minBackoff
	for attempt := 1; ; attempt++ {
		err := s.appendDurable(s.enc)
		if err == nil {
			break
		}
		closed := s.isClosed()
		if closed && attempt >= 3 {
			s.mu.Lock()
			s.writeErr = fmt.Errorf("%d session events could not be written to the spool %s and are lost: %w", len(batch), s.dir, err)
			s.mu.Unlock()
			for i := range batch {
				s.log.Error("a session event could not be written to the spool and is lost", "id", batch[i].ID, "session", batch[i].SessionID)
			}
			s.trimEncoding()
			return false
		}
		s.log.Error("writing session events to the spool failed; retrying (recording waits once the memory buffer is full)",
			"dir", s.dir, "events", len(batch), "retry_in", delay, "err", err)
		if closed {
			delay = min(delay, time.Second)
		}
		time.Sleep(delay)
		delay = min(2*delay, s.cfg.maxBackoff)
	}
	s.trimEncoding()
	return true
}

func (s *Spool) trimEncoding() {
	if cap(s.enc) > 4<<20 {
		s.enc = nil // do not keep a buffer grown by one burst
	}
}

func (s *Spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// appendDurable writes b after the durable end of the current segment and
// fsyncs. On failure it cuts the segment back to its durable end, so a
// retry never leaves a partial record in the middle.
func (s *Spool) appendDurable(b []byte) error {
	if s.failAppend != nil {
		if err := s.failAppend(); err != nil {
			return err
		}
	}
	if _, err := s.f.WriteAt(b, s.size); err != nil {
		_ = s.f.Truncate(s.size)
		return err
	}
	if err := s.f.Sync(); err != nil {
		_ = s.f.Truncate(s.size)
		return err
	}
	s.size += int64(len(b))
	return nil
}

// rotate starts the next segment. The current one is complete and fsynced,
// so the reader may read it to its end once writeSeg moves on. On failure
// the writer keeps appending to the current segment and tries again after
// the next batch.
func (s *Spool) rotate() {
	s.mu.Lock()
	next := s.writeSeg + 1
	s.mu.Unlock()
	f, err := createSegment(s.dir, next)
	if err != nil {
		s.log.Error("starting a new session log spool segment failed; appending to the current one", "dir", s.dir, "err", err)
		_ = os.Remove(filepath.Join(s.dir, segmentName(next)))
		return
	}
	old := s.f
	s.f, s.size = f, headerSize
	s.mu.Lock()
	s.writeSeg, s.writeSize = next, headerSize
	s.segs = append(s.segs, next)
	close(s.synced)
	s.synced = make(chan struct{})
	s.mu.Unlock()
	if err := old.Close(); err != nil {
		s.log.Warn("closing a session log spool segment failed", "err", err)
	}
}

// segmentsAfter returns the first segment after n, if any.
func (s *Spool) segmentAfter(n uint64) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearch(s.segs, n)
	if found {
		i++
	}
	if i < len(s.segs) {
		return s.segs[i], true
	}
	return 0, false
}
