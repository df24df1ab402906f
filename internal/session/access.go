package session

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/relay"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// This file holds the rules a live session is held to, written once and
// used in two places: AuthorizeConnection checks them for each new
// connection of a session (from the store, not from the CLI's access token,
// which may have expired), and EnforceAccess ends every active session that
// breaks one. The services that revoke access (members, users, machine
// identities, logins, accounts, resources, projects, gateways) call
// EnforceAccess after their change commits, and the expiry job runs it
// every tick as well, so a revocation made on another replica, or one whose
// caller died before its call, still ends the sessions it concerns.

// CurrentTargetResolver returns a session's account as it is now, with its
// current password, without checking the caller: the session service has
// already checked the session's owner.
type CurrentTargetResolver func(ctx context.Context, projectID, resourceID, accountID string) (*Target, error)

// SetCurrentTargets wires the resolver of current targets in.
func (s *Service) SetCurrentTargets(f CurrentTargetResolver) { s.current = f }

// accessState is a session with what its access depends on.
type accessState struct {
	id, orgID, projectID, gatewayID, subjectKind string
	resourceID, accountID, status                string
	expires                                      int64
	projectExists, subjectExists, disabled       bool
	orgAdmin                                     bool
	role                                         string
	resourceExists, accountExists, gatewayExists bool
	gatewayAllowed                               bool
	familyTokens, familyLive                     int
}

const accessQuery = `SELECT s.id, s.org_id, s.project_id, s.gateway_id, s.subject_kind, s.resource_id, s.account_id, s.status, s.expires_at,
	p.id IS NOT NULL, (u.id IS NOT NULL OR m.id IS NOT NULL), COALESCE(u.disabled, FALSE), COALESCE(u.org_admin, FALSE),
	COALESCE(pm.role, ''), r.id IS NOT NULL, a.id IS NOT NULL, g.id IS NOT NULL,
	EXISTS (SELECT 1 FROM gateway_projects gp WHERE gp.gateway_id = s.gateway_id AND gp.project_id = s.project_id),
	(SELECT COUNT(*) FROM auth_tokens t WHERE t.family_id = s.token_family),
	(SELECT COUNT(*) FROM auth_tokens t WHERE t.family_id = s.token_family AND t.revoked_at = 0)
FROM sessions s
LEFT JOIN projects p ON p.id = s.project_id AND p.org_id = s.org_id
LEFT JOIN users u ON s.subject_kind = 'user' AND u.id = s.subject_id AND u.org_id = s.org_id
LEFT JOIN machine_identities m ON s.subject_kind = 'machine' AND m.id = s.subject_id AND m.org_id = s.org_id
LEFT JOIN project_members pm ON pm.project_id = s.project_id AND pm.subject_kind = s.subject_kind AND pm.subject_id = s.subject_id
LEFT JOIN resources r ON r.id = s.resource_id AND r.project_id = s.project_id
LEFT JOIN accounts a ON a.id = s.account_id AND a.resource_id = s.resource_id
LEFT JOIN gateways g ON g.id = s.gateway_id
WHERE `

func scanAccess(row interface{ Scan(...any) error }) (*accessState, error) {
	var x accessState
	err := row.Scan(&x.id, &x.orgID, &x.projectID, &x.gatewayID, &x.subjectKind, &x.resourceID, &x.accountID, &x.status, &x.expires,
		&x.projectExists, &x.subjectExists, &x.disabled, &x.orgAdmin, &x.role, &x.resourceExists, &x.accountExists, &x.gatewayExists,
		&x.gatewayAllowed,
		&x.familyTokens, &x.familyLive)
	if err != nil {
		return nil, err
	}
	return &x, nil
}

// denial returns the end reason and, in words, why the session may no
// longer be used; "" when it may.
func (x *accessState) denial() (reason, detail string) {
	who := "user"
	if x.subjectKind == api.SubjectMachine {
		who = "machine identity"
	}
	switch {
	case !x.projectExists:
		return Revoked, "the project was deleted"
	case !x.subjectExists:
		return Revoked, who + " deleted"
	case x.disabled:
		return Revoked, who + " disabled"
	case x.familyTokens > 0 && x.familyLive == 0:
		return Revoked, "login revoked (logged out, or its tokens were revoked)"
	case !x.orgAdmin && x.role == "":
		return Revoked, who + " removed from the project"
	case !x.orgAdmin && x.role != "member" && x.role != "admin":
		return Revoked, who + "'s role in the project lowered to " + x.role
	case !x.resourceExists:
		return Revoked, "resource deleted"
	case !x.accountExists:
		return Revoked, "account deleted"
	case !x.gatewayExists:
		return GatewayLost, "the gateway was deleted"
	case !x.gatewayAllowed:
		return Revoked, "the project may no longer use the gateway"
	}
	return "", ""
}

// systemEnd is the audit entry of a session the server ends by itself.
func systemEnd(name string) audit.Entry {
	return audit.Entry{ActorKind: "system", ActorID: "scheduler", ActorName: name, Action: "session.end", Outcome: audit.Success}
}

// AuthorizeConnection implements relay.SessionAuthorizer: it checks, from
// the store, that a session may open a new connection now (it is active
// and not past its end; its owner exists, is not disabled and is still at
// least a member of the project; the login it was started under is not
// revoked; its account, resource and gateway exist) and returns the
// account's current target and the project's current log settings. A
// session that breaks a rule is ended (reason revoked) before the refusal
// is returned, so no gateway stream is ever opened for it.
func (s *Service) AuthorizeConnection(ctx context.Context, id string) (*relay.ClientSession, error) {
	const op = "session.(*Service).AuthorizeConnection"
	if _, err := uuid.Parse(id); err != nil {
		return nil, errs.E(op, errs.NotFound, "no session with that id, or not one of yours")
	}
	x, err := scanAccess(s.db.QueryRowContext(ctx, accessQuery+`s.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E(op, errs.NotFound, "no session with that id, or not one of yours")
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the session failed", err)
	}
	if x.status != StatusActive {
		return nil, s.endedError(ctx, op, id)
	}
	if !s.now().Before(store.Time(x.expires)) {
		if _, err := s.finish(ctx, id, Expired, "", systemEnd("session expiry")); err != nil {
			return nil, err
		}
		return nil, s.endedError(ctx, op, id)
	}
	if reason, detail := x.denial(); reason != "" {
		if _, err := s.finish(ctx, id, reason, detail, systemEnd("access check")); err != nil {
			return nil, err
		}
		return nil, s.endedError(ctx, op, id)
	}
	if s.current == nil {
		return nil, errs.E(op, errs.Internal, "no target resolver")
	}
	t, err := s.current(ctx, x.projectID, x.resourceID, x.accountID)
	if err != nil {
		return nil, err
	}
	ls, err := s.logSettings(ctx, x.projectID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the project's log settings failed", err)
	}
	return &relay.ClientSession{ID: x.id, GatewayID: x.gatewayID, ExpiresAt: store.Time(x.expires), Target: t.Wire,
		MaskPatterns: ls.masks, RedactValues: ls.redact, MaxStatementBytes: ls.maxStatement, OversizeStatements: ls.oversize}, nil
}

// endedError says that session id has ended, and why.
func (s *Service) endedError(ctx context.Context, op, id string) error {
	x, err := s.get(ctx, id)
	if err != nil {
		return err
	}
	why := x.EndMessage
	if why == "" {
		why = EndMessage(x.EndReason, x.ExpiresAt)
	}
	return errs.Ef(op, errs.Conflict, "%s; start a new one with `airlock db access`", why)
}

// logSettingsOf is what a project's sessions record and how.
type logSettingsOf struct {
	masks        []string
	redact       bool
	maxStatement int64
	oversize     string
}

// logSettings returns a project's session-log settings: mask patterns,
// redact flag, statement limit and what happens to a longer statement.
func (s *Service) logSettings(ctx context.Context, projectID string) (logSettingsOf, error) {
	var masks string
	var ls logSettingsOf
	err := s.db.QueryRowContext(ctx, `SELECT log_mask_patterns, log_redact_values, max_statement_bytes, oversize_statements
		FROM projects WHERE id = $1`, projectID).Scan(&masks, &ls.redact, &ls.maxStatement, &ls.oversize)
	if err != nil {
		return ls, err
	}
	ls.masks = []string{}
	if err := json.Unmarshal([]byte(masks), &ls.masks); err != nil {
		return ls, err
	}
	return ls, nil
}

// EnforceAccess ends, with reason revoked (gateway_lost for a deleted
// gateway) and a message naming why, every active session that breaks a
// rule of AuthorizeConnection. The revoking services call it after their
// change commits; the caller in ctx, if any, is recorded as the actor of
// each session.end audit event. It returns how many sessions it ended.
func (s *Service) EnforceAccess(ctx context.Context) int {
	rows, err := s.db.QueryContext(ctx, accessQuery+`s.status = $1`, StatusActive)
	if err != nil {
		slog.Warn("checking the access of live sessions failed", "err", err)
		return 0
	}
	type end struct{ id, reason, detail string }
	var ends []end
	for rows.Next() {
		x, err := scanAccess(rows)
		if err != nil {
			slog.Warn("checking the access of live sessions failed", "err", err)
			break
		}
		if reason, detail := x.denial(); reason != "" {
			ends = append(ends, end{x.id, reason, detail})
		}
	}
	rows.Close()
	n := 0
	for _, e := range ends {
		ev := systemEnd("access check")
		if api.PrincipalFrom(ctx) != nil {
			ev = audit.By(ctx, audit.Entry{Action: "session.end"})
		}
		ended, err := s.finish(context.WithoutCancel(ctx), e.id, e.reason, e.detail, ev)
		if err != nil {
			slog.Warn("ending a revoked session failed", "session", e.id, "err", err)
			continue
		}
		if ended {
			n++
			slog.Info("session ended: access revoked", "session", e.id, "reason", e.reason, "why", e.detail)
		}
	}
	return n
}

// ClientSeen implements relay.SessionAuthorizer: it records that the
// session's CLI relay connection is up now.
func (s *Service) ClientSeen(ctx context.Context, id string) {
	if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET client_seen_at = $1 WHERE id = $2 AND status = $3`,
		store.Micros(s.now()), id, StatusActive); err != nil {
		slog.Warn("recording a CLI's presence failed", "session", id, "err", err)
	}
}

// PushSettings sends a project's current session-log settings (mask
// patterns, redact flag, statement limit and oversize rule) to the gateway of each of its active sessions, so
// that they apply from the next statement on. It is best effort: a failure
// is logged, and new connections get the settings anyway.
func (s *Service) PushSettings(ctx context.Context, projectID string) {
	ls, err := s.logSettings(ctx, projectID)
	if err != nil {
		slog.Warn("reading a project's log settings failed", "project", projectID, "err", err)
		return
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, gateway_id FROM sessions WHERE project_id = $1 AND status = $2`, projectID, StatusActive)
	if err != nil {
		slog.Warn("listing a project's live sessions failed", "project", projectID, "err", err)
		return
	}
	type live struct{ id, gateway string }
	var list []live
	for rows.Next() {
		var l live
		if rows.Scan(&l.id, &l.gateway) == nil {
			list = append(list, l)
		}
	}
	rows.Close()
	for _, l := range list {
		h := tunnel.Header{SessionID: l.id, MaskPatterns: ls.masks, RedactValues: ls.redact,
			MaxStatementBytes: ls.maxStatement, OversizeStatements: ls.oversize}
		uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.relay.UpdateOnGateway(uctx, l.gateway, h); err != nil {
			slog.Warn("sending new log settings to a live session's gateway failed; its new connections get them",
				"session", l.id, "gateway", l.gateway, "err", err)
		}
		cancel()
	}
}
