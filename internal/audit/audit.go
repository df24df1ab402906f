// Package audit records the admin audit log: every change and every login,
// with actor, time, client address, action, target and outcome. Changes write
// their event in the same transaction as the change itself (Record takes the
// transaction), so a change is never stored without its event nor an event
// without its change. chain.go hash-chains each organization's entries and
// authenticates the chain's head with a key derived from the root key
// (Verify). service.go serves GET /api/v1/audit-logs and POST
// /api/v1/audit-logs/verify.
package audit

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Outcomes.
const (
	Success = "success"
	Failure = "failure"
)

// Entry is one audit log entry.
type Entry struct {
	ID         string         `json:"id"`
	OrgID      string         `json:"-"`
	At         time.Time      `json:"at"`
	ActorKind  string         `json:"actorKind" doc:"user, machine, system or anonymous"`
	ActorID    string         `json:"actorId"`
	ActorName  string         `json:"actorName"`
	ClientAddr string         `json:"clientAddr"`
	Action     string         `json:"action" doc:"what happened, e.g. project.create or auth.login"`
	Outcome    string         `json:"outcome" enum:"success,failure"`
	TargetKind string         `json:"targetKind"`
	TargetID   string         `json:"targetId"`
	ProjectID  string         `json:"projectId,omitempty"`
	Details    map[string]any `json:"details,omitempty"`
	// Seq is the entry's place in its organization's chain (from 1; 0 for
	// entries from before the chain).
	Seq int64 `json:"seq,omitempty"`
	// Damaged says, in words, that the entry no longer matches its hash
	// (it was altered in the store); the entry is listed all the same.
	Damaged string `json:"damaged,omitempty"`
}

// By fills the actor and client address of ev from the request context.
func By(ctx context.Context, ev Entry) Entry {
	if p := api.PrincipalFrom(ctx); p != nil {
		ev.ActorKind, ev.ActorID, ev.ActorName = p.Kind, p.ID, p.Name
		if ev.OrgID == "" {
			ev.OrgID = p.OrgID
		}
	} else if ev.ActorKind == "" {
		ev.ActorKind = "anonymous"
	}
	if ev.ClientAddr == "" {
		ev.ClientAddr = api.ClientAddr(ctx)
	}
	if ev.Outcome == "" {
		ev.Outcome = Success
	}
	return ev
}

// Record writes ev with q, the transaction of the change it describes, at
// the end of its organization's hash chain (see chain.go). The chain head's
// row is locked until the transaction ends, so an organization's entries
// are written one at a time; q must be a transaction for that to hold.
func Record(ctx context.Context, q store.Querier, ev Entry) error {
	const op = "audit.Record"
	if ev.OrgID == "" || ev.Action == "" {
		return errs.E(op, errs.Internal, "audit event without organization or action")
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	details := "{}"
	if len(ev.Details) > 0 {
		b, err := json.Marshal(ev.Details)
		if err != nil {
			return errs.Wrap(op, errs.Internal, "encoding audit details failed", err)
		}
		details = string(b)
	}
	ev.ID = uuid.Must(uuid.NewV7()).String()
	seq, prev, err := advanceHead(ctx, q, ev.OrgID)
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "writing the audit log failed", err)
	}
	ev.Seq = seq
	hash := entryHash(prev, ev, details)
	_, err = q.ExecContext(ctx, `INSERT INTO audit_logs
		(id, org_id, at, actor_kind, actor_id, actor_name, client_addr, action, outcome, target_kind, target_id, project_id, details,
		 seq, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		ev.ID, ev.OrgID, store.Micros(ev.At), ev.ActorKind, ev.ActorID, ev.ActorName,
		ev.ClientAddr, ev.Action, ev.Outcome, ev.TargetKind, ev.TargetID, ev.ProjectID, details, seq, prev, hash)
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "writing the audit log failed", err)
	}
	if _, err := q.ExecContext(ctx, `UPDATE audit_heads SET hash = $1 WHERE org_id = $2`, hash, ev.OrgID); err != nil {
		return errs.Wrap(op, errs.Unavailable, "writing the audit log failed", err)
	}
	return nil
}

// Filter selects audit events. Empty fields do not filter.
type Filter struct {
	OrgID     string
	Actor     string // actor id or name
	Action    string // exact, or a prefix ending in "." (e.g. "auth.")
	ProjectID string
	From, To  time.Time
	Before    string // cursor: return events older than this id
	Limit     int
}

// Repository reads and verifies the audit log.
type Repository struct {
	db     *store.DB
	macKey []byte // authenticates chain heads; nil: Verify is unavailable
}

// Option configures a Repository.
type Option func(*Repository)

// WithMACKey gives the repository the key that authenticates the audit
// log's chain heads: keyring.DeriveKey(keyring.LabelAuditLogMAC).
func WithMACKey(key []byte) Option { return func(r *Repository) { r.macKey = key } }

// NewRepository returns a Repository.
func NewRepository(db *store.DB, opts ...Option) *Repository {
	r := &Repository{db: db}
	for _, o := range opts {
		o(r)
	}
	return r
}

// List returns matching events, newest first.
func (r *Repository) List(ctx context.Context, f Filter) ([]Entry, error) {
	const op = "audit.(*Repository).List"
	if f.OrgID == "" {
		return nil, errs.E(op, errs.Internal, "no organization")
	}
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	add("org_id = ?", f.OrgID)
	if f.Actor != "" {
		args = append(args, f.Actor)
		n := "$" + strconv.Itoa(len(args))
		where = append(where, "(actor_id = "+n+" OR actor_name = "+n+")")
	}
	if f.Action != "" {
		if strings.HasSuffix(f.Action, ".") {
			add("action LIKE ? ESCAPE '\\'", escapeLike(f.Action)+"%")
		} else {
			add("action = ?", f.Action)
		}
	}
	if f.ProjectID != "" {
		add("project_id = ?", f.ProjectID)
	}
	if !f.From.IsZero() {
		add("at >= ?", store.Micros(f.From))
	}
	if !f.To.IsZero() {
		add("at < ?", store.Micros(f.To))
	}
	if f.Before != "" {
		add("id < ?", f.Before)
	}
	args = append(args, f.Limit)
	q := `SELECT id, org_id, at, actor_kind, actor_id, actor_name, client_addr, action, outcome, target_kind, target_id, project_id, details,
		seq, prev_hash, hash
		FROM audit_logs WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the audit log failed", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var ev Entry
		var at int64
		var details string
		var prev, hash []byte
		if err := rows.Scan(&ev.ID, &ev.OrgID, &at, &ev.ActorKind, &ev.ActorID, &ev.ActorName, &ev.ClientAddr, &ev.Action,
			&ev.Outcome, &ev.TargetKind, &ev.TargetID, &ev.ProjectID, &details, &ev.Seq, &prev, &hash); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "reading the audit log failed", err)
		}
		ev.At = store.Time(at)
		if ev.Seq > 0 && !bytes.Equal(entryHash(prev, ev, details), hash) {
			ev.Damaged = "this entry does not match its hash: it was altered in the store; run `airlock audit verify`"
		}
		if details != "{}" {
			_ = json.Unmarshal([]byte(details), &ev.Details)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the audit log failed", err)
	}
	return out, nil
}

// RecordNow writes ev in its own transaction; for events with no change
// attached (a failed login).
func RecordNow(ctx context.Context, db *store.DB, ev Entry) error {
	return db.InTx(ctx, func(tx *sql.Tx) error { return Record(ctx, tx, ev) })
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
