package postgres

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/xdg-go/scram"

	"github.com/airlockpam/airlock/internal/tunnel"
)

// scramIterations is the iteration count of the verifiers Rotate makes:
// PostgreSQL's default (scram_iterations).
const scramIterations = 4096

// Rotate logs in as admin (the resource's rotation account), sets the
// password of the role rot.Username to rot.NewPassword with ALTER ROLE,
// then logs in as that role with it (common.Engine). The server receives a
// SCRAM-SHA-256 verifier made here, as psql's \password does, never the
// password: the statement log holds nothing that logs in.
func (e *Engine) Rotate(ctx context.Context, admin tunnel.Target, rot tunnel.Rotation) tunnel.Result {
	return Rotate(ctx, e.config(admin), rot)
}

// Rotate is Engine.Rotate with cfg as the rotation account's connection.
func Rotate(ctx context.Context, cfg Config, rot tunnel.Rotation) tunnel.Result {
	if rot.Username == "" || rot.NewPassword == "" {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: "a rotation needs a user and a new password"}
	}
	verifier, err := ScramVerifier(rot.NewPassword)
	if err != nil {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: "making the SCRAM-SHA-256 verifier of the new password failed: " + err.Error()}
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
	stmt := "ALTER ROLE " + quoteIdent(rot.Username) + " PASSWORD '" + verifier + "'"
	if _, err := conn.Exec(ctx, stmt).ReadAll(); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			switch pe.Code {
			case sqlStateInsufficientPrivs:
				return tunnel.Result{Code: tunnel.CodeDenied, Message: fmt.Sprintf(
					"the rotation account %q may not change the password of %q (%s). It needs CREATEROLE; on PostgreSQL 16 and later also ADMIN OPTION on the role: GRANT %s TO %s WITH ADMIN OPTION",
					cfg.User, rot.Username, pe.Message, quoteIdent(rot.Username), quoteIdent(cfg.User))}
			case "42704": // undefined_object
				return tunnel.Result{Code: tunnel.CodeDenied, Message: fmt.Sprintf("the role %q does not exist", rot.Username)}
			}
			return tunnel.Result{Code: tunnel.CodeDenied, Message: fmt.Sprintf("ALTER ROLE failed: %s (SQLSTATE %s)", redact(pe.Message, cfg.Password), pe.Code)}
		}
		// The connection broke: the change may or may not have committed.
		return tunnel.Result{Code: tunnel.CodeInternal, Message: "the connection broke during ALTER ROLE; the password may have changed: " + redact(err.Error(), cfg.Password)}
	}
	check := cfg
	check.User, check.Password = rot.Username, rot.NewPassword
	if res := Validate(ctx, check); !res.OK {
		return tunnel.Result{Code: tunnel.CodeUnverified, Message: "the password was changed, but logging in with it failed: " + redact(res.Message, rot.NewPassword)}
	}
	return tunnel.Result{OK: true}
}

// ScramVerifier returns PostgreSQL's SCRAM-SHA-256 verifier of password
// with a fresh random salt: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>.
func ScramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	c, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		return "", err
	}
	sc, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", scramIterations, b64(salt), b64(sc.StoredKey), b64(sc.ServerKey)), nil
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
