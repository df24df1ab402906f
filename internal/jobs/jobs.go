// Package jobs runs the server's durable jobs: work that must happen once,
// at a time, whatever the number of server replicas and whatever crashes in
// between, such as ending a session when it expires or rotating an
// account's password.
//
// A job is a row of the store's jobs table, unique by kind and key (the
// session or account it is about), due at run_at. Every replica runs a
// Scheduler. A Scheduler claims due jobs of the kinds it has handlers for by
// setting a lease on them (its owner id and an end time) in one statement
// (on PostgreSQL with FOR UPDATE SKIP LOCKED, so replicas never wait for
// each other; SQLite has a single writer), runs each claimed job in its own
// goroutine (so one slow job, a gateway that does not answer, holds up no
// other), renews the lease while the handler runs, and then:
//   - on success deletes the job, or moves it to the next time the handler
//     asked for (a recurring job);
//   - on failure keeps it, with its error, and makes it due again after a
//     backoff (doubling from Kind.RetryMin up to Kind.RetryMax, with jitter);
//     a handler's Permanent error drops the job instead; a Wait error
//     makes it due again after the given delay without counting a failed
//     attempt (what it needs, a gateway, is away: Hurry makes it due at
//     once when it is back); an Elsewhere error releases it at once for
//     another replica and keeps this one from claiming it for a few polls.
//
// A replica that dies mid-job leaves a lease that ends: another replica (or
// the same one after a restart) takes the job over once the lease has
// expired, counting the lost run as a failed attempt. A handler whose lease
// is lost (another replica took it over after a stall) sees its context
// cancelled. Handlers must therefore be idempotent: a job may run again
// after a crash, never twice at the same time.
//
// Schedule (an upsert) may run inside the caller's transaction, so a job is
// created exactly when the change that needs it commits. Rescheduling a
// running job takes effect after the run: the run's own outcome does not
// overwrite the new schedule (the generation column tells them apart).
//
// How the files divide the work: jobs.go holds the types and Schedule,
// Cancel and Get; scheduler.go the claim loop, leases and outcomes.
package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Job is one claimed run of a job, as its handler sees it.
type Job struct {
	ID      string
	Kind    string
	Key     string
	Payload string
	// RunAt is when the job was due.
	RunAt time.Time
	// Attempt is 1 for the first run, and counts failed runs before this
	// one (including runs lost to a crash).
	Attempt int
	// LastError is the previous failed run's error, if any.
	LastError string
}

// Handler runs a job. It returns the next time the job is due for a
// recurring job, or the zero time when the job is done. An error keeps the
// job for a retry after a backoff, unless it is Permanent.
type Handler func(ctx context.Context, job Job) (next time.Time, err error)

// Kind is the registration of a job kind with a Scheduler.
type Kind struct {
	Name    string
	Handler Handler
	// Lease is how long a claim holds before another replica may take the
	// job over; the lease is renewed every Lease/3 while the handler runs.
	// Default 1 minute.
	Lease time.Duration
	// RetryMin and RetryMax bound the backoff after a failure; defaults
	// 5 seconds and 1 hour.
	RetryMin, RetryMax time.Duration
}

// permanent marks an error after which a job is dropped, not retried.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so that the job is dropped instead of retried.
func Permanent(err error) error { return permanent{err} }

// waiting marks an error after which a job is tried again after a fixed,
// short delay, without counting a failed attempt: what it needs (a
// gateway) is away, and it should run soon after it is back.
type waiting struct {
	err   error
	delay time.Duration
}

func (w waiting) Error() string { return w.err.Error() }
func (w waiting) Unwrap() error { return w.err }

// Wait wraps err so that the job is due again after delay, with err as its
// last error, but without a backoff or a failed attempt counted.
func Wait(delay time.Duration, err error) error { return waiting{err: err, delay: delay} }

// elsewhere marks a job that another replica should run.
type elsewhere struct{ err error }

func (e elsewhere) Error() string { return e.err.Error() }
func (e elsewhere) Unwrap() error { return e.err }

// Elsewhere wraps err (why not here) so that the job is released at once,
// still due and without a failed attempt counted, and this Scheduler does
// not claim it again for a few polls: another replica (the one a gateway
// is connected to, say) takes it.
func Elsewhere(err error) error { return elsewhere{err} }

// Hurry makes the jobs kind/keys that are not running due at now (jobs
// waiting for something that is back). It returns how many it moved.
func Hurry(ctx context.Context, q store.Querier, now time.Time, kind string, keys []string) (int, error) {
	n := 0
	for _, key := range keys {
		res, err := q.ExecContext(ctx, `UPDATE jobs SET run_at = $1 WHERE kind = $2 AND job_key = $3 AND run_at > $1 AND lease_until < $1`,
			store.Micros(now), kind, key)
		if err != nil {
			return n, errs.Wrap("jobs.Hurry", errs.Unavailable, fmt.Sprintf("moving %s jobs failed", kind), err)
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	return n, nil
}

// Status is a job's state in the store, for showing (Get).
type Status struct {
	Kind, Key string
	RunAt     time.Time // next due
	Attempts  int       // failed runs since the last success
	LastError string
	LastRunAt time.Time // zero: never ran
	Running   bool      // leased by a replica now
}

// Schedule creates the job kind/key due at runAt with payload, or, when it
// exists, moves it to runAt with the new payload and clears its failures.
// q may be the caller's transaction. A running job keeps running; its
// outcome then leaves the new schedule in place.
func Schedule(ctx context.Context, q store.Querier, now time.Time, kind, key string, runAt time.Time, payload string) error {
	const op = "jobs.Schedule"
	if kind == "" || key == "" {
		return errs.E(op, errs.Invalid, "a job needs a kind and a key")
	}
	n := store.Micros(now)
	_, err := q.ExecContext(ctx, `INSERT INTO jobs (id, kind, job_key, payload, run_at, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $6)
		ON CONFLICT (kind, job_key) DO UPDATE SET payload = excluded.payload, run_at = excluded.run_at,
			generation = jobs.generation + 1, attempts = 0, last_error = '', updated_at = excluded.updated_at`,
		uuid.Must(uuid.NewV7()).String(), kind, key, payload, store.Micros(runAt), n)
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, fmt.Sprintf("scheduling a %s job failed", kind), err)
	}
	return nil
}

// Cancel removes the job kind/key if it exists. A run in progress finishes,
// and its outcome is then discarded.
func Cancel(ctx context.Context, q store.Querier, kind, key string) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM jobs WHERE kind = $1 AND job_key = $2`, kind, key); err != nil {
		return errs.Wrap("jobs.Cancel", errs.Unavailable, fmt.Sprintf("cancelling a %s job failed", kind), err)
	}
	return nil
}

// ErrNoJob is returned by Get for a job that does not exist.
var ErrNoJob = errors.New("no such job")

// Get returns the status of job kind/key at now, or ErrNoJob.
func Get(ctx context.Context, q store.Querier, now time.Time, kind, key string) (Status, error) {
	st := Status{Kind: kind, Key: key}
	var runAt, lastRun, leaseUntil int64
	err := q.QueryRowContext(ctx, `SELECT run_at, attempts, last_error, last_run_at, lease_until
		FROM jobs WHERE kind = $1 AND job_key = $2`, kind, key).Scan(&runAt, &st.Attempts, &st.LastError, &lastRun, &leaseUntil)
	if errors.Is(err, sql.ErrNoRows) {
		return Status{}, ErrNoJob
	}
	if err != nil {
		return Status{}, errs.Wrap("jobs.Get", errs.Unavailable, "reading a job failed", err)
	}
	st.RunAt = store.Time(runAt)
	if lastRun > 0 {
		st.LastRunAt = store.Time(lastRun)
	}
	st.Running = leaseUntil > store.Micros(now)
	return st, nil
}
