package sessionlog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"syscall"
	"time"
)

// OutcomeUnknown is the outcome of a statement that may have run, but whose
// answer nobody recorded: the spool gives it to a start record whose final
// event never reached the disk.
const OutcomeUnknown = "outcome unknown"

// The words a start record delivered in place of its final event carries
// as its ErrorMsg.
const (
	// msgOrphaned: the process stopped (crash, kill -9, power loss)
	// between forwarding the statement and writing its final event.
	msgOrphaned = "the gateway stopped before this statement's answer was recorded; it may have run, even committed"
	// msgLost: the final event was dropped under WithFailOpen.
	msgLost = "the gateway could not record this statement's answer (its session log spool failed, and fails open); it may have run, even committed"
)

// startMarker opens the JSON of a start record in a segment, before the
// event's own fields: the reader and recovery tell start records from
// final events by it (without decoding them), and the reader strips it
// before upload, so the server receives a plain Event. It is the Event's
// JSON with one more field, which a decoder of Events ignores.
const startMarker = `{"start":true,`

// startState is what the spool knows of a start record it wrote or found.
type startState uint8

const (
	// startOpen: the statement runs; no final event was recorded yet.
	startOpen startState = iota + 1
	// startFinished: its final event is recorded, in memory, not yet in a
	// segment.
	startFinished
	// startLost: its final event was dropped (WithFailOpen).
	startLost
	// startOrphaned: OpenSpool found it with no final event after it: the
	// process stopped before writing one.
	startOrphaned
)

// startEntry is a start record whose final event is not on disk.
type startEntry struct {
	state startState
	at    time.Time // when Begin wrote it (in this process)
}

// Begin writes the start record of a statement (see WriteAheadRecorder)
// to the segment being written, on the caller's goroutine: one write(2),
// no fsync, so that once it returns a crash of the process cannot lose the
// record. With WithSyncAlways it also waits for an fsync that covers the
// record (concurrent Begins and Records share one). The writer goroutine
// fsyncs start records with its next batch, within one flush interval.
//
// It returns a *SpoolError, and writes nothing, when the spool is closed,
// the record would take the spool over WithMaxSize, the spool cannot
// persist events at the moment (Err), or the write fails; under
// WithFailOpen it logs and counts the loss (Stats.Dropped) and returns nil
// instead.
//
// ev.ID must be unique; the final event recorded for the statement names
// it as its StartID. Until that final event is in a segment, the upload
// does not acknowledge past the start record: a statement that runs longer
// than WithRunningAfter has its start delivered as an event of its own,
// with an empty Outcome (running), and its final follows when it comes.
// After a crash, OpenSpool finds the start records with no final event and
// delivers them with Outcome "outcome unknown".
func (s *Spool) Begin(ev Event) error {
	payload, err := json.Marshal(&ev)
	if err != nil {
		// Only an out-of-range time can fail: keep the record without it.
		ev.Time = time.Time{}
		if payload, err = json.Marshal(&ev); err != nil {
			return s.beginFailed(ev, &SpoolError{Cause: err})
		}
	}
	rec := appendStartRecord(make([]byte, 0, recordHeader+len(startMarker)+len(payload)), payload)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.beginFailed(ev, &SpoolError{Closed: true, Cause: ErrSpoolClosed})
	}
	if s.health != nil {
		// The writer cannot persist batches: fail closed, as Err says.
		err := s.health
		s.mu.Unlock()
		return err
	}
	// The entry exists before the record can be read: a reader that finds
	// no entry takes the statement's final event for written.
	s.starts[ev.ID] = startEntry{state: startOpen, at: time.Now()}
	s.mu.Unlock()

	s.fileMu.Lock()
	pos, first, gen, err := s.appendStart(rec)
	s.fileMu.Unlock()
	if err != nil {
		s.mu.Lock()
		delete(s.starts, ev.ID)
		s.mu.Unlock()
		return s.beginFailed(ev, err)
	}
	s.beginSucceeded()
	if s.cfg.syncAlways {
		s.wake()
		if err := s.waitDurable(pos, gen); err != nil {
			// The statement is refused: with no entry, the reader
			// skips its start, if it is on disk at all.
			s.mu.Lock()
			delete(s.starts, ev.ID)
			s.mu.Unlock()
			return err
		}
	}
	if first {
		s.wake() // the writer fsyncs it within one flush interval
	}
	return nil
}

// appendStart appends a start record after everything written to the
// current segment. It returns the position after the record, whether it
// is the first data written since the writer's last fsync began, and the
// cut generation (see cutUnsynced). The caller holds fileMu.
func (s *Spool) appendStart(rec []byte) (position, bool, uint64, error) {
	if s.fileClosed {
		return position{}, false, 0, &SpoolError{Closed: true, Cause: ErrSpoolClosed}
	}
	if s.failAppend != nil {
		if err := s.failAppend(); err != nil {
			return position{}, false, 0, spoolError(err)
		}
	}
	if s.f == nil {
		if err := s.nextSegment(); err != nil {
			return position{}, false, 0, spoolError(err)
		}
	}
	n := int64(len(rec))
	if err := s.reserve(n); err != nil {
		return position{}, false, 0, spoolError(err)
	}
	if _, err := s.f.WriteAt(rec, s.size); err != nil {
		_ = s.f.Truncate(s.size)
		s.unreserve(n)
		return position{}, false, 0, spoolError(err)
	}
	s.size += n
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !s.unsynced
	s.unsynced = true
	s.lastBegin = position{seg: s.writeSeg, off: s.size}
	return s.lastBegin, first, s.cutGen, nil
}

// spoolError wraps the cause of a failed write as a *SpoolError.
func spoolError(cause error) *SpoolError {
	var se *SpoolError
	if errors.As(cause, &se) {
		return se
	}
	var over errOverCap
	return &SpoolError{Full: errors.As(cause, &over) || errors.Is(cause, syscall.ENOSPC), Cause: cause}
}

// beginFailed reports a start record that could not be written: err,
// failing closed; nil, logged and counted, failing open. A run of
// failures is logged once.
func (s *Spool) beginFailed(ev Event, err error) error {
	se := spoolError(err)
	s.mu.Lock()
	first := !s.beginFailing
	s.beginFailing = true
	if s.cfg.failOpen {
		s.droppedStarts++
	} else if s.health == nil {
		// Fail closed at once: the engines refuse the next statements
		// before writing anything, until the writer or freed space says
		// the spool has room again.
		s.health, s.healthByBegin = se, true
	}
	s.mu.Unlock()
	if s.cfg.failOpen {
		if first {
			s.log.Error("SESSION EVENTS ARE BEING DROPPED: the start of a statement cannot be written to the session log spool and the gateway fails open (--spool-full=allow); the statement runs, recorded only when it ends",
				"dir", s.dir, "id", ev.ID, "session", ev.SessionID, "err", se.Cause)
		}
		return nil
	}
	if first {
		s.log.Error("the start of a statement cannot be written to the session log spool; the statement is refused (fail closed), and so is each one until a start can be written",
			"dir", s.dir, "id", ev.ID, "session", ev.SessionID, "err", se.Cause)
	}
	return se
}

// beginSucceeded ends a run of Begin failures in the log.
func (s *Spool) beginSucceeded() {
	s.mu.Lock()
	was := s.beginFailing
	s.beginFailing = false
	s.mu.Unlock()
	if was {
		s.log.Info("the starts of statements are written to the session log spool again", "dir", s.dir)
	}
}

// waitDurable waits until an fsync covers everything written up to pos
// (WithSyncAlways). It returns an error if the data was cut after a failed
// fsync (gen changed) or the writer stopped first.
func (s *Spool) waitDurable(pos position, gen uint64) error {
	for {
		s.mu.Lock()
		done, cut, ch := s.durableLocked(pos), s.cutGen != gen, s.synced
		health := s.health
		s.mu.Unlock()
		switch {
		case cut:
			if health != nil {
				return health
			}
			return &SpoolError{Cause: errors.New("the spool's fsync failed and the start record was cut")}
		case done:
			return nil
		}
		select {
		case <-ch:
		case <-s.writerDone:
			s.mu.Lock()
			done = s.durableLocked(pos) && s.cutGen == gen
			s.mu.Unlock()
			if done {
				return nil
			}
			return &SpoolError{Closed: true, Cause: ErrSpoolClosed}
		}
	}
}

// durableLocked reports whether an fsync has covered the spool up to pos.
// The caller holds mu.
func (s *Spool) durableLocked(pos position) bool {
	return s.writeSeg > pos.seg || (s.writeSeg == pos.seg && s.writeSize >= pos.off)
}

// finalRecorded marks the start of ev, a final event, as finished. The
// caller holds mu.
func (s *Spool) finalRecordedLocked(ev *Event) {
	if ev.StartID == "" {
		return
	}
	if e, ok := s.starts[ev.StartID]; ok && e.state == startOpen {
		e.state = startFinished
		s.starts[ev.StartID] = e
	}
}

// finalsSettledLocked forgets the starts of the final events of batch,
// once it is on disk (written) or marks them lost (dropped under
// WithFailOpen). The caller holds mu.
func (s *Spool) finalsSettledLocked(batch []Event, written bool) {
	for i := range batch {
		id := batch[i].StartID
		if id == "" {
			continue
		}
		e, ok := s.starts[id]
		switch {
		case !ok:
		case written:
			delete(s.starts, id)
		default:
			e.state = startLost
			s.starts[id] = e
		}
	}
}

// startVerdict is what the reader does with a start record.
type startVerdict uint8

const (
	// verdictSkip: its final event is on disk; the start is not uploaded.
	verdictSkip startVerdict = iota
	// verdictWait: its final event will be on disk shortly; the reader
	// stops before it, so that nothing past it is acknowledged before the
	// final event is durable.
	verdictWait
	// verdictRunning: upload it as it is (Outcome empty): the statement
	// runs long.
	verdictRunning
	// verdictUnknown: upload it with Outcome "outcome unknown": its final
	// event never reached the disk.
	verdictUnknown
)

// verdictOf decides what the reader does with the start record id, read
// now. For verdictUnknown it returns the error message to give it; for
// verdictWait, how soon to look again.
func (s *Spool) verdictOf(id string, now time.Time) (startVerdict, string, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.starts[id]
	if !ok {
		return verdictSkip, "", 0
	}
	// At the size cap the final may not be written until deliveries free
	// space: deliver the start as running rather than wait for ever.
	var se *SpoolError
	full := errors.As(s.health, &se) && se.Full
	switch e.state {
	case startLost:
		return verdictUnknown, msgLost, 0
	case startOrphaned:
		return verdictUnknown, msgOrphaned, 0
	case startFinished:
		if full {
			return verdictRunning, "", 0
		}
		return verdictWait, "", s.cfg.flushInterval
	}
	age := now.Sub(e.at)
	if full || age >= s.cfg.runningAfter {
		return verdictRunning, "", 0
	}
	return verdictWait, "", min(s.cfg.runningAfter-age, s.cfg.flushInterval)
}

// forgetStarts drops the entries of start records delivered as "outcome
// unknown", once acknowledged.
func (s *Spool) forgetStarts(ids []string) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if e, ok := s.starts[id]; ok && (e.state == startLost || e.state == startOrphaned) {
			delete(s.starts, id)
		}
	}
}

// appendStartRecord appends payload, an Event's JSON, framed as a start
// record (startMarker in place of its opening brace), to dst.
func appendStartRecord(dst, payload []byte) []byte {
	body := payload[1:] // after the '{'
	var h [recordHeader]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(startMarker)+len(body)))
	crc := crc32.Update(0, castagnoli, h[0:4])
	crc = crc32.Update(crc, castagnoli, []byte(startMarker))
	crc = crc32.Update(crc, castagnoli, body)
	binary.LittleEndian.PutUint32(h[4:8], crc)
	dst = append(dst, h[:]...)
	dst = append(dst, startMarker...)
	return append(dst, body...)
}

// isStartRecord reports whether a record's payload is a start record.
func isStartRecord(payload []byte) bool {
	return bytes.HasPrefix(payload, []byte(startMarker))
}

// eventOfStart returns a start record's payload as the Event's JSON: '{'
// and what follows the marker, appended to dst.
func eventOfStart(dst, payload []byte) []byte {
	dst = append(dst, '{')
	return append(dst, payload[len(startMarker):]...)
}

// unknownOutcome returns a start record's payload as the JSON of its
// Event with Outcome "outcome unknown" and msg as its ErrorMsg.
func unknownOutcome(payload []byte, msg string) ([]byte, error) {
	var ev Event
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, err
	}
	ev.Outcome, ev.ErrorMsg = OutcomeUnknown, msg
	return json.Marshal(&ev)
}

// recordIDs returns the id of a record's event, its startId, and whether
// it is a start record, reading only the start of the JSON the spool
// wrote ({"id":"...","startId":"...",...: Event's first fields, in its
// order); anything else is decoded.
func recordIDs(payload []byte) (id, startID string, start bool) {
	p := payload
	if isStartRecord(p) {
		start = true
		p = p[len(startMarker):]
	} else if len(p) > 0 && p[0] == '{' {
		p = p[1:]
	} else {
		p = nil
	}
	id, p, ok := jsonField(p, `"id":"`)
	if ok && !start {
		if len(p) > 0 && p[0] == ',' {
			if sid, _, ok2 := jsonField(p[1:], `"startId":"`); ok2 {
				startID = sid
			}
		}
	}
	if ok {
		return id, startID, start
	}
	var ids struct {
		ID      string `json:"id"`
		StartID string `json:"startId"`
	}
	_ = json.Unmarshal(payload, &ids)
	return ids.ID, ids.StartID, start
}

// jsonField reads a string field named by prefix (`"name":"`) at the
// start of p, when its value has no escapes. It returns the value and what
// follows its closing quote.
func jsonField(p []byte, prefix string) (string, []byte, bool) {
	if !bytes.HasPrefix(p, []byte(prefix)) {
		return "", p, false
	}
	p = p[len(prefix):]
	end := bytes.IndexByte(p, '"')
	if end < 0 || bytes.IndexByte(p[:end], '\\') >= 0 {
		return "", p, false
	}
	return string(p[:end]), p[end+1:], true
}
