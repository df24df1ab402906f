package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// closeTimeout bounds the polite Terminate sent when a trial connection ends.
const closeTimeout = 2 * time.Second

// Validate logs in to the database with cfg's credentials and runs SELECT 1.
// It reports success, or a failure classified by its Code (tunnel.Code*) with
// a message a user can act on. The message never holds the password.
func Validate(ctx context.Context, cfg Config) tunnel.Result {
	pc, err := cfg.PgConnConfig()
	if err != nil {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: redact(err.Error(), cfg.Password)}
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		f := describeConnectError(cfg, err)
		return tunnel.Result{Code: f.code, Message: f.message}
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		f := describeConnectError(cfg, err)
		return tunnel.Result{Code: f.code, Message: "logged in, but SELECT 1 failed: " + f.message}
	}
	return tunnel.Result{OK: true}
}

// connectFailure is a classified upstream connection failure.
type connectFailure struct {
	code     string // a tunnel.Code* constant
	message  string // for a user; never holds the password
	sqlState string // the server's SQLSTATE, or 08006 when it gave none
}

// SQLSTATEs the engine uses or recognises.
const (
	sqlStateConnectionFailure  = "08006" // connection_failure
	sqlStateProtocolViolation  = "08P01" // protocol_violation
	sqlStateInvalidAuthSpec    = "28000" // invalid_authorization_specification
	sqlStateInvalidPassword    = "28P01" // invalid_password
	sqlStateInvalidCatalogName = "3D000" // invalid_catalog_name: no such database
	sqlStateInsufficientPrivs  = "42501" // insufficient_privilege
	sqlStateCannotConnectNow   = "57P03" // cannot_connect_now: starting up, shutting down
	sqlStateTooManyConnections = "53300" // too_many_connections
	sqlStateInternalError      = "XX000" // internal_error
	sqlStateAdminShutdown      = "57P01" // admin_shutdown: the session ended
	sqlStateQueryCanceled      = "57014" // query_canceled
)

// describeConnectError classifies an error from connecting to (or querying)
// cfg's database. The message names the host, user and database as the
// resource does, says why in words an administrator can act on, and has any
// occurrence of the password removed.
func describeConnectError(cfg Config, err error) connectFailure {
	f := classify(cfg, err)
	f.message = redact(f.message, cfg.Password)
	if f.sqlState == "" {
		f.sqlState = sqlStateConnectionFailure
	}
	return f
}

func classify(cfg Config, err error) connectFailure {
	addr := cfg.Addr()

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		f := connectFailure{sqlState: pgErr.Code}
		switch {
		case pgErr.Code == sqlStateInvalidPassword:
			f.code = tunnel.CodeAuthFailed
			f.message = fmt.Sprintf("PostgreSQL refused the login for user %s: wrong username or password", cfg.User)
		case pgErr.Code == sqlStateInvalidAuthSpec && strings.Contains(pgErr.Message, "no encryption"):
			// pg_hba.conf has a hostssl line for this user, and hostnossl
			// rejects it: TLS is required.
			f.code = tunnel.CodeTLS
			f.message = fmt.Sprintf("PostgreSQL at %s accepts user %s only over TLS: enable SSL for the resource (the server said: %s)", addr, cfg.User, pgErr.Message)
		case pgErr.Code == sqlStateInvalidAuthSpec:
			f.code = tunnel.CodeAuthFailed
			f.message = fmt.Sprintf("PostgreSQL refused the login for user %s: wrong username or password (the server said: %s)", cfg.User, pgErr.Message)
		case pgErr.Code == sqlStateInvalidCatalogName:
			f.code = tunnel.CodeNoDatabase
			f.message = fmt.Sprintf("database %q does not exist on %s", cfg.Database, addr)
		case pgErr.Code == sqlStateInsufficientPrivs:
			f.code = tunnel.CodeAuthFailed
			f.message = fmt.Sprintf("user %s may not connect to database %q: %s", cfg.User, cfg.Database, pgErr.Message)
		case strings.HasPrefix(pgErr.Code, "08"), pgErr.Code == sqlStateCannotConnectNow, pgErr.Code == sqlStateTooManyConnections:
			f.code = tunnel.CodeUnreachable
			f.message = fmt.Sprintf("PostgreSQL at %s cannot take the connection now: %s", addr, pgErr.Message)
		default:
			f.code = tunnel.CodeInternal
			f.message = fmt.Sprintf("PostgreSQL at %s refused the connection: %s (SQLSTATE %s)", addr, pgErr.Message, pgErr.Code)
		}
		return f
	}

	var notPG *notPostgresError
	if errors.As(err, &notPG) {
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("the service at %s is not a PostgreSQL server (%s); the connection was closed: check the resource's host and port", addr, notPG.reason)}
	}
	if f, ok := describeAuthPolicyError(cfg, err); ok {
		return f
	}
	if msg, ok := describeTLSError(err); ok {
		return connectFailure{code: tunnel.CodeTLS, message: fmt.Sprintf("TLS connection to PostgreSQL at %s failed: %s", addr, msg)}
	}
	if strings.Contains(err.Error(), "server refused TLS connection") {
		return connectFailure{code: tunnel.CodeTLS, message: fmt.Sprintf("PostgreSQL at %s does not support TLS (it refused the SSL request): disable SSL for the resource or turn ssl on in the server", addr)}
	}

	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		reason := dnsErr.Err
		if dnsErr.IsNotFound {
			reason = "no such host"
		}
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("cannot resolve the host name %s: %s", cfg.Host, reason)}
	}
	if errors.Is(err, context.Canceled) {
		return connectFailure{code: tunnel.CodeInternal, message: fmt.Sprintf("the connection to PostgreSQL at %s was canceled", addr)}
	}
	if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err) {
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("cannot reach PostgreSQL at %s: no answer within %s", addr, cfg.connectTimeout())}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		if opErr.Op == "dial" {
			return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("cannot reach PostgreSQL at %s: %s", addr, innermost(opErr))}
		}
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("the connection to PostgreSQL at %s broke during the login: %s", addr, innermost(opErr))}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("PostgreSQL at %s closed the connection during the login (is it a PostgreSQL server?)", addr)}
	}
	return connectFailure{code: tunnel.CodeInternal, message: fmt.Sprintf("cannot connect to PostgreSQL at %s: %v", addr, err)}
}

// describeAuthPolicyError explains a login that pgconn stopped because the
// server asked for an authentication method the account may not use
// (Config.AuthMethods): no byte of the password was sent.
func describeAuthPolicyError(cfg Config, err error) (connectFailure, bool) {
	text := err.Error()
	if !strings.Contains(text, "require_auth check failed") {
		return connectFailure{}, false
	}
	addr := cfg.Addr()
	var method, allow string
	switch {
	case strings.Contains(text, "server requested password authentication"):
		method, allow = "cleartext password", tunnel.AuthCleartext
	case strings.Contains(text, "server requested md5 authentication"):
		method, allow = "MD5 password", tunnel.AuthMD5
	case strings.Contains(text, "server did not complete authentication"):
		return connectFailure{code: tunnel.CodeAuthFailed, message: fmt.Sprintf("the database at %s let user %s in without asking for a password (trust authentication): Airlock logs in with SCRAM-SHA-256, so the server's pg_hba.conf must ask for scram-sha-256 (nothing was sent)", addr, cfg.User)}, true
	default:
		return connectFailure{code: tunnel.CodeAuthFailed, message: fmt.Sprintf("the database at %s asked for an authentication method Airlock does not use (it logs in with SCRAM-SHA-256; nothing was sent)", addr)}, true
	}
	return connectFailure{code: tunnel.CodeAuthFailed, message: fmt.Sprintf(
		"the database at %s asked for %s authentication, which this resource does not allow, so the password was not sent: "+
			"an organization admin can allow %q authentication for the resource, or the server can use scram-sha-256 "+
			"(password_encryption = 'scram-sha-256', the password set again, and scram-sha-256 in pg_hba.conf)",
		addr, method, allow)}, true
}

// The helpers both engines share.
var (
	describeTLSError = common.DescribeTLSError
	isNetTimeout     = common.IsNetTimeout
	innermost        = common.Innermost
	redact           = common.Redact
)
