package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

var mongoURLLine = regexp.MustCompile(`^mongodb://127\.0\.0\.1:\d+/\?directConnection=true$`)

func TestMongoDBAccessEndToEnd(t *testing.T) {
	plain := testenv.StartFerretDB(t)
	secure := testenv.StartFerretDB(t, testenv.WithTLS())
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

	// A URI with credentials is refused with advice.
	_, e, code := admin.Run("", "resources", "create", "mongodb", "--project-id", project, "--name", "bad", "--gateway", "dc1",
		"--connection-string", "mongodb://u:p@127.0.0.1:1/", "--ssl-enabled=false")
	if code == 0 || !strings.Contains(e, "account") {
		t.Fatalf("URI with credentials: exit %d %s", code, e)
	}
	admin.Must("", "resources", "create", "mongodb", "--project-id", project, "--name", "docs", "--gateway", "dc1",
		"--connection-string", fmt.Sprintf("mongodb://127.0.0.1:%d/", plain.Port), "--ssl-enabled=false")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, secure.CA.CertPEM, 0o644)
	admin.Must("", "resources", "create", "mongodb", "--project-id", project, "--name", "docs-tls", "--gateway", "dc1",
		"--connection-string", fmt.Sprintf("mongodb://127.0.0.1:%d/", secure.Port), "--ssl-ca-file", caFile)
	wrongCA := filepath.Join(t.TempDir(), "wrong.pem")
	os.WriteFile(wrongCA, testenv.NewCA(t).CertPEM, 0o644)
	admin.Must("", "resources", "create", "mongodb", "--project-id", project, "--name", "docs-wrong-ca", "--gateway", "dc1",
		"--connection-string", fmt.Sprintf("mongodb://127.0.0.1:%d/", secure.Port), "--ssl-ca-file", wrongCA)

	account := func(resource, name string, u testenv.MongoUser, password string) (string, int) {
		_, e, code := admin.Run(password, "accounts", "create", "--project-id", project, "--resource", resource, "--name", name,
			"--username", u.User, "--password-stdin")
		return e, code
	}
	if e, code := account("docs", "bad", plain.SCRAM256User, "wrong password"); code == 0 || !strings.Contains(e, "wrong username or password") {
		t.Fatalf("wrong password: exit %d %s", code, e)
	}
	if e, code := account("docs-wrong-ca", "x", secure.SCRAM256User, secure.SCRAM256User.Password); code == 0 || !strings.Contains(e, "certificate") {
		t.Fatalf("wrong CA: exit %d %s", code, e)
	}
	for _, a := range []struct {
		resource, name string
		u              testenv.MongoUser
	}{{"docs", "app", plain.SCRAM256User}, {"docs", "legacy", plain.SCRAM1User}, {"docs-tls", "app", secure.SCRAM256User}} {
		if e, code := account(a.resource, a.name, a.u, a.u.Password); code != 0 {
			t.Fatalf("account %s/%s: %s", a.resource, a.name, e)
		}
	}

	// The project redacts the values of written documents in its logs.
	admin.Must("", "projects", "update", project, "--log-redact-values")
	ctx := context.Background()
	for _, tc := range []struct{ resource, account string }{{"docs", "app"}, {"docs", "legacy"}, {"docs-tls", "app"}} {
		t.Run(tc.resource+"/"+tc.account, func(t *testing.T) {
			p := admin.Start("db", "access", "--project-id", project, "--resource", tc.resource, "--account", tc.account)
			url := p.WaitLine(t, mongoURLLine, 60*time.Second)
			id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
			client, err := mongo.Connect(options.Client().ApplyURI(url))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Disconnect(ctx)
			coll := client.Database("shop").Collection("orders_" + tc.account)
			if _, err := coll.InsertMany(ctx, []any{bson.D{{Key: "n", Value: 1}, {Key: "note", Value: "private-note-4711"}},
				bson.D{{Key: "n", Value: 2}}, bson.D{{Key: "n", Value: 3}}}); err != nil {
				t.Fatalf("insert: %v", err)
			}
			if _, err := coll.UpdateOne(ctx, bson.D{{Key: "n", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 10}}}}); err != nil {
				t.Fatalf("update: %v", err)
			}
			if _, err := coll.DeleteOne(ctx, bson.D{{Key: "n", Value: 2}}); err != nil {
				t.Fatalf("delete: %v", err)
			}
			cur, err := coll.Aggregate(ctx, mongo.Pipeline{{{Key: "$group", Value: bson.D{{Key: "_id", Value: nil}, {Key: "sum", Value: bson.D{{Key: "$sum", Value: "$n"}}}}}}})
			if err != nil {
				t.Fatalf("aggregate: %v", err)
			}
			var res []bson.M
			if err := cur.All(ctx, &res); err != nil || len(res) != 1 || fmt.Sprint(res[0]["sum"]) != "13" {
				t.Fatalf("aggregate result %v %v", res, err)
			}
			// 20 concurrent connections.
			var wg sync.WaitGroup
			errc := make(chan error, 20)
			for i := 0; i < 20; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := mongo.Connect(options.Client().ApplyURI(url))
					if err != nil {
						errc <- err
						return
					}
					defer c.Disconnect(ctx)
					if err := c.Database("shop").Collection("orders_"+tc.account).FindOne(ctx, bson.D{{Key: "n", Value: 3}}).Err(); err != nil {
						errc <- err
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Error(err)
			}
			// The session log has the commands, not hello or ping.
			deadline := time.Now().Add(30 * time.Second)
			for {
				out := admin.Must("", "sessions", "logs", id, "--output", "json")
				if strings.Contains(out, `"command":"aggregate"`) && strings.Contains(out, `"command":"delete"`) {
					if strings.Contains(out, `"command":"hello"`) || strings.Contains(out, `"command":"ping"`) {
						t.Errorf("hello or ping logged")
					}
					if !strings.Contains(out, `"collection":"orders_`+tc.account+`"`) {
						t.Errorf("no collection in the log")
					}
					if strings.Contains(out, "private-note-4711") || !strings.Contains(out, `"command":"insert"`) {
						t.Errorf("the insert is missing or its values are not redacted:\n%s", out)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("commands never reached the log:\n%s", out)
				}
				time.Sleep(300 * time.Millisecond)
			}
			p.Stop(syscall.SIGINT)
			if code := p.Wait(t, 20*time.Second); code != 0 {
				t.Fatalf("db access exit %d", code)
			}
		})
	}

	// Expiry: the CLI says so and exits; the connection is closed.
	{
		p := admin.Start("db", "access", "--project-id", project, "--resource", "docs", "--account", "app", "--duration", "10s")
		url := p.WaitLine(t, mongoURLLine, 60*time.Second)
		c, err := mongo.Connect(options.Client().ApplyURI(url))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Ping(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if code := p.Wait(t, 40*time.Second); code != 0 || !strings.Contains(p.Stdout(), "expired") {
			t.Fatalf("at expiry: exit %d, stdout %q", code, p.Stdout())
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := c.Ping(pctx, nil); err == nil {
			t.Fatal("a MongoDB connection survived expiry")
		}
		cancel()
		c.Disconnect(ctx)
	}

	// Large transfers, then termination, through the real binaries.
	p := admin.Start("db", "access", "--project-id", project, "--resource", "docs", "--account", "app")
	url := p.WaitLine(t, mongoURLLine, 60*time.Second)
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	client, err := mongo.Connect(options.Client().ApplyURI(url))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	big := client.Database("shop").Collection("big")
	blob := strings.Repeat("x", 10_000)
	docs := make([]any, 1000) // about 10 MB in one insertMany
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "blob", Value: blob}}
	}
	if _, err := big.InsertMany(ctx, docs); err != nil {
		t.Fatalf("10 MB insertMany: %v", err)
	}
	many := client.Database("shop").Collection("many")
	for start := 0; start < 100_000; start += 10_000 {
		batch := make([]any, 10_000)
		for i := range batch {
			batch[i] = bson.D{{Key: "_id", Value: start + i}}
		}
		if _, err := many.InsertMany(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := many.Find(ctx, bson.D{}, options.Find().SetBatchSize(1000))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for cur.Next(ctx) {
		n++
	}
	if cur.Err() != nil || n != 100_000 {
		t.Fatalf("cursor: %d documents, err %v", n, cur.Err())
	}
	admin.Must("", "sessions", "terminate", id)
	if code := p.Wait(t, 20*time.Second); code == 0 || !strings.Contains(p.Stderr(), "terminated by an administrator") {
		t.Fatalf("after termination: exit %d %s", code, p.Stderr())
	}
	if err := client.Ping(ctx, nil); err == nil {
		t.Fatal("a MongoDB connection survived termination")
	}
}
