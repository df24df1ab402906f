//go:build unix

package secretrotation_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/keyring"
)

// TestKilledProcessBetweenChangeAndPublish: a process that rotates is
// killed (SIGKILL) after the database took the new password and before the
// secrets were written. The published credentials still log in; the next
// run, in another process, publishes the new password, which logs in.
func TestKilledProcessBetweenChangeAndPublish(t *testing.T) {
	dir, rootKey := t.TempDir(), keyring.GenerateRootKey()
	f := newFixtureIn(t, dir, rootKey, time.Now())
	if _, err := f.svc.Create(f.ctx, f.input("orders-creds")); err != nil {
		t.Fatal(err)
	}
	u0, p0 := f.published(t)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRotateAndDie$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ROTATE_AND_DIE=1", "ROTATE_DIR="+dir, "ROTATE_ROOT_KEY="+rootKey, "ROTATE_USER="+f.uid, "ROTATE_PROJECT="+f.proj)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the rotating process was not killed: %v\n%s", err, out)
	}
	u, p := f.published(t)
	if u != u0 || p != p0 || !f.logsIn(u, p) {
		t.Fatal("the kill changed or broke the published credentials")
	}
	var pending int
	if err := f.db.QueryRow(`SELECT COUNT(*) FROM secret_rotations WHERE pending_password_enc IS NOT NULL`).Scan(&pending); err != nil || pending != 1 {
		t.Fatalf("the killed rotation left no pending password (%d, %v)", pending, err)
	}
	if _, err := f.svc.RotateNow(f.ctx, f.proj, "orders-creds"); err != nil {
		t.Fatal(err)
	}
	u, p = f.published(t)
	if u == u0 || !f.logsIn(u, p) || !f.logsIn(u0, p0) {
		t.Fatalf("after the kill, the next run published %s (logs in: %v); previous %s logs in: %v", u, f.logsIn(u, p), u0, f.logsIn(u0, p0))
	}
}

// TestRotateAndDie is the process TestKilledProcessBetweenChangeAndPublish
// kills: it runs a rotation and kills itself after the password change.
func TestRotateAndDie(t *testing.T) {
	if os.Getenv("ROTATE_AND_DIE") != "1" {
		t.Skip("run by TestKilledProcessBetweenChangeAndPublish")
	}
	db, kr := openStore(t, os.Getenv("ROTATE_DIR"), os.Getenv("ROTATE_ROOT_KEY"))
	_, _, _, svc := services(db, kr, time.Now)
	ctx := api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectUser, ID: os.Getenv("ROTATE_USER"), OrgID: "org", Name: "alice@example.com"})
	svc.SetAfterPasswordChange(func() error {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	})
	_, err := svc.RotateNow(ctx, os.Getenv("ROTATE_PROJECT"), "orders-creds")
	t.Fatalf("the rotation returned (%v) instead of reaching the kill", err)
}
