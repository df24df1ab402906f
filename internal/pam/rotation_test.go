package pam_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/pam"
	"github.com/airlockpam/airlock/internal/proxy/postgres"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// pgRotator changes passwords in a real PostgreSQL as a gateway does
// (postgres.Rotate); loseAnswer makes it lose the gateway's answer after
// the database has changed the password, as a crash or a cut connection
// between the gateway and the server would.
type pgRotator struct {
	mu         sync.Mutex
	loseAnswer bool
	calls      int
	// hold, when set, makes Rotate wait for it to be closed first (a slow
	// gateway); started is signalled when a held Rotate begins.
	hold    chan struct{}
	started chan struct{}
}

func (r *pgRotator) Rotate(ctx context.Context, _ string, admin tunnel.Target, rot tunnel.Rotation) (tunnel.Result, error) {
	r.mu.Lock()
	r.calls++
	lose, hold, started := r.loseAnswer, r.hold, r.started
	r.mu.Unlock()
	if hold != nil {
		started <- struct{}{}
		<-hold
	}
	res := postgres.Rotate(ctx, postgres.ConfigFromTarget(admin), rot)
	if lose {
		return tunnel.Result{}, errors.New("the gateway's connection dropped before it answered")
	}
	return res, nil
}

func (r *pgRotator) lose(v bool) {
	r.mu.Lock()
	r.loseAnswer = v
	r.mu.Unlock()
}

// logsIn reports whether user logs in to db with password.
func logsIn(t *testing.T, db testenv.Database, user, password string) bool {
	t.Helper()
	c := db.Cluster
	url := c.URL(user, password, db.Name, "verify-full")
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		return false
	}
	conn.Close(context.Background())
	return true
}

// storedPassword returns the account's current password as sealed in the
// store (what new connections get).
func storedPassword(t *testing.T, e *env, projectID, resource, account string) string {
	t.Helper()
	_, _, target, err := e.pam.SessionTarget(context.Background(), projectID, resource, account)
	if err != nil {
		t.Fatal(err)
	}
	return target.Password
}

func TestAccountRotation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		ctx := context.Background()
		clock := e.clock
		sch := jobs.New(e.db, jobs.WithClock(clock.Now), jobs.WithPollInterval(100*time.Millisecond))
		e.pam.UseJobs(sch)
		runDue := func() { sch.RunDue(ctx); sch.Wait() }

		// A role of its own, so that changing its password disturbs no
		// other test.
		role := fmt.Sprintf("rot_app_%s", b.name)
		super, err := pgx.Connect(ctx, e.target.SuperURL())
		if err != nil {
			t.Fatal(err)
		}
		defer super.Close(ctx)
		const first = "first-Pa55-of-the-app"
		if _, err := super.Exec(ctx, `DROP ROLE IF EXISTS `+role); err != nil {
			t.Fatal(err)
		}
		if _, err := super.Exec(ctx, `CREATE ROLE `+role+` LOGIN PASSWORD '`+first+`'`); err != nil {
			t.Fatal(err)
		}
		if _, err := super.Exec(ctx, `GRANT CONNECT ON DATABASE "`+e.target.Name+`" TO `+role); err != nil {
			t.Fatal(err)
		}

		owner := e.createUser("owner@example.com")
		pid := owner.project("payments")
		base := "/api/v1/projects/" + pid
		owner.must(201, "POST", base+"/resources", e.pgResource("plain"), nil)
		res := e.pgResource("orders-db")
		res["rotationUsername"], res["rotationPassword"] = rotatorUser, rotatorPassword
		var r map[string]any
		owner.must(201, "POST", base+"/resources", res, &r)

		// Bad input changes nothing.
		acct := map[string]any{"resource": "orders-db", "name": "app", "username": role, "password": first}
		for _, bad := range []struct {
			body map[string]any
			says string
		}{
			{map[string]any{"rotationInterval": "2d"}, "1d, 3d, 7d, 30d"},
			{map[string]any{"resource": "plain", "rotationInterval": "1d"}, "no rotation account"},
			{map[string]any{"username": rotatorUser, "password": rotatorPassword, "rotationInterval": "1d"}, "rotation account"},
		} {
			body := map[string]any{}
			for k, v := range acct {
				body[k] = v
			}
			for k, v := range bad.body {
				body[k] = v
			}
			p := owner.fails(422, "", "POST", base+"/accounts", body)
			if !strings.Contains(p.raw, bad.says) {
				t.Errorf("%v: %s, want it to say %q", bad.body, p.raw, bad.says)
			}
		}

		acct["rotationInterval"] = "1d"
		var got pam.Account
		owner.must(201, "POST", base+"/accounts", acct, &got)
		if !got.Rotation.Enabled || got.Rotation.Interval != "1d" || got.Rotation.Status != pam.RotationScheduled ||
			got.Rotation.NextDueAt == nil || time.Until(*got.Rotation.NextDueAt) < 23*time.Hour {
			t.Fatalf("a new rotating account: %+v", got.Rotation)
		}
		resourceID := r["id"].(string)

		// Not before it is due.
		runDue()
		if e.rotator.calls != 0 {
			t.Fatalf("rotated before it was due")
		}
		// A day later: rotated, the old password no longer logs in, the
		// stored one does, and the next rotation is a day later.
		clock.Advance(25 * time.Hour)
		runDue()
		owner.must(200, "GET", base+"/accounts/app", nil, &got)
		if got.Rotation.Status != pam.RotationOK || got.Rotation.LastRotatedAt == nil {
			t.Fatalf("after the due time: %+v", got.Rotation)
		}
		second := storedPassword(t, e, pid, resourceID, got.ID)
		if second == first || logsIn(t, e.target, role, first) || !logsIn(t, e.target, role, second) {
			t.Fatalf("after a rotation: the old password logs in %v, the stored one %v",
				logsIn(t, e.target, role, first), logsIn(t, e.target, role, second))
		}
		if acts := strings.Join(e.auditActions(), " "); !strings.Contains(acts, "account.rotate") {
			t.Errorf("the rotation is not audited: %s", acts)
		}

		// From here on the scheduler runs, as in a server, for rotations
		// started with RotateNow.
		runCtx, stop := context.WithCancel(ctx)
		defer stop()
		go sch.Run(runCtx)

		// The answer is lost after the database changed the password (a
		// crash between ALTER and promote): the account is marked failed,
		// and the next run finds that the new password logs in and keeps
		// it, then rotates again. At every step a stored password logs in.
		e.rotator.lose(true)
		p := owner.fails(503, "", "POST", base+"/accounts/app/rotate", nil)
		if !strings.Contains(p.raw, "checks which password logs in") {
			t.Errorf("a lost answer says: %s", p.raw)
		}
		if logsIn(t, e.target, role, second) {
			t.Fatalf("the database did not change the password in the lost-answer case")
		}
		e.rotator.lose(false)
		clock.Advance(2 * time.Hour) // past the retry backoff
		runDue()
		owner.must(200, "GET", base+"/accounts/app", nil, &got)
		third := storedPassword(t, e, pid, resourceID, got.ID)
		if got.Rotation.Status != pam.RotationOK || !logsIn(t, e.target, role, third) || third == second {
			t.Fatalf("after the lost answer was settled: %+v, stored password logs in: %v", got.Rotation, logsIn(t, e.target, role, third))
		}

		// A rotation account without the privilege: the password is left
		// as it is, and the error says what to grant.
		if _, err := super.Exec(ctx, `DO $$ BEGIN CREATE ROLE weak_rotator LOGIN PASSWORD 'weak-rotator-Pa55';
			EXCEPTION WHEN duplicate_object THEN NULL; END $$`); err != nil {
			t.Fatal(err)
		}
		owner.must(200, "PATCH", base+"/resources/orders-db", map[string]any{"rotationUsername": "weak_rotator", "rotationPassword": "weak-rotator-Pa55"}, nil)
		p = owner.fails(503, "", "POST", base+"/accounts/app/rotate", nil)
		if !strings.Contains(p.raw, "CREATEROLE") {
			t.Errorf("a rotation account without the privilege: %s", p.raw)
		}
		owner.must(200, "GET", base+"/accounts/app", nil, &got)
		if got.Rotation.Status != pam.RotationFailed || !strings.Contains(got.Rotation.LastError, "GRANT") ||
			storedPassword(t, e, pid, resourceID, got.ID) != third || !logsIn(t, e.target, role, third) {
			t.Fatalf("after a refused rotation: %+v", got.Rotation)
		}

		// Turning rotation off removes the job; deleting the account too.
		owner.must(200, "PATCH", base+"/accounts/app", map[string]any{"rotationInterval": "off"}, &got)
		if got.Rotation.Enabled || got.Rotation.Status != pam.RotationOff {
			t.Fatalf("rotation off: %+v", got.Rotation)
		}
		if _, err := jobs.Get(ctx, e.db, clock.Now(), pam.KindRotate, got.ID); !errors.Is(err, jobs.ErrNoJob) {
			t.Fatalf("rotation off left its job: %v", err)
		}
		for _, s := range e.bodies {
			for _, pw := range []string{second, third} {
				if strings.Contains(s, pw) {
					t.Fatalf("an API answer holds a rotated password")
				}
			}
		}
	})
}

// TestDeleteWhileRotating: deleting an account whose rotation is running is
// a Conflict that changes nothing; once the rotation is over, it works.
func TestDeleteWhileRotating(t *testing.T) {
	forEachBackend(t, testDeleteWhileRotating)
}

func testDeleteWhileRotating(t *testing.T, b backend) {
	e := start(t, b)
	ctx := context.Background()
	sch := jobs.New(e.db, jobs.WithClock(e.clock.Now), jobs.WithPollInterval(50*time.Millisecond))
	e.pam.UseJobs(sch)
	role := "rot_del_app_" + b.name
	super, err := pgx.Connect(ctx, e.target.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	for _, stmt := range []string{`DROP ROLE IF EXISTS ` + role, `CREATE ROLE ` + role + ` LOGIN PASSWORD 'first-Pa55'`,
		`GRANT CONNECT ON DATABASE "` + e.target.Name + `" TO ` + role} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	owner := e.createUser("owner@example.com")
	pid := owner.project("payments")
	base := "/api/v1/projects/" + pid
	res := e.pgResource("orders-db")
	res["rotationUsername"], res["rotationPassword"] = rotatorUser, rotatorPassword
	owner.must(201, "POST", base+"/resources", res, nil)
	owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app", "username": role,
		"password": "first-Pa55", "rotationInterval": "7d"}, nil)

	rot := e.rotator
	hold, started := make(chan struct{}), make(chan struct{}, 1)
	rot.mu.Lock()
	rot.hold, rot.started = hold, started
	rot.mu.Unlock()
	jctx, stop := context.WithCancel(ctx)
	defer stop()
	go sch.Run(jctx)
	done := make(chan int, 1)
	go func() { done <- owner.call("POST", base+"/accounts/app/rotate?resource=orders-db", nil, nil) }()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the rotation did not start")
	}
	p := owner.fails(409, "", "DELETE", base+"/accounts/app?resource=orders-db", nil)
	if !strings.Contains(p.raw, "being rotated right now") || !strings.Contains(p.raw, "Nothing was changed") {
		t.Fatalf("delete while rotating: %s", p.raw)
	}
	close(hold)
	if st := <-done; st != 200 {
		t.Fatalf("rotate: %d", st)
	}
	owner.must(204, "DELETE", base+"/accounts/app?resource=orders-db", nil, nil)
}

// TestUpdateDuringRotationKeepsTheRotatedPassword: an account update that
// read the account before a rotation promoted its new password is refused
// (409) instead of writing the old password back over the new one, which
// the database alone would then take.
func TestUpdateDuringRotationKeepsTheRotatedPassword(t *testing.T) {
	forEachBackend(t, testUpdateDuringRotation)
}

func testUpdateDuringRotation(t *testing.T, b backend) {
	e := start(t, b)
	ctx := context.Background()
	sch := jobs.New(e.db, jobs.WithClock(e.clock.Now), jobs.WithPollInterval(50*time.Millisecond))
	e.pam.UseJobs(sch)
	role := "rot_upd_app_" + b.name
	super, err := pgx.Connect(ctx, e.target.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	for _, stmt := range []string{`DROP ROLE IF EXISTS ` + role, `CREATE ROLE ` + role + ` LOGIN PASSWORD 'first-Pa55'`,
		`GRANT CONNECT ON DATABASE "` + e.target.Name + `" TO ` + role} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	owner := e.createUser("owner@example.com")
	pid := owner.project("payments")
	base := "/api/v1/projects/" + pid
	res := e.pgResource("orders-db")
	res["rotationUsername"], res["rotationPassword"] = rotatorUser, rotatorPassword
	owner.must(201, "POST", base+"/resources", res, nil)
	owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app", "username": role,
		"password": "first-Pa55", "rotationInterval": "7d"}, nil)
	jctx, stop := context.WithCancel(ctx)
	defer stop()
	go sch.Run(jctx)

	// The update re-enters the password; its check at the gateway is slow.
	hold, started := make(chan struct{}), make(chan struct{}, 1)
	e.validator.mu.Lock()
	e.validator.hold, e.validator.started = hold, started
	e.validator.mu.Unlock()
	done := make(chan int, 1)
	go func() {
		done <- owner.call("PATCH", base+"/accounts/app?resource=orders-db", map[string]any{"password": "first-Pa55"}, nil)
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the update did not reach the gateway")
	}
	// Meanwhile the account rotates.
	owner.must(200, "POST", base+"/accounts/app/rotate?resource=orders-db", nil, nil)
	rotated := storedPassword(t, e, pid, "orders-db", "app")
	close(hold)
	if st := <-done; st != 409 {
		t.Fatalf("the update that read the account before the rotation: %d, want 409", st)
	}
	if got := storedPassword(t, e, pid, "orders-db", "app"); got != rotated || got == "first-Pa55" || !logsIn(t, e.target, role, got) {
		t.Fatalf("after the refused update the stored password logs in: %v (rotated kept: %v)", logsIn(t, e.target, role, got), got == rotated)
	}
	// Sent again, it is checked against what the database takes now.
	if st := owner.call("PATCH", base+"/accounts/app?resource=orders-db", map[string]any{"password": "first-Pa55"}, nil); st < 400 {
		t.Fatalf("re-entering the old password after the rotation: %d, want refused", st)
	}
}

// TestRotationAccountChecks: the rotation account's username changed alone
// is checked by a login with the stored password; an account that rotates
// cannot be turned into the rotation account (by its username or by the
// resource's rotation username), since it would then change the password
// every later rotation needs.
func TestRotationAccountChecks(t *testing.T) {
	forEachBackend(t, testRotationAccountChecks)
}

func testRotationAccountChecks(t *testing.T, b backend) {
	e := start(t, b)
	ctx := context.Background()
	role := "rot_chk_app_" + b.name
	super, err := pgx.Connect(ctx, e.target.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	for _, stmt := range []string{`DROP ROLE IF EXISTS ` + role, `CREATE ROLE ` + role + ` LOGIN PASSWORD 'first-Pa55'`,
		`GRANT CONNECT ON DATABASE "` + e.target.Name + `" TO ` + role} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	owner := e.createUser("owner@example.com")
	pid := owner.project("payments")
	base := "/api/v1/projects/" + pid
	res := e.pgResource("orders-db")
	res["rotationUsername"], res["rotationPassword"] = rotatorUser, rotatorPassword
	owner.must(201, "POST", base+"/resources", res, nil)
	owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app", "username": role,
		"password": "first-Pa55", "rotationInterval": "7d"}, nil)

	// A new rotation username alone: the stored password does not log in as it.
	p := owner.fails(422, "", "PATCH", base+"/resources/orders-db", map[string]any{"rotationUsername": role})
	if !strings.Contains(strings.ToLower(p.raw), "password") {
		t.Errorf("a rotation username the stored password does not log in as: %s", p.raw)
	}
	// The rotating account's user as the rotation account, with its password.
	p = owner.fails(422, "body.rotationUsername", "PATCH", base+"/resources/orders-db",
		map[string]any{"rotationUsername": role, "rotationPassword": "first-Pa55"})
	if !strings.Contains(p.raw, "cannot also be the rotation account") {
		t.Errorf("the rotating account as the rotation account: %s", p.raw)
	}
	// The rotating account renamed to the rotation account's user.
	p = owner.fails(422, "body.username", "PATCH", base+"/accounts/app?resource=orders-db", map[string]any{"username": rotatorUser})
	if !strings.Contains(p.raw, "rotation account") {
		t.Errorf("the rotating account renamed to the rotation user: %s", p.raw)
	}
	var got struct {
		RotationUsername string `json:"rotationUsername"`
	}
	owner.must(200, "GET", base+"/resources/orders-db", nil, &got)
	if got.RotationUsername != rotatorUser {
		t.Errorf("after the refusals the rotation account is %q", got.RotationUsername)
	}
}
