package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/store"
)

// Scheduler claims and runs the due jobs of its kinds. Create it with New,
// Register every kind, then Run it.
type Scheduler struct {
	db    *store.DB
	owner string // this scheduler's lease owner id
	now   func() time.Time
	log   *slog.Logger
	poll  time.Duration
	slots chan struct{} // bounds the jobs running at once

	mu      sync.Mutex
	kinds   map[string]Kind
	skip    map[string]time.Time // job id -> not claimed here before then (Elsewhere)
	running sync.WaitGroup
	wake    chan struct{}
}

// Option configures a Scheduler.
type Option func(*Scheduler)

// WithClock sets the clock (default, or nil: time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Scheduler) {
		if now != nil {
			s.now = now
		}
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Scheduler) { s.log = l } }

// WithPollInterval sets how often the store is asked for due jobs (default
// 1 second); Kick asks at once.
func WithPollInterval(d time.Duration) Option { return func(s *Scheduler) { s.poll = d } }

// WithConcurrency bounds the jobs running at once in this scheduler
// (default 32).
func WithConcurrency(n int) Option {
	return func(s *Scheduler) { s.slots = make(chan struct{}, max(n, 1)) }
}

// New returns a Scheduler on db.
func New(db *store.DB, opts ...Option) *Scheduler {
	s := &Scheduler{db: db, owner: uuid.Must(uuid.NewV7()).String(), now: time.Now, log: slog.Default(),
		poll: time.Second, slots: make(chan struct{}, 32), kinds: map[string]Kind{}, skip: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Register adds a job kind. Register every kind before Run.
func (s *Scheduler) Register(k Kind) {
	if k.Lease <= 0 {
		k.Lease = time.Minute
	}
	if k.RetryMin <= 0 {
		k.RetryMin = 5 * time.Second
	}
	if k.RetryMax <= 0 {
		k.RetryMax = time.Hour
	}
	s.mu.Lock()
	s.kinds[k.Name] = k
	s.mu.Unlock()
}

// Kick makes Run look for due jobs now rather than at its next poll (after
// a Schedule of a job due at once, say).
func (s *Scheduler) Kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run claims and runs due jobs until ctx ends, then waits for the running
// ones to return (their contexts are cancelled with ctx).
func (s *Scheduler) Run(ctx context.Context) {
	t := time.NewTicker(s.poll)
	defer t.Stop()
	defer s.running.Wait()
	for {
		s.RunDue(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}

// RunDue claims the jobs due now, as many as there are free slots, and
// starts each in its own goroutine. Run calls it every poll; tests call it
// after moving the clock. Use Wait to wait for the started jobs.
func (s *Scheduler) RunDue(ctx context.Context) {
	for ctx.Err() == nil {
		free := cap(s.slots) - len(s.slots)
		if free == 0 {
			return
		}
		claimed, err := s.claim(ctx, free)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("claiming due jobs failed; trying again at the next poll", "err", err)
			}
			return
		}
		for _, c := range claimed {
			s.slots <- struct{}{}
			s.running.Add(1)
			go func() {
				defer func() { <-s.slots; s.running.Done() }()
				s.execute(ctx, c)
			}()
		}
		if len(claimed) < free {
			return
		}
	}
}

// Wait waits until the jobs started so far have returned.
func (s *Scheduler) Wait() { s.running.Wait() }

// claimed is a job this scheduler holds the lease of.
type claimed struct {
	Job
	generation int64
	kind       Kind
}

// claim leases up to n due jobs of the registered kinds.
func (s *Scheduler) claim(ctx context.Context, n int) ([]claimed, error) {
	now := s.now()
	s.mu.Lock()
	names := make([]string, 0, len(s.kinds))
	kinds := make(map[string]Kind, len(s.kinds))
	for name, k := range s.kinds {
		names = append(names, name)
		kinds[name] = k
	}
	var skipped []string
	for id, until := range s.skip {
		if time.Now().After(until) {
			delete(s.skip, id)
		} else {
			skipped = append(skipped, id)
		}
	}
	s.mu.Unlock()
	if len(names) == 0 {
		return nil, nil
	}
	nowUS := store.Micros(now)
	args := []any{s.owner, nowUS, n}
	ph := make([]string, len(names))
	for i, name := range names {
		args = append(args, name)
		ph[i] = fmt.Sprintf("$%d", len(args))
	}
	notHere := ""
	if len(skipped) > 0 {
		sp := make([]string, len(skipped))
		for i, id := range skipped {
			args = append(args, id)
			sp[i] = fmt.Sprintf("$%d", len(args))
		}
		notHere = " AND id NOT IN (" + strings.Join(sp, ", ") + ")"
	}
	lock := ""
	if s.db.Dialect == store.Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	// The lease's end is set per kind after the claim; until then the
	// claim holds for the shortest registered lease from now (below).
	// A stale lease (its owner stopped) counts as a failed attempt.
	q := `UPDATE jobs SET lease_owner = $1, lease_until = $2 + 60000000,
			attempts = CASE WHEN lease_owner <> '' THEN attempts + 1 ELSE attempts END,
			last_error = CASE WHEN lease_owner <> '' THEN 'the server running it stopped before it finished' ELSE last_error END,
			last_run_at = $2, updated_at = $2
		WHERE id IN (SELECT id FROM jobs WHERE kind IN (` + strings.Join(ph, ", ") + `)
			AND run_at <= $2 AND lease_until < $2` + notHere + ` ORDER BY run_at LIMIT $3` + lock + `)
		RETURNING id, kind, job_key, payload, run_at, attempts, last_error, generation`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []claimed
	for rows.Next() {
		var c claimed
		var runAt int64
		if err := rows.Scan(&c.ID, &c.Kind, &c.Key, &c.Payload, &runAt, &c.Attempt, &c.LastError, &c.generation); err != nil {
			return nil, err
		}
		c.RunAt = store.Time(runAt)
		c.Attempt++
		c.kind = kinds[c.Kind]
		out = append(out, c)
	}
	return out, rows.Err()
}

// execute runs one claimed job under its lease and records the outcome.
func (s *Scheduler) execute(ctx context.Context, c claimed) {
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !s.extend(ctx, c) {
		return // taken over already
	}
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(c.kind.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-jctx.Done():
				return
			case <-t.C:
				if !s.extend(jctx, c) && jctx.Err() == nil {
					s.log.Warn("a job's lease was lost (another server took it over); stopping it", "kind", c.Kind, "key", c.Key)
					cancel()
					return
				}
			}
		}
	}()
	next, err := s.call(jctx, c)
	cancel()
	<-renewed
	if ctx.Err() != nil && err != nil {
		// Shutting down: leave the lease to expire so the job is taken
		// over, rather than recording the cancellation as its failure.
		s.release(c, "the server stopped while it ran")
		return
	}
	s.finish(c, next, err)
}

// call runs the handler, turning a panic into an error.
func (s *Scheduler) call(ctx context.Context, c claimed) (next time.Time, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the job panicked: %v", r)
		}
	}()
	return c.kind.Handler(ctx, c.Job)
}

// extend renews the job's lease; it reports false when the lease is no
// longer this scheduler's.
func (s *Scheduler) extend(ctx context.Context, c claimed) bool {
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3`,
		store.Micros(s.now().Add(c.kind.Lease)), c.ID, s.owner)
	if err != nil {
		// The store is away: keep going; the lease may still hold.
		return true
	}
	n, _ := res.RowsAffected()
	return n == 1
}

// finish records a run's outcome, unless the job was rescheduled or
// cancelled meanwhile (then only the lease is released).
func (s *Scheduler) finish(c claimed, next time.Time, runErr error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := s.now()
	var perm permanent
	var wait waiting
	var away elsewhere
	var err error
	var n int64
	switch {
	case errors.As(runErr, &away):
		// Another replica runs it: due still, no attempt counted, and not
		// claimed here for a while (the claim's count of a stale lease
		// does not apply: this lease is released, not lost).
		s.mu.Lock()
		s.skip[c.ID] = time.Now().Add(max(5*s.poll, 3*time.Second))
		s.mu.Unlock()
		s.log.Debug("a job is left to another server", "kind", c.Kind, "key", c.Key, "why", runErr)
		n, err = s.exec(ctx, `UPDATE jobs SET lease_owner = '', lease_until = 0, updated_at = $1
			WHERE id = $2 AND lease_owner = $3 AND generation = $4`, store.Micros(now), c.ID, s.owner, c.generation)
	case errors.As(runErr, &wait):
		n, err = s.exec(ctx, `UPDATE jobs SET run_at = $1, last_error = $2, lease_owner = '', lease_until = 0, updated_at = $3
			WHERE id = $4 AND lease_owner = $5 AND generation = $6`,
			store.Micros(now.Add(wait.delay)), truncate(runErr.Error(), 2000), store.Micros(now), c.ID, s.owner, c.generation)
	case runErr == nil && next.IsZero(), errors.As(runErr, &perm):
		if runErr != nil {
			s.log.Error("a job failed for good and is dropped", "kind", c.Kind, "key", c.Key, "err", runErr)
		}
		n, err = s.exec(ctx, `DELETE FROM jobs WHERE id = $1 AND lease_owner = $2 AND generation = $3`, c.ID, s.owner, c.generation)
	case runErr == nil:
		n, err = s.exec(ctx, `UPDATE jobs SET run_at = $1, attempts = 0, last_error = '', lease_owner = '', lease_until = 0, updated_at = $2
			WHERE id = $3 AND lease_owner = $4 AND generation = $5`,
			store.Micros(next), store.Micros(now), c.ID, s.owner, c.generation)
	default:
		delay := backoff(c.kind, c.Attempt)
		s.log.Warn("a job failed; it will be retried", "kind", c.Kind, "key", c.Key, "attempt", c.Attempt, "retryIn", delay.Round(time.Second), "err", runErr)
		n, err = s.exec(ctx, `UPDATE jobs SET run_at = $1, attempts = attempts + 1, last_error = $2, lease_owner = '', lease_until = 0, updated_at = $3
			WHERE id = $4 AND lease_owner = $5 AND generation = $6`,
			store.Micros(now.Add(delay)), truncate(runErr.Error(), 2000), store.Micros(now), c.ID, s.owner, c.generation)
	}
	if err != nil {
		s.log.Error("recording a job's outcome failed; it runs again when its lease ends", "kind", c.Kind, "key", c.Key, "err", err)
		return
	}
	if n == 0 {
		s.release(c, "")
	}
}

// release gives up the lease of a job whose outcome is not recorded: it is
// due again at once (after a shutdown, for the next server) or, when it
// was rescheduled meanwhile, at its new time.
func (s *Scheduler) release(c claimed, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := `UPDATE jobs SET lease_owner = '', lease_until = 0 WHERE id = $1 AND lease_owner = $2`
	args := []any{c.ID, s.owner}
	if why != "" {
		q = `UPDATE jobs SET lease_owner = '', lease_until = 0, last_error = $3 WHERE id = $1 AND lease_owner = $2`
		args = append(args, why)
	}
	if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
		s.log.Warn("releasing a job's lease failed; it is taken over when the lease ends", "kind", c.Kind, "key", c.Key, "err", err)
	}
}

func (s *Scheduler) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// backoff is the delay before retrying after failed attempt n (1-based):
// RetryMin doubled per attempt up to RetryMax, minus up to 20% jitter.
func backoff(k Kind, attempt int) time.Duration {
	d := k.RetryMin
	for i := 1; i < attempt && d < k.RetryMax; i++ {
		d *= 2
	}
	d = min(d, k.RetryMax)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
