package pam

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Rotation of account passwords
//
// An account with a rotation interval has a job (package jobs, kind
// KindRotate, keyed by the account id) due at its next rotation. A run:
//  1. settles an earlier attempt that was cut short (see settlePending);
//  2. makes a new password (crypto/rand, 32 letters and digits) and stores
//     it sealed as the account's pending password, with the attempt's id,
//     before the database is touched;
//  3. asks the resource's gateway to set it as the resource's rotation
//     account and to log in with it (relay.Rotate; PostgreSQL gets only a
//     SCRAM-SHA-256 verifier);
//  4. on success promotes the pending password to current, in the same
//     transaction as the account.rotate audit entry, and is due again one
//     interval later.
// When the database surely refused the change (the rotation account could
// not log in, lacks the privilege), the pending password is dropped, the
// error is kept on the account, and the job is retried with backoff. When
// the outcome is unknown (the gateway did not answer, the new password did
// not log in), the pending password is kept: the next run logs in with it,
// then with the current one, and keeps whichever works. So at every moment
// one of the two sealed passwords logs in, whatever crashes.

// KindRotate is the job that rotates an account's password.
const KindRotate = "account.rotate"

// Rotator changes a password through a resource's gateway (the relay).
type Rotator interface {
	Rotate(ctx context.Context, gatewayID string, admin tunnel.Target, rot tunnel.Rotation) (tunnel.Result, error)
}

// rotationWait bounds how long RotateNow waits for the outcome.
const rotationWait = 90 * time.Second

// checkRotation checks a rotation interval for an account of r with the
// database user username, and returns it in days.
func checkRotation(op string, r *resourceRow, username, interval string) (int, error) {
	days, ok := RotationIntervals[interval]
	if !ok {
		return 0, errs.InvalidField(op, "body.rotationInterval", "the rotation interval must be 1d, 3d, 7d or 30d (or off to stop rotating)")
	}
	if !r.HasRotationCredentials {
		return 0, errs.InvalidField(op, "body.rotationInterval", "resource "+r.Name+
			" has no rotation account: give it one first (`airlock resources update "+r.Name+" --rotation-username U --rotation-password-stdin`)")
	}
	if username == r.RotationUsername {
		return 0, errs.InvalidField(op, "body.rotationInterval", "this account is the resource's rotation account; an account cannot rotate its own password yet")
	}
	return days, nil
}

// scheduleRotation creates, moves or removes a's rotation job in tx, to
// match its interval: the next rotation is one interval after now.
func (s *Service) scheduleRotation(ctx context.Context, tx *sql.Tx, a *accountRow, now time.Time) error {
	if a.rotationDays == 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET rotation_status = '', rotation_error = '' WHERE id = $1`, a.ID); err != nil {
			return err
		}
		a.rotationStatus, a.rotationError = "", ""
		return jobs.Cancel(ctx, tx, KindRotate, a.ID)
	}
	return jobs.Schedule(ctx, tx, now, KindRotate, a.ID, now.Add(time.Duration(a.rotationDays)*24*time.Hour), "")
}

// showRotation fills a's rotation, with its next due time from its job.
func (s *Service) showRotation(ctx context.Context, a *accountRow) {
	var next time.Time
	if a.rotationDays > 0 {
		if st, err := jobs.Get(ctx, s.db, s.now(), KindRotate, a.ID); err == nil {
			next = st.RunAt
		}
	}
	a.showRotation(next)
}

// UseJobs registers the rotation job with sch; RotateNow kicks it.
func (s *Service) UseJobs(sch *jobs.Scheduler) {
	s.jobs = sch
	sch.Register(jobs.Kind{Name: KindRotate, Lease: 2 * time.Minute, RetryMin: 30 * time.Second, RetryMax: time.Hour,
		Handler: s.runRotation})
}

// runRotation is the job of one account's rotation.
func (s *Service) runRotation(ctx context.Context, j jobs.Job) (time.Time, error) {
	a, err := accountByID(ctx, s.db, j.Key)
	if errs.Is(err, errs.NotFound) {
		return time.Time{}, jobs.Permanent(errors.New("the account no longer exists"))
	}
	if err != nil {
		return time.Time{}, err
	}
	once := a.rotationDays == 0
	if once && j.Payload != rotateOnce {
		return time.Time{}, nil // rotation was turned off
	}
	if once {
		// A one-off rotation (RotateNow) of an account that does not
		// rotate on a schedule: tried once (after waiting for its gateway);
		// its outcome stays on the account.
		if _, err := s.rotate(ctx, a); err != nil {
			if waitingForGateway(err) {
				return time.Time{}, err
			}
			return time.Time{}, jobs.Permanent(err)
		}
		return time.Time{}, nil
	}
	return s.rotate(ctx, a)
}

// gatewayAway is the outcome of a rotation whose gateway is not connected
// here: the job waits (jobs.Wait) or goes to another replica
// (jobs.Elsewhere).
type gatewayAway struct{ error }

func (g gatewayAway) Unwrap() error { return g.error }

func waitingForGateway(err error) bool {
	var g gatewayAway
	return errors.As(err, &g)
}

// checkGateway returns nil when r's gateway is connected to this server.
// When it is connected to another replica, the job is left to that one;
// when it is offline, the account is marked waiting and the job is tried
// again every WaitRetry (and at once when the gateway connects: see
// GatewayConnected), rather than with a growing backoff.
func (s *Service) checkGateway(ctx context.Context, a *accountRow, r *resourceRow) error {
	p := s.cfg.Presence
	if p == nil || p.Connected(r.GatewayID) {
		return nil
	}
	if online, err := p.GatewayOnline(ctx, r.GatewayID); err == nil && online {
		return gatewayAway{jobs.Elsewhere(errors.New("the gateway is connected to another server"))}
	}
	name := r.GatewayID
	if orgID, err := s.orgOf(ctx, a.projectID); err == nil {
		if _, n, err := s.cfg.Gateways.ResolveGateway(ctx, orgID, r.GatewayID); err == nil {
			name = n
		}
	}
	why := "waiting for gateway " + name + ": it is offline (start it, and check `airlock gateways list`); the rotation runs as soon as it connects"
	if a.rotationStatus != RotationWaiting || a.rotationError != why {
		if _, err := s.db.ExecContext(ctx, `UPDATE accounts SET rotation_status = $1, rotation_error = $2 WHERE id = $3`,
			RotationWaiting, why, a.ID); err != nil {
			return err
		}
		a.rotationStatus, a.rotationError = RotationWaiting, why
	}
	return gatewayAway{jobs.Wait(WaitRetry, errors.New(why))}
}

// GatewayConnected makes the waiting rotations of the resources of a
// gateway that has just connected to this server due now.
func (s *Service) GatewayConnected(ctx context.Context, gatewayID string) {
	rows, err := s.db.QueryContext(ctx, `SELECT a.id FROM accounts a JOIN resources r ON r.id = a.resource_id
		WHERE r.gateway_id = $1 AND a.rotation_status = $2`, gatewayID, RotationWaiting)
	if err != nil {
		return
	}
	var ids []string
	for rows.Next() {
		var id string
		if rows.Scan(&id) == nil {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if len(ids) == 0 {
		return
	}
	if n, err := jobs.Hurry(ctx, s.db, s.now(), KindRotate, ids); err == nil && n > 0 && s.jobs != nil {
		s.jobs.Kick()
	}
}

// rotateOnce is the payload of a job made by RotateNow.
const rotateOnce = "once"

// rotate runs one rotation of a (steps 1 to 4 above) and returns when the
// next is due.
func (s *Service) rotate(ctx context.Context, a *accountRow) (time.Time, error) {
	r, err := resourceByRef(ctx, s.db, a.projectID, a.ResourceID)
	if err != nil {
		return time.Time{}, err
	}
	if !r.HasRotationCredentials {
		return time.Time{}, s.rotationFailed(ctx, a, "resource "+r.Name+" no longer has a rotation account; give it one or turn rotation off")
	}
	if a.Username == r.RotationUsername {
		return time.Time{}, s.rotationFailed(ctx, a, "account "+a.Name+" uses the resource's rotation account ("+r.RotationUsername+
			"); an account cannot rotate its own password: turn its rotation off, or give the resource another rotation account")
	}
	rotPw, err := s.cfg.Keyring.Open(ctx, a.projectID, rotationAAD(r.ID), r.rotationSealed)
	if err != nil {
		return time.Time{}, fmt.Errorf("opening the rotation account's password failed: %w", err)
	}
	admin := r.target("", r.RotationUsername, string(rotPw))
	if err := s.checkGateway(ctx, a, r); err != nil {
		return time.Time{}, err
	}

	// 1. An attempt cut short: keep whichever password logs in.
	if a.pendingSealed != nil {
		if err := s.settlePending(ctx, a, r); err != nil {
			return time.Time{}, s.rotationFailed(ctx, a, err.Error())
		}
	}
	// 2. The new password, sealed as pending before the database changes.
	newPw, err := keyring.NewPassword()
	if err != nil {
		return time.Time{}, err
	}
	attempt := uuid.Must(uuid.NewV7()).String()
	sealed, err := s.cfg.Keyring.Seal(ctx, a.projectID, pendingAAD(a.ID, attempt), []byte(newPw))
	if err != nil {
		return time.Time{}, fmt.Errorf("sealing the new password failed: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE accounts SET pending_password_enc = $1, pending_attempt = $2, rotation_status = $3
		WHERE id = $4 AND pending_password_enc IS NULL`, sealed, attempt, RotationRunning, a.ID)
	if err != nil {
		return time.Time{}, fmt.Errorf("saving the new password failed: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return time.Time{}, errors.New("the account changed during the rotation; it is tried again")
	}
	a.pendingSealed, a.pendingAttempt = sealed, attempt

	// 3. The gateway changes it and logs in with it.
	out, rerr := s.cfg.Rotator.Rotate(ctx, r.GatewayID, admin, tunnel.Rotation{Username: a.Username, NewPassword: newPw})
	switch {
	case rerr == nil && out.OK:
		if s.cfg.BeforePromote != nil {
			s.cfg.BeforePromote()
		}
		// 4. Promote.
		if err := s.promote(ctx, a, r, []byte(newPw), ""); err != nil {
			return time.Time{}, err
		}
		return s.now().Add(time.Duration(a.rotationDays) * 24 * time.Hour), nil
	case rerr == nil && out.PasswordUnchanged():
		// The database surely kept the current password.
		if _, err := s.db.ExecContext(ctx, `UPDATE accounts SET pending_password_enc = NULL, pending_attempt = '' WHERE id = $1 AND pending_attempt = $2`,
			a.ID, attempt); err != nil {
			return time.Time{}, err
		}
		return time.Time{}, s.rotationFailed(ctx, a, out.Message)
	case rerr != nil:
		// The gateway did not answer: the outcome is unknown. When it is
		// gone, the account waits for it; the next attempt first checks
		// which password logs in.
		if err := s.checkGateway(ctx, a, r); err != nil {
			return time.Time{}, err
		}
		return time.Time{}, s.rotationFailed(ctx, a, "the gateway could not be asked ("+rerr.Error()+"); the next attempt first checks which password logs in")
	default:
		// Changed, or perhaps changed: find out now if the gateway answers.
		if err := s.settlePending(ctx, a, r); err != nil {
			return time.Time{}, s.rotationFailed(ctx, a, out.Message+"; "+err.Error())
		}
		return time.Time{}, s.rotationFailed(ctx, a, out.Message)
	}
}

// settlePending resolves a pending password left by an attempt: when it
// logs in it becomes current; else, when the current one logs in, it is
// dropped. When neither can be checked (the gateway is away) or neither
// logs in, it stays and the error says so.
func (s *Service) settlePending(ctx context.Context, a *accountRow, r *resourceRow) error {
	pending, err := s.cfg.Keyring.Open(ctx, a.projectID, pendingAAD(a.ID, a.pendingAttempt), a.pendingSealed)
	if err != nil {
		return fmt.Errorf("opening the pending password failed: %w", err)
	}
	perr := s.cfg.Validator.Validate(ctx, r.GatewayID, r.target(a.ID, a.Username, string(pending)))
	if perr == nil {
		return s.promote(ctx, a, r, pending, "an interrupted rotation's new password logs in; it is now current")
	}
	if !errs.Is(perr, errs.Invalid) {
		return fmt.Errorf("cannot check which password logs in: %w", perr)
	}
	current, err := s.cfg.Keyring.Open(ctx, a.projectID, passwordAAD(a.ID), a.passwordSealed)
	if err != nil {
		return fmt.Errorf("opening the current password failed: %w", err)
	}
	cerr := s.cfg.Validator.Validate(ctx, r.GatewayID, r.target(a.ID, a.Username, string(current)))
	if cerr != nil {
		return fmt.Errorf("neither the new password of the interrupted rotation nor the current one logs in (%v)", cerr)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE accounts SET pending_password_enc = NULL, pending_attempt = '' WHERE id = $1 AND pending_attempt = $2`,
		a.ID, a.pendingAttempt); err != nil {
		return err
	}
	a.pendingSealed, a.pendingAttempt = nil, ""
	return nil
}

// promote makes pw (a's pending password) its current one, and audits it.
func (s *Service) promote(ctx context.Context, a *accountRow, r *resourceRow, pw []byte, note string) error {
	sealed, err := s.cfg.Keyring.Seal(ctx, a.projectID, passwordAAD(a.ID), pw)
	if err != nil {
		return fmt.Errorf("sealing the new password failed: %w", err)
	}
	now := s.now()
	orgID, err := s.orgOf(ctx, a.projectID)
	if err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE accounts SET password_enc = $1, pending_password_enc = NULL, pending_attempt = '',
			rotation_status = $2, rotation_error = '', last_rotated_at = $3 WHERE id = $4 AND pending_attempt = $5`,
			sealed, RotationOK, now.UnixMicro(), a.ID, a.pendingAttempt)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errors.New("the account changed during the rotation")
		}
		details := map[string]any{"name": a.Name, "resource": r.Name, "username": a.Username, "rotationAccount": r.RotationUsername}
		if note != "" {
			details["note"] = note
		}
		return audit.Record(ctx, tx, audit.Entry{OrgID: orgID, ActorKind: "system", ActorID: "scheduler", ActorName: "rotation",
			Action: "account.rotate", Outcome: audit.Success, TargetKind: "account", TargetID: a.ID, ProjectID: a.projectID, Details: details})
	})
	if err != nil {
		return fmt.Errorf("saving the rotated password failed: %w", err)
	}
	a.passwordSealed, a.pendingSealed, a.pendingAttempt = sealed, nil, ""
	return nil
}

// rotationFailed records why a rotation failed (on the account and in the
// audit log) and returns it as the job's error, so the job is retried.
func (s *Service) rotationFailed(ctx context.Context, a *accountRow, why string) error {
	if orgID, err := s.orgOf(ctx, a.projectID); err == nil {
		_ = s.db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `UPDATE accounts SET rotation_status = $1, rotation_error = $2 WHERE id = $3`,
				RotationFailed, why, a.ID); err != nil {
				return err
			}
			return audit.Record(ctx, tx, audit.Entry{OrgID: orgID, ActorKind: "system", ActorID: "scheduler", ActorName: "rotation",
				Action: "account.rotate", Outcome: audit.Failure, TargetKind: "account", TargetID: a.ID, ProjectID: a.projectID,
				Details: map[string]any{"name": a.Name, "resource": a.ResourceName, "error": why}})
		})
	}
	return errors.New(why)
}

func (s *Service) orgOf(ctx context.Context, projectID string) (string, error) {
	var orgID string
	if err := s.db.QueryRowContext(ctx, `SELECT org_id FROM projects WHERE id = $1`, projectID).Scan(&orgID); err != nil {
		return "", fmt.Errorf("reading the account's project failed: %w", err)
	}
	return orgID, nil
}

// RotateNow rotates an account's password at once (project admins) and
// returns the account with the outcome. A rotation of the account that is
// running already is not started twice: that is a Conflict.
func (s *Service) RotateNow(ctx context.Context, projectID, resource, ref string) (*Account, error) {
	const op = "pam.(*Service).RotateNow"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	a, err := s.findAccount(ctx, proj.ID, resource, ref)
	if err != nil {
		return nil, err
	}
	if s.jobs == nil {
		return nil, errs.E(op, errs.Unavailable, "this server does not run rotations")
	}
	r, err := resourceByRef(ctx, s.db, proj.ID, a.ResourceID)
	if err != nil {
		return nil, err
	}
	interval := "7d"
	if a.rotationDays > 0 {
		interval = fmt.Sprintf("%dd", a.rotationDays)
	}
	if _, err := checkRotation(op, r, a.Username, interval); err != nil {
		return nil, err
	}
	start := s.now()
	if st, err := jobs.Get(ctx, s.db, start, KindRotate, a.ID); err == nil && st.Running {
		return nil, errs.E(op, errs.Conflict, "a rotation of this account is running already; `airlock accounts get` shows its outcome")
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if a.rotationDays == 0 {
			// A one-off rotation: the job is dropped after it.
			if _, err := tx.ExecContext(ctx, `UPDATE accounts SET rotation_status = '' WHERE id = $1`, a.ID); err != nil {
				return err
			}
		}
		return jobs.Schedule(ctx, tx, start, KindRotate, a.ID, start, rotateOnce)
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "starting the rotation failed", err)
	}
	s.jobs.Kick()
	deadline := time.Now().Add(rotationWait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		st, err := jobs.Get(ctx, s.db, s.now(), KindRotate, a.ID)
		done := errors.Is(err, jobs.ErrNoJob) || (err == nil && !st.Running && !st.LastRunAt.Before(start) && st.RunAt.After(start))
		if !done {
			continue
		}
		b, err := accountByID(ctx, s.db, a.ID)
		if err != nil {
			return nil, err
		}
		s.showRotation(ctx, b)
		if b.rotationStatus == RotationWaiting {
			return &b.Account, errs.E(op, errs.Unavailable, "the rotation is "+b.rotationError)
		}
		if st.Attempts > 0 || b.rotationStatus == RotationFailed {
			return &b.Account, errs.E(op, errs.Unavailable, "the rotation failed and is retried later: "+b.rotationError)
		}
		return &b.Account, nil
	}
	return nil, errs.E(op, errs.Unavailable, "the rotation has not finished yet (the gateway may be slow); `airlock accounts get` shows its outcome")
}

func (s *Service) registerRotation(a huma.API) {
	huma.Register(a, huma.Operation{
		OperationID: "rotate-account", Method: http.MethodPost, Path: "/api/v1/projects/{projectId}/accounts/{account}/rotate",
		Summary: "Rotate an account's password now, as the resource's rotation account (project admins)", Tags: []string{"Accounts"},
		Security: api.Secured, DefaultStatus: http.StatusOK, Errors: []int{403, 404, 409, 422, 503},
	}, func(ctx context.Context, in *AccountPath) (*struct{ Body *Account }, error) {
		acct, err := s.RotateNow(ctx, in.ProjectID, in.Resource, in.Account)
		return &struct{ Body *Account }{acct}, api.Err(ctx, err)
	})
}
