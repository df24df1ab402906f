package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// The audit log's integrity.
//
// Each organization's entries form a chain: entry n (seq n, from 1) stores
// prev_hash, the hash of entry n-1 (32 zero bytes for the first), and
//
//	hash = SHA-256(prev_hash || every field of the entry, each
//	               length-prefixed, its details as stored)
//
// audit_heads holds each organization's head (seq, hash); Record advances it
// in the transaction of the change it records, whose row lock orders the
// entries. The head is authenticated with an HMAC key derived from the root
// key (keyring.LabelAuditLogMAC), which the store cannot forge: Seal, which
// the server runs on a schedule and Verify runs first, checks the chain up to
// the head and stores the head's MAC. Verify then reports an entry altered
// or removed anywhere, entries cut off the end (below the authenticated
// head), and a head rewritten to hide them. Entries written after the last
// Seal and removed with the head wound back are what it cannot see; the
// seal interval bounds that window.

// advanceHead takes the next sequence number of orgID's chain and returns
// it with the hash of the entry before it, locking the head's row.
func advanceHead(ctx context.Context, q store.Querier, orgID string) (int64, []byte, error) {
	if _, err := q.ExecContext(ctx, `INSERT INTO audit_heads (org_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (org_id) DO NOTHING`,
		orgID, make([]byte, sha256.Size)); err != nil {
		return 0, nil, err
	}
	var seq int64
	var prev []byte
	err := q.QueryRowContext(ctx, `UPDATE audit_heads SET seq = seq + 1 WHERE org_id = $1 RETURNING seq, hash`, orgID).Scan(&seq, &prev)
	return seq, prev, err
}

// entryHash links an entry to the one before it.
func entryHash(prev []byte, ev Entry, details string) []byte {
	h := sha256.New()
	h.Write(prev)
	var b []byte
	str := func(v string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	str("airlock/audit/v1")
	for _, v := range []string{ev.ID, ev.OrgID, ev.ActorKind, ev.ActorID, ev.ActorName, ev.ClientAddr, ev.Action, ev.Outcome,
		ev.TargetKind, ev.TargetID, ev.ProjectID, details} {
		str(v)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(ev.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(store.Micros(ev.At)))
	h.Write(b)
	return h.Sum(nil)
}

func headMAC(key []byte, orgID string, seq int64, hash []byte) []byte {
	m := hmac.New(sha256.New, key)
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len(orgID)))
	b = append(b, orgID...)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	m.Write([]byte("airlock/audit-head/v1"))
	m.Write(b)
	m.Write(hash)
	return m.Sum(nil)
}

// Verification is the outcome of checking an organization's audit log.
type Verification struct {
	// OK is true when every entry is present and unaltered.
	OK bool `json:"ok"`
	// Entries is how many chained entries the log holds (its head).
	Entries int64 `json:"entries"`
	// Authenticated is how many of them are covered by the head's MAC (the
	// last Seal); entries after it are checked by the chain only.
	Authenticated int64 `json:"authenticated"`
	// FirstBad is the sequence number of the first entry found altered or
	// removed; 0 when OK.
	FirstBad int64 `json:"firstBad,omitempty"`
	// Problem says what is wrong, in words; empty when OK.
	Problem string `json:"problem,omitempty"`
}

// errNoKey means the repository was made without the root-derived key.
var errNoKey = errors.New("the audit log's key is not configured")

// Verify checks orgID's chain from its first entry to its head against the
// authenticated head, then authenticates the head it checked (Seal). It
// stops at the first problem.
func (r *Repository) Verify(ctx context.Context, orgID string) (Verification, error) {
	const op = "audit.(*Repository).Verify"
	if r.macKey == nil {
		return Verification{}, errs.Wrap(op, errs.Internal, "the audit log cannot be verified without its key", errNoKey)
	}
	var res Verification
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = r.verify(ctx, tx, orgID, true)
		return err
	})
	if err != nil {
		return Verification{}, errs.Wrap(op, errs.Unavailable, "verifying the audit log failed", err)
	}
	return res, nil
}

// Seal authenticates orgID's current head once its chain checks out; a
// chain that does not is left unsealed, and Verify reports it.
func (r *Repository) Seal(ctx context.Context, orgID string) error {
	_, err := r.Verify(ctx, orgID)
	return err
}

func (r *Repository) verify(ctx context.Context, tx *sql.Tx, orgID string, seal bool) (Verification, error) {
	var res Verification
	q := `SELECT seq, hash, sealed_seq, sealed_hash, sealed_mac FROM audit_heads WHERE org_id = $1`
	if r.db.Dialect == store.Postgres {
		q += ` FOR UPDATE`
	}
	var head, sealedSeq int64
	var headHash, sealedHash, sealedMAC []byte
	err := tx.QueryRowContext(ctx, q, orgID).Scan(&head, &headHash, &sealedSeq, &sealedHash, &sealedMAC)
	if errors.Is(err, sql.ErrNoRows) {
		res.OK = true // nothing chained yet
		return res, nil
	}
	if err != nil {
		return res, err
	}
	res.Entries = head
	bad := func(seq int64, format string, args ...any) (Verification, error) {
		res.FirstBad, res.Problem = seq, fmt.Sprintf(format, args...)
		return res, nil
	}
	if sealedMAC != nil && !hmac.Equal(sealedMAC, headMAC(r.macKey, orgID, sealedSeq, sealedHash)) {
		return bad(sealedSeq, "the audit log's authenticated head was altered in the store")
	}
	if sealedMAC != nil && head < sealedSeq {
		return bad(head+1, "entries %d to %d were cut off the end of the audit log: its head was wound back below the authenticated entry %d", head+1, sealedSeq, sealedSeq)
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, org_id, at, actor_kind, actor_id, actor_name, client_addr, action, outcome,
		target_kind, target_id, project_id, details, seq, prev_hash, hash
		FROM audit_logs WHERE org_id = $1 AND seq > 0 ORDER BY seq`, orgID)
	if err != nil {
		return res, err
	}
	prev := make([]byte, sha256.Size)
	expect := int64(1)
	var problem func() (Verification, error)
	for rows.Next() {
		var ev Entry
		var at int64
		var details string
		var prevHash, hash []byte
		if err := rows.Scan(&ev.ID, &ev.OrgID, &at, &ev.ActorKind, &ev.ActorID, &ev.ActorName, &ev.ClientAddr, &ev.Action,
			&ev.Outcome, &ev.TargetKind, &ev.TargetID, &ev.ProjectID, &details, &ev.Seq, &prevHash, &hash); err != nil {
			rows.Close()
			return res, err
		}
		ev.At = store.Time(at)
		seq := ev.Seq
		switch {
		case seq > head:
			problem = func() (Verification, error) {
				return bad(head+1, "the audit log's head was wound back: it records %d entries but entry %d is stored", head, seq)
			}
		case seq != expect:
			problem = func() (Verification, error) {
				return bad(expect, "%s removed from the audit log", entryRange(expect, seq-1))
			}
		case !bytes.Equal(prevHash, prev):
			problem = func() (Verification, error) {
				return bad(seq, "audit entry %d was altered: it does not link to entry %d", seq, seq-1)
			}
		case !bytes.Equal(entryHash(prev, ev, details), hash):
			problem = func() (Verification, error) {
				return bad(seq, "audit entry %d was altered: it does not match its hash", seq)
			}
		case seq == sealedSeq && sealedMAC != nil && !bytes.Equal(hash, sealedHash):
			problem = func() (Verification, error) {
				return bad(seq, "audit entry %d was altered: it is not the entry that was authenticated", seq)
			}
		}
		if problem != nil {
			break
		}
		prev = hash
		expect++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}
	if problem != nil {
		return problem()
	}
	if expect <= head {
		return bad(expect, "%s removed from the audit log: it ends at entry %d but its head records %d", entryRange(expect, head), expect-1, head)
	}
	if head > 0 && !bytes.Equal(prev, headHash) {
		return bad(head, "the audit log's head does not match entry %d", head)
	}
	res.OK = true
	res.Authenticated = sealedSeq
	if seal && head > 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE audit_heads SET sealed_seq = $1, sealed_hash = $2, sealed_mac = $3 WHERE org_id = $4`,
			head, headHash, headMAC(r.macKey, orgID, head, headHash), orgID); err != nil {
			return res, err
		}
		res.Authenticated = head
	}
	return res, nil
}

func entryRange(from, to int64) string {
	if from == to {
		return fmt.Sprintf("entry %d was", from)
	}
	return fmt.Sprintf("entries %d to %d were", from, to)
}
