package mongodb

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Rotate logs in as admin (the resource's rotation account), sets the
// password of the user rot.Username (in the resource's authentication
// database) to rot.NewPassword with updateUser, then logs in as that user
// with it (common.Engine).
func (e *Engine) Rotate(ctx context.Context, admin tunnel.Target, rot tunnel.Rotation) tunnel.Result {
	return rotate(ctx, ConfigFromTarget(admin), rot, e.cfg.Dial)
}

func rotate(ctx context.Context, cfg Config, rot tunnel.Rotation, dial common.DialFunc) tunnel.Result {
	if rot.Username == "" || rot.NewPassword == "" {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: "a rotation needs a user and a new password"}
	}
	conn, done, res := login(ctx, cfg, dial)
	if conn == nil {
		res.Message = "the rotation account could not log in: " + res.Message
		return res
	}
	defer done()
	body := bsoncore.NewDocumentBuilder().
		AppendString("updateUser", rot.Username).
		AppendString("pwd", rot.NewPassword).
		AppendString("$db", cfg.authDatabase()).Build()
	rp, err := runCommand(ctx, conn, body)
	if err != nil {
		f := describeConnectError(cfg, err)
		return tunnel.Result{Code: tunnel.CodeInternal, Message: "the answer to updateUser was lost; the password may have changed: " + redact(f.message, rot.NewPassword)}
	}
	if !replyOK(rp.body) {
		code, m := errorOf(rp.body)
		m = redact(redact(m, rot.NewPassword), cfg.Password)
		switch code {
		case "13": // Unauthorized
			return tunnel.Result{Code: tunnel.CodeDenied, Message: fmt.Sprintf(
				"the rotation account %q may not change the password of %q in database %q (%s); it needs the changePassword action on that database, as in the userAdmin role",
				cfg.User, rot.Username, cfg.authDatabase(), m)}
		case "11": // UserNotFound
			return tunnel.Result{Code: tunnel.CodeDenied, Message: fmt.Sprintf("the user %q does not exist in database %q", rot.Username, cfg.authDatabase())}
		}
		return tunnel.Result{Code: tunnel.CodeDenied, Message: fmt.Sprintf("updateUser failed: %s (code %s)", m, code)}
	}
	check := cfg
	check.User, check.Password = rot.Username, rot.NewPassword
	if res := validate(ctx, check, dial); !res.OK {
		return tunnel.Result{Code: tunnel.CodeUnverified, Message: "the password was changed, but logging in with it failed: " + redact(res.Message, rot.NewPassword)}
	}
	return tunnel.Result{OK: true}
}
