package sessionlog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
)

// Uploader sends a batch of events to the server and returns nil once the
// server has stored them. Any error makes the spool send the same batch
// again after a backoff, except a *RejectedError (see Run).
type Uploader interface {
	Upload(ctx context.Context, batch Batch) error
}

// UploaderFunc adapts a function to Uploader.
type UploaderFunc func(ctx context.Context, batch Batch) error

// Upload calls f.
func (f UploaderFunc) Upload(ctx context.Context, batch Batch) error { return f(ctx, batch) }

// Batch is a run of spooled events, kept as the JSON the spool wrote them
// in: the upload sends the bytes on without decoding and encoding every
// event again (the benchmark profile showed that round trip taking a tenth
// of the gateway's CPU).
type Batch struct {
	json []byte // a JSON array of events
	n    int
}

// Len is the number of events in the batch.
func (b Batch) Len() int { return b.n }

// JSON is the batch as a JSON array of events. The caller must not modify it.
func (b Batch) JSON() []byte { return b.json }

// Events decodes the batch.
func (b Batch) Events() ([]Event, error) {
	var evs []Event
	if err := json.Unmarshal(b.json, &evs); err != nil {
		return nil, fmt.Errorf("decoding a batch of session events: %w", err)
	}
	return evs, nil
}

// batchBuilder appends spooled records (each one event's JSON) into a Batch.
type batchBuilder struct {
	json []byte
	n    int
}

func (bb *batchBuilder) add(record []byte) {
	bb.sep()
	bb.json = append(bb.json, record...)
}

// addStart appends a start record as its Event's JSON.
func (bb *batchBuilder) addStart(record []byte) {
	bb.sep()
	bb.json = eventOfStart(bb.json, record)
}

func (bb *batchBuilder) sep() {
	if bb.n == 0 {
		bb.json = append(bb.json[:0], '[')
	} else {
		bb.json = append(bb.json, ',')
	}
	bb.n++
}

func (bb *batchBuilder) batch() Batch {
	if bb.n == 0 {
		return Batch{}
	}
	return Batch{json: append(bb.json, ']'), n: bb.n}
}

// Run delivers the spool to up until ctx ends or the spool is closed: it
// reads the events not yet acknowledged, oldest first, in batches (see
// WithUploadBatch), calls Upload, and after each success records the new
// acknowledged position durably and removes segments that hold only
// acknowledged events. A failed Upload is retried with exponential backoff
// (100 ms doubling to 10 s) while recording goes on; no event is skipped.
//
// Start records (Begin) are not sent when their statement's final event is
// on disk: Run waits at one whose final event is recorded but not yet
// written, so that nothing after it is acknowledged before the final event
// is durable, and at one whose statement has run less than
// WithRunningAfter. It sends the start record as an event of its own
// (Outcome empty) when the statement runs longer, or when the spool is at
// its size cap (the final event then follows as its own event); with
// Outcome "outcome unknown" when its final event was lost: dropped under
// WithFailOpen, or never written because the process stopped (OpenSpool
// finds those).
//
// If Upload returns an error that is (errors.As) a *RejectedError, the
// server stored the batch except the events it names, which it will never
// accept: those are appended to rejected.jsonl in the spool directory and
// logged, and the batch counts as delivered.
//
// Run returns nil when the spool is closed and ctx's error when ctx ends.
// Only one Run may be active at a time; another returns an error at once.
func (s *Spool) Run(ctx context.Context, up Uploader) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrSpoolClosed
	case s.running:
		s.mu.Unlock()
		return errors.New("the session log spool is already being delivered by another Run")
	}
	s.running = true
	s.runDone.Add(1)
	start := s.ack
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
		s.runDone.Done()
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	result := func() error {
		if s.isClosed() {
			return nil
		}
		return ctx.Err()
	}

	r := &spoolReader{s: s, pos: start}
	defer r.close()
	for {
		batch, next, err := r.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return result()
			}
			return err
		}
		delay := s.cfg.minBackoff
		for attempt := 1; ; attempt++ {
			err := up.Upload(ctx, batch)
			if err == nil {
				break
			}
			var rej *RejectedError
			if errors.As(err, &rej) {
				if err = s.keepRejected(batch, rej); err == nil {
					break
				}
			}
			if ctx.Err() != nil {
				return result()
			}
			lvl := slog.LevelDebug
			if attempt == 1 || attempt%30 == 0 {
				lvl = slog.LevelWarn // once, then about once a minute
			}
			s.log.Log(ctx, lvl, "uploading session events failed; retrying", "events", batch.Len(),
				"spool_segment", segmentName(start.seg), "attempt", attempt, "retry_in", delay, "err", err)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return result()
			}
			// Uploads retry at most every maxUploadBackoff, so the log is
			// readable soon after the server or its store is back.
			delay = min(2*delay, s.cfg.maxBackoff, maxUploadBackoff)
		}
		s.acknowledge(next, r.counted)
		s.forgetStarts(r.forget)
		start = next
	}
}

// maxUploadBackoff bounds the wait between upload attempts: a failed upload
// costs little, and events should reach the server soon after it is back.
const maxUploadBackoff = 2 * time.Second

// acknowledge records that everything before pos was delivered: in memory,
// in the ack file, and by removing segments before pos.
func (s *Spool) acknowledge(pos position, n int) {
	s.mu.Lock()
	s.ack = pos
	s.pending -= n
	s.mu.Unlock()
	if err := writeAck(s.dir, pos); err != nil {
		// The events were delivered; after a restart those of a segment
		// still on disk would be sent again, which the server tolerates.
		s.log.Warn("recording delivered session events in the spool failed; they may be sent again after a restart", "dir", s.dir, "err", err)
	}
	// Segments wholly before pos are delivered: removing them is safe even
	// when the ack file could not be written (a restart resumes at the
	// first segment on disk), and it is what frees a full disk.
	s.mu.Lock()
	var drop []uint64
	for len(s.segs) > 0 && s.segs[0] < pos.seg && s.segs[0] < s.writeSeg {
		drop = append(drop, s.segs[0])
		s.diskBytes -= s.segSize[s.segs[0]]
		delete(s.segSize, s.segs[0])
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	for _, n := range drop {
		if err := os.Remove(filepath.Join(s.dir, segmentName(n))); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("removing a delivered session log spool segment failed", "segment", segmentName(n), "err", err)
		}
	}
	// The writer may free the segment it writes, or retry a batch the disk
	// refused.
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// keepRejected appends the events the server rejected for good to
// rejected.jsonl (mode 0600), so that no audit record disappears, and logs
// them by id.
func (s *Spool) keepRejected(b Batch, rej *RejectedError) error {
	batch, err := b.Events()
	if err != nil {
		return err
	}
	reasons := make(map[string]string, len(rej.Rejected))
	for _, r := range rej.Rejected {
		reasons[r.ID] = r.Reason
	}
	var out []byte
	for i := range batch {
		reason, ok := reasons[batch[i].ID]
		if !ok {
			continue
		}
		b, err := json.Marshal(struct {
			Reason string `json:"reason"`
			Event  *Event `json:"event"`
		}{reason, &batch[i]})
		if err != nil {
			return err
		}
		out = append(append(out, b...), '\n')
		s.log.Error("the server rejected a session event; it is kept in the spool's rejected.jsonl",
			"id", batch[i].ID, "session", batch[i].SessionID, "reason", reason)
	}
	if len(out) == 0 {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(s.dir, rejectedName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(out); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// spoolReader reads durable events from the spool's segments, in order.
type spoolReader struct {
	s      *Spool
	pos    position // the next record to read
	f      *os.File // segment pos.seg, opened lazily
	sealed int64    // pos.seg's size once the writer has moved past it, else -1
	br     *bufio.Reader
	buf    []byte

	// Of the last batch read: how many of its events count as Pending
	// (running start records do not), and the start records in it that
	// stand for lost final events, forgotten once it is acknowledged.
	counted int
	forget  []string
	// retry, when not zero, is when to read again without new data: the
	// reader waits at a start record.
	retry time.Duration
}

func (r *spoolReader) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// next returns the next batch and the position after it, waiting until
// there is at least one durable event.
func (r *spoolReader) next(ctx context.Context) (Batch, position, error) {
	for {
		r.s.mu.Lock()
		ch := r.s.synced
		r.s.mu.Unlock()
		batch, err := r.read()
		if err != nil {
			return Batch{}, position{}, err
		}
		if batch.Len() > 0 {
			return batch, r.pos, nil
		}
		var retry <-chan time.Time
		var t *time.Timer
		if r.retry > 0 {
			t = time.NewTimer(r.retry)
			retry = t.C
		}
		select {
		case <-ch:
		case <-retry:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return Batch{}, position{}, ctx.Err()
		}
	}
}

// limit returns the end of the durable data in the current segment, and
// whether the writer has moved past it (so it will not grow).
func (r *spoolReader) limit() (int64, bool, error) {
	if r.sealed >= 0 && r.f != nil {
		return r.sealed, true, nil
	}
	r.s.mu.Lock()
	writeSeg, writeSize := r.s.writeSeg, r.s.writeSize
	r.s.mu.Unlock()
	if r.pos.seg == writeSeg {
		return writeSize, false, nil
	}
	info, err := r.f.Stat()
	if err != nil {
		return 0, false, err
	}
	r.sealed = info.Size()
	return r.sealed, true, nil
}

// open makes sure the current segment is open, moving to the next segment
// if the current one is gone.
func (r *spoolReader) open() error {
	if r.f != nil {
		return nil
	}
	for {
		f, err := os.Open(filepath.Join(r.s.dir, segmentName(r.pos.seg)))
		if err == nil {
			r.f, r.sealed = f, -1
			r.pos.off = max(r.pos.off, headerSize)
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		n, ok := r.s.segmentAfter(r.pos.seg)
		if !ok {
			r.s.mu.Lock()
			between := r.s.noSegment && r.pos.seg >= r.s.writeSeg
			r.s.mu.Unlock()
			if between {
				// The writer freed its delivered segment and has not
				// made the next one yet: nothing to read.
				return errNoSegment
			}
			return fmt.Errorf("the session log spool segment %s is missing", segmentName(r.pos.seg))
		}
		r.pos = position{seg: n, off: headerSize}
	}
}

// errNoSegment means there is no segment to read yet.
var errNoSegment = errors.New("no session log spool segment to read yet")

// read returns the events available now, up to the upload batch limits.
// The records go into the batch as they are: each was encoded from an Event
// by the spool's writer and is checked against its checksum here.
func (r *spoolReader) read() (Batch, error) {
	cfg := &r.s.cfg
	var bb batchBuilder
	bytes := 0
	r.counted, r.forget, r.retry = 0, r.forget[:0], 0
	now := time.Now()
	for bb.n < cfg.uploadEvents && r.retry == 0 {
		if err := r.open(); err != nil {
			if errors.Is(err, errNoSegment) {
				break
			}
			return Batch{}, err
		}
		end, sealed, err := r.limit()
		if err != nil {
			return Batch{}, err
		}
		if r.pos.off >= end {
			if !sealed {
				break // everything durable has been read
			}
			// The writer has moved on: go to the next segment.
			n, ok := r.s.segmentAfter(r.pos.seg)
			if !ok {
				return Batch{}, fmt.Errorf("the session log spool has no segment after %s", segmentName(r.pos.seg))
			}
			r.close()
			r.pos = position{seg: n, off: headerSize}
			continue
		}
		if r.br == nil {
			r.br = bufio.NewReaderSize(nil, 64<<10)
		}
		// A fresh, bounded view each time: never read bytes past the durable
		// end, which the writer may still rewrite after a failed write.
		r.br.Reset(io.NewSectionReader(r.f, r.pos.off, end-r.pos.off))
		for bb.n < cfg.uploadEvents && r.pos.off < end {
			size, err := peekRecordSize(r.br, end-r.pos.off)
			if err == nil && bb.n > 0 && bytes+int(size) > cfg.uploadBytes {
				return bb.batch(), nil
			}
			var payload []byte
			if err == nil {
				payload, _, err = readRecord(r.br, end-r.pos.off, r.buf)
			}
			if err != nil {
				return Batch{}, errs.E("sessionlog.(*Spool).Run", errs.DataLoss, fmt.Sprintf(
					"the session log spool segment %s is damaged at offset %d; restart the gateway to truncate it", segmentName(r.pos.seg), r.pos.off))
			}
			r.buf = payload[:0]
			if !isStartRecord(payload) {
				bb.add(payload)
				r.counted++
			} else if stop := r.addStart(&bb, payload, now); stop {
				break
			}
			r.pos.off += size
			bytes += int(size)
		}
		if bytes >= cfg.uploadBytes {
			break
		}
	}
	r.skipFinished()
	return bb.batch(), nil
}

// addStart decides on a start record (see Run): it adds it to the batch
// as it is, as "outcome unknown", or not at all, and reports true when the
// reader must stop before it (r.retry says when to look again).
func (r *spoolReader) addStart(bb *batchBuilder, payload []byte, now time.Time) bool {
	id, _, _ := recordIDs(payload)
	verdict, msg, retry := r.s.verdictOf(id, now)
	switch verdict {
	case verdictWait:
		r.retry = max(retry, time.Millisecond)
		return true
	case verdictRunning:
		bb.addStart(payload)
	case verdictUnknown:
		js, err := unknownOutcome(payload, msg)
		if err != nil {
			// The record passed its checksum, so the spool wrote it:
			// send it as it is rather than lose it.
			bb.addStart(payload)
		} else {
			bb.add(js)
		}
		r.counted++
		r.forget = append(r.forget, id)
	}
	return false
}

// skipFinished moves past a segment that has been read to its end and will
// not grow, so that acknowledging the batch lets the segment be removed.
func (r *spoolReader) skipFinished() {
	if r.f == nil {
		return
	}
	end, sealed, err := r.limit()
	if err != nil || !sealed || r.pos.off < end {
		return
	}
	if n, ok := r.s.segmentAfter(r.pos.seg); ok {
		r.close()
		r.pos = position{seg: n, off: headerSize}
	}
}
