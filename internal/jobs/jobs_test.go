package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupShared()
	os.Exit(code)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// stores runs f on an embedded store and on a PostgreSQL one.
func stores(t *testing.T, f func(t *testing.T, open func() *store.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		var once sync.Once
		var db *store.DB
		f(t, func() *store.DB {
			once.Do(func() { db = openStore(t, store.Config{DataDir: dir}) })
			return db
		})
	})
	t.Run("postgres", func(t *testing.T) {
		url := testenv.SharedPostgres(t).SuperURL()
		// Each call is its own pool, as each server replica has.
		f(t, func() *store.DB { return openStore(t, store.Config{DatabaseURL: url}) })
	})
}

func openStore(t *testing.T, cfg store.Config) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func schedule(t *testing.T, db *store.DB, now time.Time, kind, key string, at time.Time) {
	t.Helper()
	if err := jobs.Schedule(context.Background(), db, now, kind, key, at, "payload of "+key); err != nil {
		t.Fatal(err)
	}
}

func TestJobRunsWhenDueAndOnlyThen(t *testing.T) {
	stores(t, func(t *testing.T, open func() *store.DB) {
		db := open()
		clock := testenv.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
		var got []jobs.Job
		var mu sync.Mutex
		s := jobs.New(db, jobs.WithClock(clock.Now), jobs.WithLogger(quiet))
		s.Register(jobs.Kind{Name: "expire", Handler: func(_ context.Context, j jobs.Job) (time.Time, error) {
			mu.Lock()
			got = append(got, j)
			mu.Unlock()
			return time.Time{}, nil
		}})
		ctx := context.Background()
		schedule(t, db, clock.Now(), "expire", "s1", clock.Now().Add(time.Hour))
		s.RunDue(ctx)
		s.Wait()
		if len(got) != 0 {
			t.Fatalf("a job due in an hour ran now: %+v", got)
		}
		clock.Advance(time.Hour)
		s.RunDue(ctx)
		s.Wait()
		if len(got) != 1 || got[0].Key != "s1" || got[0].Payload != "payload of s1" || got[0].Attempt != 1 {
			t.Fatalf("when due: ran %+v", got)
		}
		// Done: it is gone and does not run again.
		if _, err := jobs.Get(ctx, db, clock.Now(), "expire", "s1"); !errors.Is(err, jobs.ErrNoJob) {
			t.Fatalf("a finished job is still there: %v", err)
		}
		clock.Advance(time.Hour)
		s.RunDue(ctx)
		s.Wait()
		if len(got) != 1 {
			t.Fatalf("a finished job ran again: %d runs", len(got))
		}
	})
}

func TestRecurringJobAndRetriesWithBackoff(t *testing.T) {
	stores(t, func(t *testing.T, open func() *store.DB) {
		db := open()
		ctx := context.Background()
		clock := testenv.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
		var runs atomic.Int32
		fail := atomic.Bool{}
		fail.Store(true)
		s := jobs.New(db, jobs.WithClock(clock.Now), jobs.WithLogger(quiet))
		s.Register(jobs.Kind{Name: "rotate", RetryMin: time.Minute, RetryMax: 10 * time.Minute,
			Handler: func(_ context.Context, j jobs.Job) (time.Time, error) {
				runs.Add(1)
				if fail.Load() {
					return time.Time{}, fmt.Errorf("the gateway is offline (attempt %d)", j.Attempt)
				}
				return clock.Now().Add(24 * time.Hour), nil
			}})
		schedule(t, db, clock.Now(), "rotate", "acct", clock.Now())
		s.RunDue(ctx)
		s.Wait()
		st, err := jobs.Get(ctx, db, clock.Now(), "rotate", "acct")
		if err != nil || st.Attempts != 1 || st.LastError != "the gateway is offline (attempt 1)" {
			t.Fatalf("after a failure: %+v %v", st, err)
		}
		if d := st.RunAt.Sub(clock.Now()); d > time.Minute || d < 48*time.Second {
			t.Fatalf("first retry in %s, want about a minute (20%% jitter)", d)
		}
		// Not before the backoff.
		clock.Advance(30 * time.Second)
		s.RunDue(ctx)
		s.Wait()
		if runs.Load() != 1 {
			t.Fatalf("retried before the backoff ended: %d runs", runs.Load())
		}
		clock.Advance(31 * time.Second)
		s.RunDue(ctx)
		s.Wait()
		st, _ = jobs.Get(ctx, db, clock.Now(), "rotate", "acct")
		if runs.Load() != 2 || st.Attempts != 2 {
			t.Fatalf("second attempt: %d runs, %+v", runs.Load(), st)
		}
		if d := st.RunAt.Sub(clock.Now()); d > 2*time.Minute || d < 96*time.Second {
			t.Fatalf("second retry in %s, want about two minutes", d)
		}
		// It works: the failures are cleared and it is due again a day later.
		fail.Store(false)
		clock.Advance(2 * time.Minute)
		s.RunDue(ctx)
		s.Wait()
		st, err = jobs.Get(ctx, db, clock.Now(), "rotate", "acct")
		if err != nil || st.Attempts != 0 || st.LastError != "" || !st.RunAt.Equal(clock.Now().Add(24*time.Hour)) {
			t.Fatalf("after a success: %+v %v", st, err)
		}
		if st.LastRunAt.IsZero() {
			t.Fatalf("the last run's time is not recorded")
		}
	})
}

// Two replicas on one store, many due jobs: each job runs exactly once,
// and never on both at the same time.
func TestTwoReplicasRunEachJobOnce(t *testing.T) {
	stores(t, func(t *testing.T, open func() *store.DB) {
		ctx := context.Background()
		db1, db2 := open(), open()
		now := time.Now()
		const n = 60
		for i := range n {
			schedule(t, db1, now, "expire", fmt.Sprint(i), now.Add(-time.Second))
		}
		var mu sync.Mutex
		runs := map[string]int{}
		var inFlight, maxInFlight atomic.Int32
		handler := func(_ context.Context, j jobs.Job) (time.Time, error) {
			if v := inFlight.Add(1); v > maxInFlight.Load() {
				maxInFlight.Store(v)
			}
			time.Sleep(5 * time.Millisecond)
			inFlight.Add(-1)
			mu.Lock()
			runs[j.Key]++
			mu.Unlock()
			return time.Time{}, nil
		}
		start := time.Now()
		defer func() { t.Logf("%d jobs on two replicas took %s", n, time.Since(start)) }()
		var wg sync.WaitGroup
		for _, db := range []*store.DB{db1, db2} {
			s := jobs.New(db, jobs.WithLogger(quiet), jobs.WithConcurrency(8))
			s.Register(jobs.Kind{Name: "expire", Handler: handler})
			wg.Add(1)
			go func() {
				defer wg.Done()
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					s.RunDue(ctx)
					time.Sleep(10 * time.Millisecond)
					var left int
					if err := db.QueryRowContext(ctx, `SELECT count(*) FROM jobs`).Scan(&left); err == nil && left == 0 {
						break
					}
				}
				s.Wait()
			}()
		}
		wg.Wait()
		for i := range n {
			if runs[fmt.Sprint(i)] != 1 {
				t.Errorf("job %d ran %d times", i, runs[fmt.Sprint(i)])
			}
		}
	})
}

// A replica that dies mid-job leaves a lease; another takes the job over
// once the lease has ended, and counts the lost run as a failed attempt.
// A lease that still holds is left alone.
func TestStaleLeaseIsTakenOver(t *testing.T) {
	stores(t, func(t *testing.T, open func() *store.DB) {
		db := open()
		ctx := context.Background()
		clock := testenv.NewClock(time.Now())
		schedule(t, db, clock.Now(), "rotate", "acct", clock.Now())
		// The dead replica's lease, ending in 30 s.
		if _, err := db.ExecContext(ctx, `UPDATE jobs SET lease_owner = 'dead replica', lease_until = $1`,
			store.Micros(clock.Now().Add(30*time.Second))); err != nil {
			t.Fatal(err)
		}
		var got []jobs.Job
		s := jobs.New(db, jobs.WithClock(clock.Now), jobs.WithLogger(quiet))
		s.Register(jobs.Kind{Name: "rotate", Handler: func(_ context.Context, j jobs.Job) (time.Time, error) {
			got = append(got, j)
			return time.Time{}, nil
		}})
		s.RunDue(ctx)
		s.Wait()
		if len(got) != 0 {
			t.Fatalf("a job under a live lease was run by another replica")
		}
		clock.Advance(31 * time.Second)
		s.RunDue(ctx)
		s.Wait()
		if len(got) != 1 || got[0].Attempt != 2 || got[0].LastError == "" {
			t.Fatalf("after the lease ended: %+v", got)
		}
	})
}

// One slow job (a gateway that does not answer) holds up no other job.
func TestSlowJobHoldsUpNoOther(t *testing.T) {
	stores(t, func(t *testing.T, open func() *store.DB) {
		db := open()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		now := time.Now()
		schedule(t, db, now, "rotate", "slow", now.Add(-time.Minute))
		release := make(chan struct{})
		done := make(chan string, 10)
		s := jobs.New(db, jobs.WithLogger(quiet), jobs.WithPollInterval(20*time.Millisecond))
		s.Register(jobs.Kind{Name: "rotate", Handler: func(ctx context.Context, j jobs.Job) (time.Time, error) {
			if j.Key == "slow" {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			done <- j.Key
			return time.Time{}, nil
		}})
		go s.Run(ctx)
		time.Sleep(100 * time.Millisecond) // the slow one is running
		for i := range 3 {
			schedule(t, db, time.Now(), "rotate", fmt.Sprint("fast", i), time.Now())
		}
		s.Kick()
		for range 3 {
			select {
			case k := <-done:
				if k == "slow" {
					t.Fatal("the slow job finished before it was released")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("jobs waited behind a slow one")
			}
		}
		close(release)
		if k := <-done; k != "slow" {
			t.Fatalf("got %s", k)
		}
	})
}

// Rescheduling a running job keeps the new schedule: the run's outcome
// does not overwrite it. A job cancelled while it runs is not recreated.
func TestRescheduleOrCancelDuringARun(t *testing.T) {
	stores(t, func(t *testing.T, open func() *store.DB) {
		db := open()
		ctx := context.Background()
		clock := testenv.NewClock(time.Now())
		schedule(t, db, clock.Now(), "rotate", "a", clock.Now())
		schedule(t, db, clock.Now(), "rotate", "b", clock.Now())
		later := clock.Now().Add(3 * time.Hour).Truncate(time.Microsecond)
		s := jobs.New(db, jobs.WithClock(clock.Now), jobs.WithLogger(quiet))
		s.Register(jobs.Kind{Name: "rotate", Handler: func(ctx context.Context, j jobs.Job) (time.Time, error) {
			if j.Key == "a" {
				schedule(t, db, clock.Now(), "rotate", "a", later) // an admin changed the interval
				return clock.Now().Add(24 * time.Hour), nil
			}
			if err := jobs.Cancel(ctx, db, "rotate", "b"); err != nil { // the account was deleted
				t.Error(err)
			}
			return time.Time{}, errors.New("failed")
		}})
		s.RunDue(ctx)
		s.Wait()
		st, err := jobs.Get(ctx, db, clock.Now(), "rotate", "a")
		if err != nil || !st.RunAt.Equal(later) || st.Running {
			t.Fatalf("a rescheduled running job: %+v %v; want due at %s, not leased", st, err, later)
		}
		if _, err := jobs.Get(ctx, db, clock.Now(), "rotate", "b"); !errors.Is(err, jobs.ErrNoJob) {
			t.Fatalf("a job cancelled while running came back: %v", err)
		}
	})
}

// A handler whose lease was taken over (it stalled past its lease) has its
// context cancelled; a permanent error drops the job.
func TestLostLeaseCancelsAndPermanentDrops(t *testing.T) {
	stores(t, func(t *testing.T, open func() *store.DB) {
		db := open()
		ctx := context.Background()
		now := time.Now()
		schedule(t, db, now, "rotate", "stall", now)
		schedule(t, db, now, "rotate", "bad", now)
		cancelled := make(chan struct{})
		s := jobs.New(db, jobs.WithLogger(quiet))
		s.Register(jobs.Kind{Name: "rotate", Lease: 300 * time.Millisecond, Handler: func(ctx context.Context, j jobs.Job) (time.Time, error) {
			if j.Key == "bad" {
				return time.Time{}, jobs.Permanent(errors.New("the account no longer exists"))
			}
			// Another replica takes the job over.
			if _, err := db.ExecContext(context.Background(), `UPDATE jobs SET lease_owner = 'other' WHERE job_key = 'stall'`); err != nil {
				t.Error(err)
			}
			select {
			case <-ctx.Done():
				close(cancelled)
			case <-time.After(20 * time.Second):
			}
			return time.Time{}, ctx.Err()
		}})
		s.RunDue(ctx)
		s.Wait()
		select {
		case <-cancelled:
		default:
			t.Fatal("a handler whose lease was taken over kept running")
		}
		if _, err := jobs.Get(ctx, db, now, "rotate", "bad"); !errors.Is(err, jobs.ErrNoJob) {
			t.Fatalf("a permanently failed job is kept: %v", err)
		}
		var owner string
		if err := db.QueryRowContext(ctx, `SELECT lease_owner FROM jobs WHERE job_key = 'stall'`).Scan(&owner); err != nil || owner != "other" {
			t.Fatalf("the replica that lost the lease changed the job: owner %q %v", owner, err)
		}
	})
}

// A job that waits (jobs.Wait) is due again after its delay with no failed
// attempt counted; a job left to another replica (jobs.Elsewhere) is due
// still, runs on the other replica at its next poll, and is not claimed
// again by the first for a while; Hurry makes a waiting job due now.
func TestWaitElsewhereAndHurry(t *testing.T) {
	stores(t, func(t *testing.T, open func() *store.DB) {
		ctx := context.Background()
		clock := testenv.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
		dbA, dbB := open(), open()
		var onA, onB atomic.Int32
		wait := atomic.Bool{}
		wait.Store(true)
		a := jobs.New(dbA, jobs.WithClock(clock.Now), jobs.WithLogger(quiet))
		a.Register(jobs.Kind{Name: "rotate", RetryMin: time.Hour, Handler: func(_ context.Context, j jobs.Job) (time.Time, error) {
			onA.Add(1)
			if wait.Load() {
				return time.Time{}, jobs.Wait(10*time.Second, errors.New("waiting for gateway dc1"))
			}
			return time.Time{}, jobs.Elsewhere(errors.New("the gateway is connected to another server"))
		}})
		b := jobs.New(dbB, jobs.WithClock(clock.Now), jobs.WithLogger(quiet))
		b.Register(jobs.Kind{Name: "rotate", Handler: func(context.Context, jobs.Job) (time.Time, error) {
			onB.Add(1)
			return time.Time{}, nil
		}})
		schedule(t, dbA, clock.Now(), "rotate", "acct", clock.Now())
		a.RunDue(ctx)
		a.Wait()
		st, err := jobs.Get(ctx, dbA, clock.Now(), "rotate", "acct")
		if err != nil || st.Attempts != 0 || st.LastError != "waiting for gateway dc1" || !st.RunAt.Equal(clock.Now().Add(10*time.Second)) {
			t.Fatalf("after a wait: %+v %v", st, err)
		}
		// Hurry: due now.
		if n, err := jobs.Hurry(ctx, dbA, clock.Now(), "rotate", []string{"acct", "other"}); err != nil || n != 1 {
			t.Fatalf("hurry: %d %v", n, err)
		}
		wait.Store(false)
		a.RunDue(ctx)
		a.Wait()
		st, err = jobs.Get(ctx, dbA, clock.Now(), "rotate", "acct")
		if err != nil || st.Attempts != 0 || st.Running || st.RunAt.After(clock.Now()) || onA.Load() != 2 {
			t.Fatalf("after a hand-off: %+v %v (%d runs on A)", st, err, onA.Load())
		}
		// A does not take it again; B does.
		a.RunDue(ctx)
		a.Wait()
		if onA.Load() != 2 {
			t.Fatalf("A claimed a job it left to another replica: %d runs", onA.Load())
		}
		b.RunDue(ctx)
		b.Wait()
		if onB.Load() != 1 {
			t.Fatalf("B ran it %d times", onB.Load())
		}
		if _, err := jobs.Get(ctx, dbA, clock.Now(), "rotate", "acct"); !errors.Is(err, jobs.ErrNoJob) {
			t.Fatalf("the job is still there after B ran it: %v", err)
		}
	})
}
