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
	"syscall"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
)

// ErrSpoolClosed is returned by Run and Flush once Close has been called.
var ErrSpoolClosed = errors.New("the session log spool is closed")

var errLocked = errors.New("locked by another process")

// maxWriteBytes bounds the events (by eventSize) the writer appends at once.
const maxWriteBytes = 1 << 20

// Spool is the gateway's durable queue of session events: Begin writes the
// start of a statement to the current segment file before the statement is
// forwarded (write-ahead), Record puts an event (a statement's final event
// with its outcome, a connection opened or closed) in memory, a writer
// goroutine appends the buffered events to the segment in batches and
// fsyncs each batch, start records with it, and Run uploads what is on
// disk, oldest first, until the server acknowledges it.
//
// Guarantees and their limits:
//   - A crash of the gateway process (kill -9, a panic, the OOM killer)
//     loses no statement that was forwarded: Begin has written its start
//     record to the file (one write(2), no fsync: the kernel keeps it)
//     before it returns, and the engines forward a statement only after
//     Begin returned. After the restart, a start record with no final
//     event after it is delivered with outcome "outcome unknown" and
//     words saying the gateway stopped before the answer was recorded (the
//     statement may have run, even committed). What a crash loses is the
//     outcome of the statements answered in the last flush interval, not
//     the statements.
//   - A power loss (or a kernel crash) can lose what was not fsynced: the
//     last batch, start records included, at most one flush interval
//     (50 ms) of them. WithSyncAlways (--spool-sync=always) closes that
//     too: Begin returns only once its start record is fsynced, and Record
//     once its event is, at the price of an fsync before each statement
//     and after each answer (concurrent sessions share them).
//   - Begin fails (a *SpoolError: the engine refuses the statement,
//     forwarding nothing) when the spool is closed, the record would take
//     it over WithMaxSize, Err reports a problem, or the write fails;
//     under WithFailOpen it counts the loss (Stats.Dropped), logs it, and
//     lets the statement run. A failed fsync cuts the segment back to its
//     durable end, start records written since included (their final
//     events, still in memory, are written once the disk works).
//   - Record never drops an event (unless WithFailOpen) and never writes to
//     disk itself. When the in-memory buffer is full (WithMaxBuffer) it waits
//     for the writer, which normally takes a few milliseconds; if the disk
//     keeps failing, it waits until the disk works again: a stalled session
//     is preferred to a lost audit record.
//   - When a batch cannot be persisted (a write or fsync fails, or it would
//     take the spool over WithMaxSize), the writer keeps it in memory and
//     retries, and Err reports why until a write succeeds: the engines then
//     refuse new statements (fail closed). The log says so once when it
//     starts and once when it ends, not per event. Under WithFailOpen the
//     batch is dropped instead, counted in Stats and logged, and Err stays
//     nil.
//   - An event is durable once Flush returns after it was recorded, or at the
//     latest one flush interval (50 ms) plus one fsync after Record; with
//     WithSyncAlways, once Record returns. Events recorded but not yet
//     written are lost if the process is killed (for a statement, its start
//     record stands in for it, above), and a power loss can lose the last
//     unsynced batch; Close writes them.
//   - Delivery is at least once, in the order events were recorded: Run sends
//     a batch until Upload succeeds, then records the acknowledged position in
//     the "ack" file. A batch acknowledged by the server just before a crash,
//     but not yet in the ack file, is sent again; the server ignores event
//     ids it already holds.
//   - A statement is delivered once, as its final event (whose StartID names
//     its start record), when that is on disk in time: Run never
//     acknowledges past a start record whose final event is recorded but
//     not yet written, and waits at one whose statement has run less than
//     WithRunningAfter (1 s). A statement running longer has its start
//     delivered as an event of its own with no outcome ("running"), then
//     its final event when it comes; so has one whose final event cannot
//     be written while the spool is at its size cap. If the gateway stops
//     after such a start was delivered and before its final event was
//     written, the server keeps it as running: nothing tells it the
//     outcome.
//   - An event the server rejects for good (Upload returns a *RejectedError,
//     for example for an unknown session) is not retried forever: it is
//     appended to rejected.jsonl in the spool directory and logged, and
//     delivery goes on.
//   - Delivered events are freed promptly: a segment is removed once the
//     server has acknowledged all of it, and the segment being written is
//     closed and removed as soon as it is fully acknowledged and holds
//     FreeAfter (64 KiB), or at once while the disk is full.
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
// file). Begin, Record, Flush, Pending and Close are safe for concurrent
// use; Run runs at most once at a time.
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
	diskBytes   int64         // bytes of the segment files on disk
	segSize     map[uint64]int64
	health      error  // non-nil while batches cannot be persisted (fail closed)
	dropped     uint64 // events dropped under WithFailOpen, or lost at Close
	dropping    bool   // a fail-open drop episode is going on
	noSegment   bool   // the writer removed its segment and has not made the next yet

	// Write-ahead (Begin, writeahead.go).
	starts        map[string]startEntry // start records whose final event is not on disk
	unsynced      bool                  // data was written since the writer's last fsync began
	lastBegin     position              // the end of the last start record written
	cutGen        uint64                // bumped when unsynced data is cut after a failed fsync
	droppedStarts uint64                // start records not written under WithFailOpen
	beginFailing  bool                  // a run of Begin failures is going on (logged once)
	healthByBegin bool                  // health was set by a Begin over the size cap (clearFullIfRoom)

	kick       chan struct{} // wakes the writer
	freed      chan struct{} // wakes the writer: deliveries were acknowledged
	closing    chan struct{} // closed by Close
	writerDone chan struct{}
	runDone    sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error

	// fileMu guards the segment being written: Begin appends start
	// records to it on its caller's goroutine, the writer goroutine its
	// batches, and the writer alone fsyncs, rotates and removes it. It is
	// taken before mu, never while mu is held.
	fileMu     sync.Mutex
	f          *os.File // the segment being written (nil between a removal and the next)
	size       int64    // its size: everything written, fsynced or not
	fileClosed bool     // Close has closed f

	enc []byte // the writer's encoding buffer

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
		freed:      make(chan struct{}, 1),
		segSize:    map[uint64]int64{},
		starts:     map[string]startEntry{},
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
// acknowledged and empty segments, counts the events still to send, finds
// the start records with no final event after them (the process stopped
// before writing it: they are delivered as "outcome unknown"), and starts
// a new segment for this process to write.
//
// Its memory is bounded by what the spool holds (WithMaxSize): the start
// records not yet matched by a final event, which are only those of the
// statements that ran at once, and those left without one.
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
	orphans := map[string]struct{}{}
	for i, n := range segs {
		path := filepath.Join(s.dir, segmentName(n))
		finals := 0 // unacknowledged records that are not start records
		sc, err := scanSegmentVisit(path, func(off int64, payload []byte) {
			if n < ack.seg || (n == ack.seg && off < ack.off) {
				return
			}
			id, startID, isStart := recordIDs(payload)
			switch {
			case isStart:
				orphans[id] = struct{}{}
			case startID != "":
				delete(orphans, startID)
				finals++
			default:
				finals++
			}
		})
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
		s.pending += finals
		keep = append(keep, n)
		s.segSize[n] = sc.validEnd
		s.diskBytes += sc.validEnd
	}
	if removed {
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	for id := range orphans {
		s.starts[id] = startEntry{state: startOrphaned}
	}
	s.pending += len(orphans)
	if len(orphans) > 0 {
		s.log.Warn("the session log spool holds statements whose answer was never recorded (the gateway stopped while they ran); they are delivered with outcome unknown",
			"dir", s.dir, "statements", len(orphans))
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
	s.diskBytes += headerSize
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
	s.finalRecordedLocked(&ev)
	n, target := len(s.buf), s.recorded
	s.mu.Unlock()
	if s.cfg.syncAlways {
		s.wake()
		s.waitSettled(target)
		return
	}
	if n == 1 || n >= s.cfg.writeBatch {
		s.wake()
	}
}

// waitSettled waits until the writer has written (or, failing open, dropped)
// the first target events recorded, or has stopped.
func (s *Spool) waitSettled(target uint64) {
	for {
		s.mu.Lock()
		done, ch := s.written+s.dropped >= target, s.synced
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-s.writerDone:
			return
		}
	}
}

// Err reports why the spool cannot persist events at the moment (a write or
// fsync fails, or the spool is at its size cap), or nil when it can. It
// implements HealthReporter: while it is non-nil the engines refuse new
// statements. Under WithFailOpen it is always nil.
func (s *Spool) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

// SpoolStats are counters of a spool, for metrics.
type SpoolStats struct {
	Pending   int    // events recorded, not yet acknowledged by the server
	DiskBytes int64  // bytes of the segment files
	Dropped   uint64 // events and start records dropped under WithFailOpen (or lost at Close)
	Healthy   bool   // Err is nil
}

// Stats returns the spool's counters.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SpoolStats{Pending: s.pending, DiskBytes: s.diskBytes, Dropped: s.dropped + s.droppedStarts, Healthy: s.health == nil}
}

// SpoolError is why a spool cannot persist events. Its message is safe to
// show to a session's client (it names no path); Unwrap gives the cause,
// which the spool's log line holds in full.
type SpoolError struct {
	Full   bool  // at the size cap (WithMaxSize), rather than a failing disk
	Closed bool  // the spool is closed: the gateway is stopping
	Cause  error // the write error, or the cap
}

func (e *SpoolError) Error() string {
	if e.Closed {
		return "the gateway cannot record statements: its session log spool is closed, as the gateway is stopping"
	}
	if e.Full {
		return "the gateway cannot record statements: its session log spool is full (events not yet delivered to the server); new statements are refused until it has room"
	}
	return "the gateway cannot record statements: writing its session log spool fails; new statements are refused until it works again"
}

// Unwrap returns the cause.
func (e *SpoolError) Unwrap() error { return e.Cause }

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

// Flush waits until every event recorded, and every start record written,
// before the call is on disk (fsynced). It returns ctx's error if ctx ends
// first.
func (s *Spool) Flush(ctx context.Context) error {
	s.mu.Lock()
	target, begun, gen := s.recorded, s.lastBegin, s.cutGen
	if s.written >= target && s.durableLocked(begun) {
		s.mu.Unlock()
		return nil
	}
	if s.written < target && s.written+s.dropped >= target {
		s.mu.Unlock()
		return s.lostErr()
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
		lost := !done && s.written+s.dropped >= target
		cut := s.cutGen != gen
		synced := s.durableLocked(begun)
		s.mu.Unlock()
		if done && cut {
			return errors.New("session start records were lost: an fsync of the spool failed")
		}
		if done && synced {
			return nil
		}
		if lost {
			return s.lostErr()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.writerDone:
			s.mu.Lock()
			done, werr := s.written >= target && s.durableLocked(begun), s.writeErr
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

// lostErr says why events recorded before a Flush were not written.
func (s *Spool) lostErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeErr != nil {
		return s.writeErr
	}
	return errors.New("session events were dropped: the spool fails open (--spool-full=allow) and could not persist them")
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
		s.fileMu.Lock()
		s.fileClosed = true
		if s.f != nil {
			if err := s.f.Close(); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
		s.fileMu.Unlock()
		s.lock.Close()
	})
	return s.closeErr
}

// writeLoop takes the buffered events in batches, appends them to the
// current segment and fsyncs it, until Close. It also fsyncs the start
// records Begin wrote, with the next batch or, when no event comes, within
// one flush interval.
func (s *Spool) writeLoop() {
	defer close(s.writerDone)
	for {
		// Wait for an event, or start records to fsync.
		s.mu.Lock()
		for len(s.buf) == 0 && !s.unsynced && !s.closed {
			s.mu.Unlock()
			select {
			case <-s.kick:
			case <-s.freed:
				s.freeDelivered(false)
				s.clearFullIfRoom()
			}
			s.mu.Lock()
		}
		if len(s.buf) == 0 && !s.unsynced { // closed, and nothing left
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()

		s.linger()

		s.mu.Lock()
		// At most maxWriteBytes at once: a batch must fit in the space a
		// full disk gets back.
		n, size := len(s.buf), 0
		for i := range s.buf {
			sz := eventSize(&s.buf[i])
			if i > 0 && size+sz > maxWriteBytes {
				n = i
				break
			}
			size += sz
		}
		var batch []Event
		if n == len(s.buf) {
			batch = s.buf
			s.buf, s.spare = s.spare[:0], nil
			s.bufBytes = 0
		} else {
			batch = slices.Clone(s.buf[:n])
			s.buf = slices.Delete(s.buf, 0, n)
			s.bufBytes -= size
		}
		s.space.Broadcast()
		s.mu.Unlock()

		seg, end, ok := s.writeBatch(batch)

		s.mu.Lock()
		if ok {
			s.written += uint64(len(batch))
			if seg == s.writeSeg && end > s.writeSize {
				s.writeSize = end
			}
		} else {
			s.dropped += uint64(len(batch))
		}
		// The final events of the batch are on disk (or dropped): their
		// start records need not hold the reader back any more.
		s.finalsSettledLocked(batch, ok)
		close(s.synced)
		s.synced = make(chan struct{})
		clear(batch)
		if s.spare == nil {
			s.spare = batch[:0]
		}
		s.mu.Unlock()

		if ok && !s.rotateIfFull() {
			s.freeDelivered(false)
		}
	}
}

// linger waits, up to the flush interval, for a full batch, a Flush or Close.
func (s *Spool) linger() {
	t := time.NewTimer(s.cfg.flushInterval)
	defer t.Stop()
	for {
		s.mu.Lock()
		ready := len(s.buf) >= s.cfg.writeBatch || s.flushWanted > 0 || s.closed || s.cfg.syncAlways
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

// writeBatch appends batch (which may be empty: start records alone want
// an fsync) to the current segment and fsyncs it, retrying with backoff
// until the disk accepts it. It returns the segment and the size the fsync
// covered. After Close it gives up after a few more attempts and reports
// false (the events are lost and logged).
func (s *Spool) writeBatch(batch []Event) (uint64, int64, bool) {
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
	var seg uint64
	var end int64
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			// A full disk frees up as deliveries are acknowledged.
			s.freeDelivered(true)
		}
		var err error
		seg, end, err = s.appendDurable(s.enc)
		if err == nil {
			s.setHealthy()
			break
		}
		closed := s.isClosed()
		if len(batch) == 0 && (s.cfg.failOpen || closed) {
			// Start records alone: the failed fsync cut them (see
			// cutUnsynced); nothing is left to write.
			s.log.Error("the session log spool cannot fsync the starts of statements", "dir", s.dir, "err", err)
			return 0, 0, false
		}
		if s.cfg.failOpen && !closed {
			s.dropBatch(batch, err)
			s.trimEncoding()
			return 0, 0, false
		}
		if closed && attempt >= 3 {
			s.mu.Lock()
			s.writeErr = fmt.Errorf("%d session events could not be written to the spool %s and are lost: %w", len(batch), s.dir, err)
			s.mu.Unlock()
			for i := range batch {
				s.log.Error("a session event could not be written to the spool and is lost", "id", batch[i].ID, "session", batch[i].SessionID)
			}
			s.trimEncoding()
			return 0, 0, false
		}
		s.setUnhealthy(err)
		// The start records written meanwhile must still reach the
		// reader: their delivery is what frees the space this batch needs.
		s.syncWritten()
		if closed {
			delay = min(delay, time.Second)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.freed:
			t.Stop()
		case <-s.closing:
			t.Stop()
		}
		delay = min(2*delay, s.cfg.maxBackoff)
	}
	s.trimEncoding()
	return seg, end, true
}

// errOverCap is the cause of a SpoolError at the size cap.
type errOverCap struct{ size, limit int64 }

func (e errOverCap) Error() string {
	return fmt.Sprintf("the spool holds %d bytes and its cap is %d bytes (--spool-max-size); it frees space as the server acknowledges events", e.size, e.limit)
}

// reserve counts n more bytes on disk, or reports an error when they would
// take the spool over its size cap.
func (s *Spool) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.diskBytes+n > s.cfg.maxSize {
		return errOverCap{s.diskBytes, s.cfg.maxSize}
	}
	s.diskBytes += n
	return nil
}

// unreserve gives back bytes counted by reserve that were not written.
func (s *Spool) unreserve(n int64) {
	s.mu.Lock()
	s.diskBytes -= n
	s.mu.Unlock()
}

// setUnhealthy makes Err report cause; the first failure of a run of them
// is logged, the others are not.
func (s *Spool) setUnhealthy(cause error) {
	var over errOverCap
	full := errors.As(cause, &over) || errors.Is(cause, syscall.ENOSPC)
	s.mu.Lock()
	first := s.health == nil
	s.health, s.healthByBegin = &SpoolError{Full: full, Cause: cause}, false
	s.mu.Unlock()
	if first {
		s.log.Error("the session log spool cannot persist events; new statements are refused (fail closed) until it can: free disk space, raise --spool-max-size, or restore the connection to the server; events already accepted are kept in memory and written when it can",
			"dir", s.dir, "err", cause)
	}
}

// setHealthy clears Err, and logs the end of a run of failures or drops.
func (s *Spool) setHealthy() {
	s.mu.Lock()
	was, dropping, dropped := s.health, s.dropping, s.dropped
	s.health, s.dropping, s.healthByBegin = nil, false, false
	s.mu.Unlock()
	if was != nil {
		s.log.Info("the session log spool persists events again; statements are accepted again", "dir", s.dir)
	}
	if dropping {
		s.log.Error("the session log spool persists events again, after dropping some (--spool-full=allow)", "dir", s.dir, "dropped_total", dropped)
	}
}

// syncWritten fsyncs what was written to the current segment (start
// records) and lets the reader read it. The writer calls it while a batch
// cannot be written, so that deliveries go on and free space.
func (s *Spool) syncWritten() {
	seg, end, err := s.appendDurable(nil)
	if err != nil {
		return
	}
	s.mu.Lock()
	if seg == s.writeSeg && end > s.writeSize {
		s.writeSize = end
	}
	close(s.synced)
	s.synced = make(chan struct{})
	s.mu.Unlock()
}

// clearFullIfRoom ends an unhealthy spell that a start record over the size
// cap began (Begin sets it, so that the engines refuse statements at once),
// once deliveries have brought the spool back under its cap. A writer's
// own failure clears only when it writes again.
func (s *Spool) clearFullIfRoom() {
	s.mu.Lock()
	full := s.healthByBegin && s.diskBytes < s.cfg.maxSize
	s.mu.Unlock()
	if full {
		s.setHealthy()
	}
}

// dropBatch drops a batch the disk did not take, failing open.
func (s *Spool) dropBatch(batch []Event, cause error) {
	s.mu.Lock()
	first := !s.dropping
	s.dropping = true
	total := s.dropped + uint64(len(batch))
	s.mu.Unlock()
	if first {
		s.log.Error("SESSION EVENTS ARE BEING DROPPED: the session log spool cannot persist them and the gateway fails open (--spool-full=allow); statements run unrecorded until it can",
			"dir", s.dir, "err", cause, "dropped", len(batch), "dropped_total", total)
	} else {
		s.log.Error("session events dropped (--spool-full=allow)", "dropped", len(batch), "dropped_total", total)
	}
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

// appendDurable appends b (which may be empty) to the current segment,
// after everything written to it (start records included), and fsyncs the
// segment outside fileMu, so that Begin does not wait for the disk. It
// returns the segment and the size the fsync covered. On a failed write it
// cuts the segment back to where b began, and on a failed fsync to its
// durable end (cutUnsynced), so a retry never leaves a partial record in
// the middle.
func (s *Spool) appendDurable(b []byte) (uint64, int64, error) {
	if s.failAppend != nil {
		if err := s.failAppend(); err != nil {
			return 0, 0, err
		}
	}
	s.fileMu.Lock()
	if s.f == nil {
		if err := s.nextSegment(); err != nil {
			s.fileMu.Unlock()
			return 0, 0, err
		}
	}
	if len(b) > 0 {
		n := int64(len(b))
		if err := s.reserve(n); err != nil {
			s.fileMu.Unlock()
			return 0, 0, err
		}
		if _, err := s.f.WriteAt(b, s.size); err != nil {
			_ = s.f.Truncate(s.size)
			s.unreserve(n)
			s.fileMu.Unlock()
			return 0, 0, err
		}
		s.size += n
	}
	f, end := s.f, s.size
	s.mu.Lock()
	seg := s.writeSeg
	s.unsynced = false
	s.mu.Unlock()
	s.fileMu.Unlock()
	// Only the writer removes or closes f, so it stays open meanwhile.
	if err := f.Sync(); err != nil {
		s.cutUnsynced(f)
		return 0, 0, err
	}
	return seg, end, nil
}

// cutUnsynced cuts the segment f back to its durable end after a failed
// fsync: what was written after it may not be on disk, whatever the page
// cache says. Start records written since are lost with it (their
// statements' final events are still recorded); Begin calls waiting for
// an fsync of theirs (WithSyncAlways) and Flush report it.
func (s *Spool) cutUnsynced(f *os.File) {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.f != f {
		return
	}
	s.mu.Lock()
	durable := s.writeSize
	s.mu.Unlock()
	if s.size <= durable {
		return
	}
	if err := f.Truncate(durable); err != nil {
		s.log.Warn("cutting a session log spool segment back to its durable end failed", "err", err)
		return
	}
	s.mu.Lock()
	s.diskBytes -= s.size - durable
	s.cutGen++
	s.mu.Unlock()
	s.size = durable
}

// rotateIfFull starts the next segment once the current one holds
// WithSegmentSize bytes, and reports whether it did. It fsyncs the current
// segment first (start records written since the batch's fsync are in
// it), so the reader may read it to its end once writeSeg moves on. On
// failure the writer keeps appending to the current segment and tries
// again after the next batch.
func (s *Spool) rotateIfFull() bool {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.f == nil || s.size < s.cfg.segmentSize {
		return false
	}
	s.mu.Lock()
	next, durable := s.writeSeg+1, s.writeSize
	s.mu.Unlock()
	if s.size > durable {
		if err := s.f.Sync(); err != nil {
			s.log.Error("fsyncing a session log spool segment failed; appending to it", "dir", s.dir, "err", err)
			return false
		}
	}
	f, err := createSegment(s.dir, next)
	if err != nil {
		s.log.Error("starting a new session log spool segment failed; appending to the current one", "dir", s.dir, "err", err)
		_ = os.Remove(filepath.Join(s.dir, segmentName(next)))
		return false
	}
	old, oldSize := s.f, s.size
	s.f, s.size = f, headerSize
	s.mu.Lock()
	s.segSize[s.writeSeg] = oldSize
	s.diskBytes += headerSize
	s.writeSeg, s.writeSize = next, headerSize
	s.segs = append(s.segs, next)
	s.unsynced = false // what was written is in the old segment, fsynced
	close(s.synced)
	s.synced = make(chan struct{})
	s.mu.Unlock()
	if err := old.Close(); err != nil {
		s.log.Warn("closing a session log spool segment failed", "err", err)
	}
	return true
}

// freeDelivered removes the segment being written once the server has
// acknowledged all of it, if it holds FreeAfter bytes or more (any size
// when force), and starts the next one. It removes first and creates
// second, so that a full disk gets its space back; if the creation fails,
// the next write tries again. Removing a delivered segment before the ack
// file says so is safe: a restart resumes at the first segment on disk.
func (s *Spool) freeDelivered(force bool) {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.f == nil {
		return
	}
	s.mu.Lock()
	old, size := s.writeSeg, s.size
	delivered := s.ack.seg > old || (s.ack.seg == old && s.ack.off >= size)
	s.mu.Unlock()
	if !delivered || size <= headerSize || (!force && size < FreeAfter) {
		return
	}
	if err := s.f.Close(); err != nil {
		s.log.Warn("closing a session log spool segment failed", "err", err)
	}
	s.f = nil
	if err := os.Remove(filepath.Join(s.dir, segmentName(old))); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("removing a delivered session log spool segment failed", "segment", segmentName(old), "err", err)
	}
	s.mu.Lock()
	s.diskBytes -= size
	s.noSegment = true
	if i, found := slices.BinarySearch(s.segs, old); found {
		s.segs = slices.Delete(s.segs, i, i+1)
	}
	s.mu.Unlock()
	_ = syncDir(s.dir)
	if err := s.nextSegment(); err != nil {
		s.log.Debug("starting a session log spool segment failed; the next write tries again", "dir", s.dir, "err", err)
	}
}

// nextSegment creates the segment after writeSeg and makes it the one
// written to. The caller holds fileMu.
func (s *Spool) nextSegment() error {
	s.mu.Lock()
	next := s.writeSeg + 1
	s.mu.Unlock()
	f, err := createSegment(s.dir, next)
	if err != nil {
		_ = os.Remove(filepath.Join(s.dir, segmentName(next)))
		return err
	}
	s.f, s.size = f, headerSize
	s.mu.Lock()
	s.writeSeg, s.writeSize = next, headerSize
	s.segs = append(s.segs, next)
	s.diskBytes += headerSize
	s.noSegment = false
	close(s.synced)
	s.synced = make(chan struct{})
	s.mu.Unlock()
	return nil
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
