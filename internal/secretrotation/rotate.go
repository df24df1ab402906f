package secretrotation

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/store"
)

// KindRotate is the job that runs a secret rotation when it is due.
const KindRotate = "secret.rotate"

func passwordAAD(id string, i int) string { return fmt.Sprintf("secret-rotation:%s:password%d", id, i) }
func pendingAAD(id string, i int, a string) string {
	return fmt.Sprintf("secret-rotation:%s:pending%d:%s", id, i, a)
}

// UseJobs registers the rotation job with sch.
func (s *Service) UseJobs(sch *jobs.Scheduler) {
	s.jobs = sch
	sch.Register(jobs.Kind{Name: KindRotate, Lease: 2 * time.Minute, RetryMin: 30 * time.Second, RetryMax: time.Hour, Handler: s.runJob})
}

// runJob is the job of one rotation: rotate, then be due one interval later.
func (s *Service) runJob(ctx context.Context, j jobs.Job) (time.Time, error) {
	r, err := s.load(ctx, j.Key)
	if errs.Is(err, errs.NotFound) {
		return time.Time{}, jobs.Permanent(errors.New("the secret rotation no longer exists"))
	}
	if err != nil {
		return time.Time{}, err
	}
	if !r.IsAutoRotationEnabled {
		return time.Time{}, nil
	}
	if err := s.rotate(ctx, r.ID); err != nil {
		return time.Time{}, err
	}
	// Due one interval after the time this run was due (a late run does not
	// shift the schedule), skipping the times already past (a server that
	// was down rotates once, not once per missed period).
	next := NextRotation(j.RunAt, r.RotationInterval, r.RotateAt, r.TimeZone)
	for now := s.cfg.Now(); !next.After(now); {
		next = NextRotation(next, r.RotationInterval, r.RotateAt, r.TimeZone)
	}
	return next, nil
}

// RotateNow runs a rotation at once (project admins) and returns it with
// the outcome; a failure is also kept on the rotation.
func (s *Service) RotateNow(ctx context.Context, projectID, ref string) (*Rotation, error) {
	r, err := s.Resolve(ctx, projectID, ref)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Projects.Authorize(ctx, r.ProjectID, project.RoleAdmin); err != nil {
		return nil, err
	}
	if err := s.rotate(ctx, r.ID); err != nil {
		return nil, errs.E("secretrotation.(*Service).RotateNow", errs.Unavailable, "the rotation failed: "+err.Error())
	}
	if err := s.schedule(ctx, r.ID); err != nil {
		return nil, err
	}
	return s.get(ctx, r.ID)
}

// rotate runs one rotation of rotation id (see doc.go).
func (s *Service) rotate(ctx context.Context, id string) error {
	r, err := s.load(ctx, id)
	if err != nil {
		return err
	}
	conn, err := s.cfg.Conns.ByID(ctx, r.ConnectionID)
	if err != nil {
		return s.failed(ctx, r, "its app connection cannot be read: "+err.Error())
	}
	// 1. An attempt cut short: publish its password if it logs in.
	if r.pending != nil {
		pw, err := s.cfg.Keyring.Open(ctx, r.ProjectID, pendingAAD(r.ID, r.pendingIndex, r.attempt), r.pending)
		if err != nil {
			return err
		}
		if s.cfg.Conns.LogsIn(ctx, conn, r.user(r.pendingIndex), string(pw)) == nil {
			return s.publish(ctx, r, r.pendingIndex, string(pw), "an interrupted rotation's new password logs in; it is now published")
		}
		if _, err := s.cfg.DB.ExecContext(ctx, `UPDATE secret_rotations SET pending_password_enc = NULL, pending_attempt = '', pending_index = 0
			WHERE id = $1 AND pending_attempt = $2`, r.ID, r.attempt); err != nil {
			return err
		}
		r.pending, r.attempt = nil, ""
	}
	// 2. A new password for the inactive user, sealed as pending first.
	target := 1
	if r.active == 1 {
		target = 2
	}
	newPw, err := keyring.NewPassword()
	if err != nil {
		return err
	}
	attempt := uuid.Must(uuid.NewV7()).String()
	sealed, err := s.cfg.Keyring.Seal(ctx, r.ProjectID, pendingAAD(r.ID, target, attempt), []byte(newPw))
	if err != nil {
		return err
	}
	res, err := s.cfg.DB.ExecContext(ctx, `UPDATE secret_rotations SET pending_password_enc = $1, pending_attempt = $2, pending_index = $3
		WHERE id = $4 AND pending_attempt = ''`, sealed, attempt, target, r.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errors.New("another rotation of " + r.Name + " is running; it is tried again")
	}
	r.pending, r.attempt, r.pendingIndex = sealed, attempt, target
	// 3. The connection sets it and logs in with it.
	out, rerr := s.cfg.Conns.SetUserPassword(ctx, conn, r.user(target), newPw)
	switch {
	case rerr == nil && out.OK:
		if s.afterChange != nil {
			if err := s.afterChange(); err != nil {
				return s.failed(ctx, r, "the new password of "+r.user(target)+" was set but not yet published ("+err.Error()+"); the next attempt publishes it")
			}
		}
		// 4. Publish and flip, in one transaction.
		return s.publish(ctx, r, target, newPw, "")
	case rerr == nil && out.PasswordUnchanged():
		if _, err := s.cfg.DB.ExecContext(ctx, `UPDATE secret_rotations SET pending_password_enc = NULL, pending_attempt = '', pending_index = 0
			WHERE id = $1 AND pending_attempt = $2`, r.ID, attempt); err != nil {
			return err
		}
		return s.failed(ctx, r, out.Message)
	case rerr != nil:
		return s.failed(ctx, r, "the gateway could not be asked ("+rerr.Error()+"); the next attempt first checks whether the new password logs in")
	default:
		return s.failed(ctx, r, out.Message+"; the next attempt first checks whether the new password logs in")
	}
}

// publish writes user i's credentials into the mapped secrets and makes it
// the active user, in one store transaction.
func (s *Service) publish(ctx context.Context, r *Rotation, i int, pw, note string) error {
	sealed, err := s.cfg.Keyring.Seal(ctx, r.ProjectID, passwordAAD(r.ID, i), []byte(pw))
	if err != nil {
		return err
	}
	var orgID string
	if err := s.cfg.DB.QueryRowContext(ctx, `SELECT org_id FROM projects WHERE id = $1`, r.ProjectID).Scan(&orgID); err != nil {
		return err
	}
	now := s.cfg.Now()
	col := "password1_enc"
	if i == 2 {
		col = "password2_enc"
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE secret_rotations SET `+col+` = $1, active_index = $2, pending_password_enc = NULL, pending_attempt = '',
			pending_index = 0, status = 'ok', last_error = '', last_rotated_at = $3 WHERE id = $4 AND pending_attempt = $5`,
			sealed, i, store.Micros(now), r.ID, r.attempt)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errors.New("the rotation changed while it ran")
		}
		if err := s.cfg.Secrets.WriteOwned(ctx, tx, r.ProjectID, orgID, r.place(), "secret rotation "+r.Name,
			[][2]string{{r.SecretsMapping.Username, r.user(i)}, {r.SecretsMapping.Password, pw}}); err != nil {
			return err
		}
		details := map[string]any{"name": r.Name, "activeUsername": r.user(i)}
		if note != "" {
			details["note"] = note
		}
		return audit.Record(ctx, tx, audit.Entry{OrgID: orgID, ActorKind: "system", ActorID: "scheduler", ActorName: "secret rotation",
			Action: "secret-rotation.rotate", Outcome: audit.Success, TargetKind: "secret-rotation", TargetID: r.ID, ProjectID: r.ProjectID, Details: details})
	})
	if err != nil {
		return s.failed(ctx, r, "publishing the new credentials failed: "+err.Error())
	}
	return nil
}

// failed records why a rotation failed (on it and in the audit log), emails
// the project's admins when it follows a success (notify.go; not when a
// rotation's first run, at its creation, fails), and returns
// the reason as an error, so that the job retries.
func (s *Service) failed(ctx context.Context, r *Rotation, why string) error {
	ctx = context.WithoutCancel(ctx)
	var orgID string
	if err := s.cfg.DB.QueryRowContext(ctx, `SELECT org_id FROM projects WHERE id = $1`, r.ProjectID).Scan(&orgID); err == nil {
		_ = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `UPDATE secret_rotations SET status = 'failed', last_error = $1 WHERE id = $2`, why, r.ID); err != nil {
				return err
			}
			return audit.Record(ctx, tx, audit.Entry{OrgID: orgID, ActorKind: "system", ActorID: "scheduler", ActorName: "secret rotation",
				Action: "secret-rotation.rotate", Outcome: audit.Failure, TargetKind: "secret-rotation", TargetID: r.ID, ProjectID: r.ProjectID,
				Details: map[string]any{"name": r.Name, "error": why}})
		})
	}
	if r.RotationStatus == "ok" {
		s.notify(ctx, r, why)
	}
	return errors.New(why)
}
