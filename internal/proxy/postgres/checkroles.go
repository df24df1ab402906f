package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/tunnel"
)

// CheckRoles logs in as admin and checks, changing nothing, that each role
// exists, is not a superuser (unless admin is one), and that admin may
// change its password: superuser, or CREATEROLE and, on PostgreSQL 16 and
// later, the admin option on the role. Secret rotations call it before any
// password changes, directly or through a gateway (tunnel.TypeCheckRoles).
func (e *Engine) CheckRoles(ctx context.Context, admin tunnel.Target, roles []string) tunnel.Result {
	return CheckRoles(ctx, e.config(admin), roles)
}

// CheckRoles is Engine.CheckRoles with cfg as admin's connection.
func CheckRoles(ctx context.Context, cfg Config, roles []string) tunnel.Result {
	if len(roles) == 0 {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: "no database users to check"}
	}
	pc, err := cfg.PgConnConfig()
	if err != nil {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: redact(err.Error(), cfg.Password)}
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		f := describeConnectError(cfg, err)
		return tunnel.Result{Code: f.code, Message: "the rotation account could not log in: " + f.message}
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	for _, r := range roles {
		res := conn.ExecParams(ctx, `SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
			(SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user),
			current_setting('server_version_num')::int >= 160000,
			pg_has_role(current_user, r.oid, 'USAGE WITH ADMIN OPTION'), r.rolsuper
			FROM pg_roles r WHERE r.rolname = $1`, [][]byte{[]byte(r)}, nil, nil, nil).Read()
		if res.Err != nil {
			return tunnel.Result{Code: tunnel.CodeInternal, Message: "checking the database users failed: " + redact(res.Err.Error(), cfg.Password)}
		}
		if len(res.Rows) == 0 {
			return tunnel.Result{Code: tunnel.CodeInvalid, Message: fmt.Sprintf("the database user %q does not exist", r)}
		}
		row := res.Rows[0]
		t := func(i int) bool { return string(row[i]) == "t" }
		switch {
		case t(0):
		case t(4):
			return tunnel.Result{Code: tunnel.CodeInvalid, Message: fmt.Sprintf(
				"the database user %q is a superuser: only a superuser may change its password; rotate ordinary users", r)}
		case !t(1):
			return tunnel.Result{Code: tunnel.CodeDenied, Message: fmt.Sprintf(
				"the user %q may not change the password of %q: it needs CREATEROLE (ALTER ROLE %s WITH CREATEROLE)", cfg.User, r, quoteIdent(cfg.User))}
		case t(2) && !t(3):
			return tunnel.Result{Code: tunnel.CodeDenied, Message: fmt.Sprintf(
				"the user %q may not change the password of %q: on PostgreSQL 16 and later it needs the admin option: GRANT %s TO %s WITH ADMIN OPTION",
				cfg.User, r, quoteIdent(r), quoteIdent(cfg.User))}
		}
	}
	return tunnel.Result{OK: true}
}
