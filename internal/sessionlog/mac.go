package sessionlog

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
)

// sessionSeal is what a session's MAC covers: the session's identity fields
// and the head of its event chain.
type sessionSeal struct {
	id, orgID, projectID                 string
	subjectKind, subjectID, subjectName  string
	resourceID, accountID, gatewayID     string
	accessMethod, clientAddr             string
	createdAt, expiresAt, endedAt, count int64
	head                                 []byte
	mac                                  []byte // as stored; nil when never sealed
}

const sealColumns = `id, org_id, project_id, subject_kind, subject_id, subject_name, resource_id, account_id, gateway_id,
	access_method, client_addr, created_at, expires_at, ended_at, event_count, last_event_hash, log_mac`

func scanSeal(row interface{ Scan(...any) error }) (sessionSeal, error) {
	var s sessionSeal
	err := row.Scan(&s.id, &s.orgID, &s.projectID, &s.subjectKind, &s.subjectID, &s.subjectName, &s.resourceID, &s.accountID,
		&s.gatewayID, &s.accessMethod, &s.clientAddr, &s.createdAt, &s.expiresAt, &s.endedAt, &s.count, &s.head, &s.mac)
	return s, err
}

// macOf computes the session's MAC: HMAC-SHA256, with the key derived from
// the root key for keyring.LabelSessionLogMAC, over a version tag and every
// field, each length-prefixed (strings) or 8 bytes big endian (numbers).
func macOf(key []byte, s sessionSeal) []byte {
	m := hmac.New(sha256.New, key)
	var b []byte
	str := func(v string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	num := func(v int64) { b = binary.BigEndian.AppendUint64(b, uint64(v)) }
	str("airlock/session-log-mac/v1")
	for _, v := range []string{s.id, s.orgID, s.projectID, s.subjectKind, s.subjectID, s.subjectName, s.resourceID,
		s.accountID, s.gatewayID, s.accessMethod, s.clientAddr} {
		str(v)
	}
	for _, v := range []int64{s.createdAt, s.expiresAt, s.endedAt, s.count} {
		num(v)
	}
	str(string(s.head))
	m.Write(b)
	return m.Sum(nil)
}

func (s *Store) macKey() ([]byte, error) { return s.kr.DeriveKey(keyring.LabelSessionLogMAC) }

// readSeal reads a session's sealed fields with q (locking the row on
// PostgreSQL when forUpdate).
func (s *Store) readSeal(ctx context.Context, q store.Querier, sessionID string, forUpdate bool) (sessionSeal, error) {
	query := `SELECT ` + sealColumns + ` FROM sessions WHERE id = $1`
	if forUpdate && s.db.Dialect == store.Postgres {
		query += ` FOR UPDATE`
	}
	return scanSeal(q.QueryRowContext(ctx, query, sessionID))
}

// sealMatches reports whether the stored MAC authenticates the row. A row
// never sealed (no MAC, no events) matches; one that was, or that holds
// events, must carry a valid MAC. A MAC computed before the session ended
// (ended_at 0) still matches an ended session: the session service sets
// ended_at, and reseals only once it calls Reseal; endedUnsealed says so.
func sealMatches(key []byte, row sessionSeal) (ok, endedUnsealed bool) {
	if row.mac == nil {
		return row.count == 0, false
	}
	if hmac.Equal(row.mac, macOf(key, row)) {
		return true, false
	}
	if row.endedAt != 0 {
		before := row
		before.endedAt = 0
		if hmac.Equal(row.mac, macOf(key, before)) {
			return true, true
		}
	}
	return false, false
}

// Reseal runs update (which may change the session's identity fields or end
// it, in tx) and then authenticates the session's current row with a new
// MAC. It checks the MAC before update runs: if the row had already been
// changed behind Airlock's back, it runs update but does not reseal, so
// that `airlock sessions verify` goes on reporting the tampering; it then
// returns nil (the change itself is legitimate) and logs nothing. The
// session service calls it, in the transaction that creates (with a no-op
// update, after the insert) or ends a session.
func (s *Store) Reseal(ctx context.Context, tx *sql.Tx, sessionID string, update func() error) error {
	const op = "sessionlog.(*Store).Reseal"
	key, err := s.macKey()
	if err != nil {
		return err
	}
	before, err := s.readSeal(ctx, tx, sessionID, true)
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, fmt.Sprintf("reading session %s failed", sessionID), err)
	}
	ok, _ := sealMatches(key, before)
	if update != nil {
		if err := update(); err != nil {
			return err
		}
	}
	if !ok {
		return nil
	}
	return s.seal(ctx, tx, key, sessionID)
}

// seal computes and stores the MAC of the session's current row.
func (s *Store) seal(ctx context.Context, tx *sql.Tx, key []byte, sessionID string) error {
	row, err := s.readSeal(ctx, tx, sessionID, false)
	if err != nil {
		return fmt.Errorf("reading session %s to seal it: %w", sessionID, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE sessions SET log_mac = $1 WHERE id = $2`, macOf(key, row), sessionID); err != nil {
		return fmt.Errorf("sealing session %s: %w", sessionID, err)
	}
	return nil
}
