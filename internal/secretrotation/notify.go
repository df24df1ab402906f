package secretrotation

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Mailer sends one plain-text email (*mfa.SMTPMailer is one).
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// SetMailer makes failed rotations email the project's admins; nil (the
// default) sends nothing. The server sets it when SMTP is configured.
func (s *Service) SetMailer(m Mailer) { s.mailer = m }

// notifyTimeout bounds the mail of one failure, all recipients together.
const notifyTimeout = 30 * time.Second

// notify emails the admins of r's project (the project's admin members
// and the organization's admins) that r failed with why. It is called for
// the first failure after a success, not for each retry. The message holds
// no password: why is the rotation's recorded reason, which never does.
func (s *Service) notify(ctx context.Context, r *Rotation, why string) {
	if s.mailer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
	defer cancel()
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT u.email FROM project_members m JOIN users u ON u.id = m.subject_id
		WHERE m.project_id = $1 AND m.subject_kind = 'user' AND m.role = 'admin' AND NOT u.disabled
		UNION SELECT u.email FROM users u JOIN projects p ON p.org_id = u.org_id WHERE p.id = $1 AND u.org_admin AND NOT u.disabled`, r.ProjectID)
	if err != nil {
		slog.WarnContext(ctx, "secret rotation: listing the project's admins to tell them of a failure failed", "rotation", r.Name, "err", err)
		return
	}
	var to []string
	for rows.Next() {
		var e string
		if rows.Scan(&e) == nil && e != "" {
			to = append(to, e)
		}
	}
	rows.Close()
	var projectName string
	_ = s.cfg.DB.QueryRowContext(ctx, `SELECT name FROM projects WHERE id = $1`, r.ProjectID).Scan(&projectName)
	subject := fmt.Sprintf("Airlock: secret rotation %s failed (project %s)", r.Name, projectName)
	var b strings.Builder
	fmt.Fprintf(&b, "The secret rotation %s of project %s (id %s) failed at %s:\n\n  %s\n\n", r.Name, projectName, r.ProjectID,
		s.cfg.Now().UTC().Format("2006-01-02 15:04:05 UTC"), why)
	fmt.Fprintf(&b, "The credentials published in %s%s and %s still work: a failed rotation does not change them.\n",
		r.place().String(), r.SecretsMapping.Username, r.SecretsMapping.Password)
	b.WriteString("Airlock retries with backoff; fix the cause, then rotate now from the project's Secret Rotations page or with\n\n")
	fmt.Fprintf(&b, "  airlock secret-rotations rotate %s --project-id %s\n\nYou get this email as an admin of the project; further failures in a row are not mailed.\n", r.Name, r.ProjectID)
	for _, addr := range to {
		if err := s.mailer.Send(ctx, addr, subject, b.String()); err != nil {
			slog.WarnContext(ctx, "secret rotation: emailing an admin of a failure failed", "rotation", r.Name, "to", addr, "err", err)
		}
	}
}
