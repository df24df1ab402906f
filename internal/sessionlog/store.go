package sessionlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
)

// List limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// Limits on the fields Ingest checks.
const (
	maxIDLen   = 128
	maxKindLen = 64
)

// Store keeps session events on the server. Each event is stored whole, as
// JSON sealed with its project's data key (additional data
// "session_event:<id>:<session>:<seq>"), and chained per session:
//
//	hash = SHA-256(prev_hash || seq as 8 bytes big endian ||
//	               len(id) as 4 bytes big endian || id || payload JSON)
//
// where prev_hash is the hash of the session's previous event (32 zero bytes
// for the first) and payload JSON is the plaintext that was sealed. The
// session row holds the head of the chain (event_count, last_event_hash).
//
// What Verify can and cannot prove: it detects an event removed from the
// middle or the end, an event altered in any stored column, and a payload
// moved between rows. The head lives in the same database, so someone who
// can write both tables and rewrite the head consistently can cut events
// from the end unnoticed; proving that needs the head recorded elsewhere.
type Store struct {
	db  *store.DB
	kr  *keyring.Keyring
	now func() time.Time
}

// NewStore returns a Store on db that seals events with kr. now gives the
// received time of events (time.Now when nil).
func NewStore(db *store.DB, kr *keyring.Keyring, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, kr: kr, now: now}
}

// Rejection is an event Ingest did not store, and why.
type Rejection struct {
	ID        string `json:"id"`
	SessionID string `json:"sessionId"`
	Reason    string `json:"reason"`
}

// RejectedError reports events Ingest refused for good: retrying them cannot
// succeed (an unknown session, a missing id). The other events of the batch
// were stored. Its code (errs.CodeOf) is errs.Invalid. An Uploader that
// learns of such a rejection from the server returns a *RejectedError too,
// so that the spool keeps the events aside instead of retrying forever.
type RejectedError struct {
	Rejected []Rejection
}

func (e *RejectedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d session event(s) rejected: ", len(e.Rejected))
	for i, r := range e.Rejected {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(e.Rejected)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "event %q of session %q: %s", r.ID, r.SessionID, r.Reason)
	}
	return b.String()
}

// Unwrap gives the error its code, errs.Invalid.
func (e *RejectedError) Unwrap() error {
	return errs.E("sessionlog.(*Store).Ingest", errs.Invalid, e.Error())
}

// Ingest stores a batch of events and returns how many it newly stored.
//
// It is idempotent: an event whose id is already stored is skipped (it is
// not counted). Valid events of known sessions are stored in one
// transaction, each session's in batch order, taking the next sequence
// numbers of the session's chain; the session row is locked meanwhile
// (SELECT ... FOR UPDATE on PostgreSQL; SQLite's write transaction
// serializes writers), so concurrent Ingests of one session, from several
// server replicas or retries, never take the same number.
//
// Events that can never be stored (no id, no session, no kind, no time, or a
// session that does not exist) do not fail the batch: the others are stored
// and the error is a *RejectedError naming each rejected event. Any other
// error means nothing was stored, and the batch may be sent again.
func (s *Store) Ingest(ctx context.Context, batch []Event) (int, error) {
	const op = "sessionlog.(*Store).Ingest"
	var rejected []Rejection
	bySession := map[string][]Event{}
	for _, ev := range batch {
		if reason := invalidEvent(&ev); reason != "" {
			rejected = append(rejected, Rejection{ID: ev.ID, SessionID: ev.SessionID, Reason: reason})
			continue
		}
		bySession[ev.SessionID] = append(bySession[ev.SessionID], ev)
	}
	sessions := make([]string, 0, len(bySession))
	for id := range bySession {
		sessions = append(sessions, id)
	}
	// One order for every Ingest, so that two never wait on each other's locks.
	sort.Strings(sessions)

	projects, err := s.projectsOf(ctx, sessions)
	if err != nil {
		return 0, errs.Wrap(op, errs.Unavailable, "looking up the sessions of session events failed", err)
	}
	known := sessions[:0]
	for _, id := range sessions {
		if _, ok := projects[id]; ok {
			known = append(known, id)
			continue
		}
		for _, ev := range bySession[id] {
			rejected = append(rejected, Rejection{ID: ev.ID, SessionID: id, Reason: "no such session"})
		}
	}
	// Load each project's data key now, so that sealing inside the
	// transaction needs no second connection.
	for _, id := range known {
		if _, err := s.kr.Seal(ctx, projects[id], "session_event:key-check", nil); err != nil {
			return 0, errs.Wrap(op, errs.Internal, "loading a project's data key failed", err)
		}
	}

	var accepted int
	if len(known) > 0 {
		err = s.db.InTx(ctx, func(tx *sql.Tx) error {
			accepted = 0
			for _, id := range known {
				n, err := s.appendToChain(ctx, tx, id, projects[id], bySession[id])
				if err != nil {
					return err
				}
				accepted += n
			}
			return nil
		})
		if err != nil {
			return 0, errs.Wrap(op, errs.Unavailable, "storing session events failed", err)
		}
	}
	if len(rejected) > 0 {
		return accepted, &RejectedError{Rejected: rejected}
	}
	return accepted, nil
}

// invalidEvent says why an event can never be stored, or "".
func invalidEvent(ev *Event) string {
	switch {
	case ev.ID == "":
		return "the event has no id"
	case len(ev.ID) > maxIDLen:
		return fmt.Sprintf("the event id is longer than %d bytes", maxIDLen)
	case ev.SessionID == "":
		return "the event names no session"
	case len(ev.SessionID) > maxIDLen:
		return fmt.Sprintf("the session id is longer than %d bytes", maxIDLen)
	case ev.Kind == "":
		return "the event has no kind"
	case len(ev.Kind) > maxKindLen:
		return fmt.Sprintf("the event kind is longer than %d bytes", maxKindLen)
	case ev.Time.IsZero():
		return "the event has no time"
	}
	return ""
}

// projectsOf maps each existing session among ids to its project.
func (s *Store) projectsOf(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 200)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		marks := make([]string, len(chunk))
		for i, id := range chunk {
			args[i] = id
			marks[i] = "$" + strconv.Itoa(i+1)
		}
		rows, err := s.db.QueryContext(ctx, `SELECT id, project_id FROM sessions WHERE id IN (`+strings.Join(marks, ", ")+`)`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id, project string
			if err := rows.Scan(&id, &project); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = project
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// appendToChain stores events at the end of a session's chain and advances
// its head. It returns how many were new.
func (s *Store) appendToChain(ctx context.Context, tx *sql.Tx, sessionID, projectID string, events []Event) (int, error) {
	key, err := s.macKey()
	if err != nil {
		return 0, err
	}
	row, err := s.readSeal(ctx, tx, sessionID, true)
	if err != nil {
		return 0, fmt.Errorf("reading the head of session %s: %w", sessionID, err)
	}
	// A row changed behind Airlock's back is not sealed again, so that
	// Verify keeps reporting it; the events are stored all the same.
	sealOK, _ := sealMatches(key, row)
	count, last := row.count, row.head
	prev := last
	switch {
	case count == 0 && len(last) == 0:
		prev = make([]byte, sha256.Size)
	case len(last) != sha256.Size:
		return 0, errs.Ef("sessionlog.(*Store).Ingest", errs.DataLoss,
			"the event chain head of session %s is damaged (a %d-byte hash after %d events); run `airlock sessions verify`", sessionID, len(last), count)
	}
	received := store.Micros(s.now())
	// One prepared statement per batch: the benchmark profile showed the
	// server re-preparing this INSERT for every event.
	insert, err := tx.PrepareContext(ctx, `INSERT INTO session_events
		(id, session_id, project_id, seq, at, kind, payload_enc, prev_hash, hash, received_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING`)
	if err != nil {
		return 0, fmt.Errorf("preparing to store events: %w", err)
	}
	defer insert.Close()
	stored := 0
	for _, ev := range events {
		seq := count + 1
		ev.Seq = seq
		payload, err := json.Marshal(&ev)
		if err != nil {
			return 0, fmt.Errorf("encoding event %s: %w", ev.ID, err)
		}
		hash := chainHash(prev, seq, ev.ID, payload)
		sealed, err := s.kr.Seal(ctx, projectID, eventAAD(ev.ID, sessionID, seq), payload)
		if err != nil {
			return 0, err
		}
		res, err := insert.ExecContext(ctx, ev.ID, sessionID, projectID, seq, store.Micros(ev.Time), ev.Kind, sealed, prev, hash, received)
		if err != nil {
			return 0, fmt.Errorf("storing event %s: %w", ev.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return 0, err
		} else if n == 0 {
			continue // already stored: an upload sent again
		}
		count, prev = seq, hash
		stored++
	}
	if stored > 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE sessions SET event_count = $1, last_event_hash = $2 WHERE id = $3`, count, prev, sessionID); err != nil {
			return 0, fmt.Errorf("advancing the head of session %s: %w", sessionID, err)
		}
		if sealOK {
			if err := s.seal(ctx, tx, key, sessionID); err != nil {
				return 0, err
			}
		}
	}
	return stored, nil
}

// chainHash links an event to the one before it.
func chainHash(prev []byte, seq int64, id string, payload []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(seq))
	h.Write(n[:])
	binary.BigEndian.PutUint32(n[:4], uint32(len(id)))
	h.Write(n[:4])
	h.Write([]byte(id))
	h.Write(payload)
	return h.Sum(nil)
}

func eventAAD(id, sessionID string, seq int64) string {
	return "session_event:" + id + ":" + sessionID + ":" + strconv.FormatInt(seq, 10)
}

// List returns a session's events after sequence number afterSeq, oldest
// first, decrypted, with Seq set. limit <= 0 means DefaultListLimit; more
// than MaxListLimit is cut to it. An unknown session has no events. An event
// that fails its integrity check is listed in its place with only its id,
// sequence number and Damaged set; the others are listed as usual.
func (s *Store) List(ctx context.Context, sessionID string, afterSeq int64, limit int) ([]Event, error) {
	const op = "sessionlog.(*Store).List"
	switch {
	case sessionID == "":
		return nil, errs.InvalidField(op, "sessionId", "a session id is required")
	case afterSeq < 0:
		return nil, errs.InvalidField(op, "after", "the sequence number to list after must not be negative")
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	rows, err := s.db.QueryContext(ctx, `SELECT id, project_id, seq, payload_enc FROM session_events
		WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, sessionID, afterSeq, limit)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading session events failed", err)
	}
	type row struct {
		id, project string
		seq         int64
		sealed      []byte
	}
	var found []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.project, &r.seq, &r.sealed); err != nil {
			rows.Close()
			return nil, errs.Wrap(op, errs.Unavailable, "reading session events failed", err)
		}
		found = append(found, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading session events failed", err)
	}
	out := make([]Event, 0, len(found))
	for _, r := range found {
		ev, _, err := s.open(ctx, sessionID, r.id, r.project, r.seq, r.sealed)
		if err != nil {
			if errs.Is(err, errs.DataLoss) {
				// One damaged event does not hide the rest of the page.
				out = append(out, Event{ID: r.id, SessionID: sessionID, Seq: r.seq, Damaged: fmt.Sprintf(
					"event %d of session %s failed its integrity check: it was altered or moved; run `airlock sessions verify`", r.seq, sessionID)})
				continue
			}
			return nil, errs.Wrap(op, errs.Internal, "decrypting session events failed", err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// open decrypts a stored event and checks that it is the event its row says.
func (s *Store) open(ctx context.Context, sessionID, id, projectID string, seq int64, sealed []byte) (Event, []byte, error) {
	const op = "sessionlog.(*Store).open"
	payload, err := s.kr.Open(ctx, projectID, eventAAD(id, sessionID, seq), sealed)
	if err != nil {
		return Event{}, nil, err
	}
	var ev Event
	if err := json.Unmarshal(payload, &ev); err != nil {
		return Event{}, nil, &errs.Error{Op: op, Code: errs.DataLoss, Err: err, Msg: "a stored session event cannot be decoded"}
	}
	if ev.ID != id || ev.SessionID != sessionID || ev.Seq != seq {
		return Event{}, nil, errs.E(op, errs.DataLoss, "a stored session event does not match its row")
	}
	return ev, payload, nil
}

// VerifyResult is the outcome of checking a session's event chain.
type VerifyResult struct {
	// OK is true when every event is present and unaltered.
	OK bool `json:"ok"`
	// Events is how many events the session recorded (its chain head).
	Events int64 `json:"events"`
	// FirstBad is the sequence number of the first event found removed or
	// altered; 0 when OK.
	FirstBad int64 `json:"firstBad"`
	// Problem says what is wrong, in words ("event 17 was removed"); empty
	// when OK.
	Problem string `json:"problem"`
	// Authenticated is true when the session's identity fields (user,
	// account, resource, client address, times) and chain head carry a MAC
	// made with a key derived from the root key, which the store alone
	// cannot forge, and it matches: neither events cut off the end nor a
	// re-attribution went unnoticed. False for a session not sealed yet
	// (no events).
	Authenticated bool `json:"authenticated"`
	// EndUnauthenticated is true when the MAC predates the session's end:
	// its end time is not covered.
	EndUnauthenticated bool `json:"endUnauthenticated,omitempty"`
}

// Verify walks a session's chain from its first event to its head. For each
// event it opens the sealed payload (which fails if the payload was altered
// or moved from another row), recomputes the hash from the plaintext and the
// previous event's hash, and compares it, the link and the plaintext columns
// with what is stored. It stops at the first problem. Events ingested while
// it runs, after the head it read, are not checked. An unknown session is
// errs.NotFound.
func (s *Store) Verify(ctx context.Context, sessionID string) (VerifyResult, error) {
	const op = "sessionlog.(*Store).Verify"
	if sessionID == "" {
		return VerifyResult{}, errs.InvalidField(op, "sessionId", "a session id is required")
	}
	row, err := s.readSeal(ctx, s.db, sessionID, false)
	if errors.Is(err, sql.ErrNoRows) {
		return VerifyResult{}, errs.Ef(op, errs.NotFound, "there is no session %s", sessionID)
	}
	if err != nil {
		return VerifyResult{}, errs.Wrap(op, errs.Unavailable, "reading the session failed", err)
	}
	projectID, count, head := row.projectID, row.count, row.head
	res := VerifyResult{Events: count}
	bad := func(seq int64, format string, args ...any) (VerifyResult, error) {
		res.FirstBad, res.Problem = seq, fmt.Sprintf(format, args...)
		return res, nil
	}
	key, err := s.macKey()
	if err != nil {
		return VerifyResult{}, err
	}
	// The MAC is checked once the chain is: a chain cut at its end, with
	// its head rewound to match, is consistent in itself, and only the MAC
	// tells; a problem in the chain is named more precisely by the walk.
	macOK, endUnsealed := sealMatches(key, row)

	prev := make([]byte, sha256.Size)
	expect := int64(1)
	const page = 500
	for expect <= count {
		rows, err := s.db.QueryContext(ctx, `SELECT id, project_id, seq, at, kind, payload_enc, prev_hash, hash
			FROM session_events WHERE session_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4`,
			sessionID, expect, count, page)
		if err != nil {
			return VerifyResult{}, errs.Wrap(op, errs.Unavailable, "reading session events failed", err)
		}
		type row struct {
			id, project            string
			seq, at                int64
			kind                   string
			sealed, prevHash, hash []byte
		}
		var found []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.project, &r.seq, &r.at, &r.kind, &r.sealed, &r.prevHash, &r.hash); err != nil {
				rows.Close()
				return VerifyResult{}, errs.Wrap(op, errs.Unavailable, "reading session events failed", err)
			}
			found = append(found, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return VerifyResult{}, errs.Wrap(op, errs.Unavailable, "reading session events failed", err)
		}
		if len(found) == 0 {
			break // the rest of the chain is missing: reported below
		}
		for _, r := range found {
			if r.seq != expect {
				return bad(expect, "%s removed", eventRange(expect, r.seq-1))
			}
			if r.project != projectID {
				return bad(r.seq, "event %d was altered: it names another project", r.seq)
			}
			ev, payload, err := s.open(ctx, sessionID, r.id, projectID, r.seq, r.sealed)
			if err != nil {
				if errs.Is(err, errs.DataLoss) {
					return bad(r.seq, "event %d was altered: its content fails its integrity check", r.seq)
				}
				return VerifyResult{}, errs.Wrap(op, errs.Internal, "decrypting session events failed", err)
			}
			if !bytes.Equal(r.prevHash, prev) {
				return bad(r.seq, "event %d was altered: it does not link to event %d", r.seq, r.seq-1)
			}
			if !bytes.Equal(chainHash(prev, r.seq, r.id, payload), r.hash) {
				return bad(r.seq, "event %d was altered: its hash does not match its content", r.seq)
			}
			if store.Micros(ev.Time) != r.at || ev.Kind != r.kind {
				return bad(r.seq, "event %d was altered: its stored time or kind differs from its sealed content", r.seq)
			}
			prev = r.hash
			expect++
		}
	}
	if expect <= count {
		return bad(expect, "%s removed: the log ends at event %d but the session recorded %d", eventRange(expect, count), expect-1, count)
	}
	if count > 0 && !bytes.Equal(prev, head) {
		return bad(count, "the session's chain head does not match event %d: the head or event %d was changed", count, count)
	}
	// Events after the head are either being ingested right now or were cut
	// off by winding the head back.
	var beyond int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM session_events WHERE session_id = $1 AND seq > $2`, sessionID, count).Scan(&beyond); err != nil {
		return VerifyResult{}, errs.Wrap(op, errs.Unavailable, "reading session events failed", err)
	}
	if beyond > 0 {
		var now int64
		if err := s.db.QueryRowContext(ctx, `SELECT event_count FROM sessions WHERE id = $1`, sessionID).Scan(&now); err != nil {
			return VerifyResult{}, errs.Wrap(op, errs.Unavailable, "reading the session failed", err)
		}
		if now == count {
			return bad(count+1, "the session's chain head was wound back: it records %d events but %d more are stored", count, beyond)
		}
	}
	switch {
	case !macOK && row.mac == nil:
		return bad(count, "the session's log is not authenticated: it holds %d events but no MAC (it was recorded before Airlock authenticated session logs, or its MAC was removed)", count)
	case !macOK:
		return bad(count, "the session was altered in the store: its user, account, resource, client address, times or event count (%d) do not match their MAC; events may have been cut off the end, or the session re-attributed", count)
	}
	res.Authenticated = row.mac != nil
	res.EndUnauthenticated = endUnsealed
	res.OK = true
	return res, nil
}

// eventRange words a run of events: "event 17 was" or "events 17 to 19 were".
func eventRange(from, to int64) string {
	if from == to {
		return fmt.Sprintf("event %d was", from)
	}
	return fmt.Sprintf("events %d to %d were", from, to)
}
