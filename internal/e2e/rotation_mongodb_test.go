package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestMongoDBRotation rotates a MongoDB account's password on FerretDB
// through the real binaries, as the resource's rotation account (the
// setup admin, with updateUser): the old password no longer logs in, and
// `db access` connects with the new one, which nobody has seen.
func TestMongoDBRotation(t *testing.T) {
	fdb := testenv.StartFerretDB(t)
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	var gw struct{ EnrollmentToken string }
	admin.JSON(&gw, "", "gateways", "create", "dc1")
	e2e.Start(t, nil, "gateway", "--domain", srv.URL, "--token", gw.EnrollmentToken, "--data-dir", t.TempDir())
	project := strings.TrimSpace(admin.Must("", "projects", "create", "mongo"))
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(admin.Must("", "gateways", "list"), "online") {
		if time.Now().After(deadline) {
			t.Fatal("gateway not online")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A wrong rotation password is refused before it is saved.
	create := []string{"resources", "create", "mongodb", "--project-id", project, "--name", "docs", "--gateway", "dc1",
		"--connection-string", fmt.Sprintf("mongodb://127.0.0.1:%d/", fdb.Port), "--ssl-enabled=false",
		"--rotation-username", fdb.Admin.User, "--rotation-password-stdin"}
	if _, errOut, code := admin.Run("wrong password", create...); code == 0 || !strings.Contains(errOut, "wrong username or password") {
		t.Fatalf("a wrong rotation password: exit %d: %s", code, errOut)
	}
	admin.Must(fdb.Admin.Password, create...)
	u := fdb.SCRAM256User
	admin.Must(u.Password, "accounts", "create", "--project-id", project, "--resource", "docs", "--name", "app",
		"--username", u.User, "--password-stdin", "--rotation-interval", "30d")
	out := admin.Must("", "accounts", "rotate", "app", "--project-id", project)
	if !strings.Contains(out, "every 30d, ok") {
		t.Fatalf("accounts rotate printed: %s", out)
	}
	ctx := context.Background()
	direct, err := mongo.Connect(fdb.ClientOptions(u))
	if err != nil {
		t.Fatal(err)
	}
	if err := direct.Ping(ctx, nil); err == nil {
		t.Fatal("the old password still logs in after the rotation")
	}
	direct.Disconnect(ctx)
	p := admin.Start("db", "access", "--project-id", project, "--resource", "docs", "--account", "app")
	url := p.WaitLine(t, mongoURLLine, 60*time.Second)
	client, err := mongo.Connect(options.Client().ApplyURI(url))
	if err != nil {
		t.Fatal(err)
	}
	coll := client.Database("shop").Collection("rotated")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "n", Value: 1}}); err != nil {
		t.Fatalf("db access after the rotation: %v", err)
	}
	client.Disconnect(ctx)
	p.Stop(syscall.SIGINT)
	var acct struct {
		Rotation struct {
			Status        string
			LastRotatedAt *time.Time
		}
	}
	admin.JSON(&acct, "", "accounts", "get", "app", "--project-id", project)
	if acct.Rotation.Status != "ok" || acct.Rotation.LastRotatedAt == nil {
		t.Fatalf("accounts get after the rotation: %+v", acct.Rotation)
	}
}
