package e2e_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/testenv"
)

// TestClientRequestHonouredOrRefused: a client that asks for another
// database than the resource's, or for a replication connection, is refused
// with a FATAL that says why, instead of silently getting something else;
// the user name it sends is ignored. The session log's connect events show
// what each client asked for.
func TestClientRequestHonouredOrRefused(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	id := sessionOf(t, p)
	someoneElse := strings.Replace(url, "postgres://"+w.pg.SCRAMUser.User+"@", "postgres://someone_else@", 1)

	other := strings.Replace(someoneElse, "/"+testenv.AppDatabase+"?", "/postgres?", 1)
	_, err := pgx.Connect(ctx, other)
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) || pgErr.Severity != "FATAL" || pgErr.Code != "28000" ||
		!strings.Contains(pgErr.Message, `this access is to database "`+testenv.AppDatabase+`" of resource "main-db"`) ||
		!strings.Contains(pgErr.Message, "dbname="+testenv.AppDatabase) {
		t.Fatalf("dbname=postgres: %v, want FATAL 28000 naming database %s of main-db", err, testenv.AppDatabase)
	}

	cc, err := pgconn.ParseConfig(someoneElse)
	if err != nil {
		t.Fatal(err)
	}
	cc.RuntimeParams["replication"] = "database"
	_, err = pgconn.ConnectConfig(ctx, cc)
	if err == nil || !strings.Contains(err.Error(), "replication connections are not supported through Airlock") {
		t.Fatalf("replication=database: %v", err)
	}

	// The resource's database, as another user: served, as the account.
	c := connect(t, someoneElse)
	var user, db string
	if err := c.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&user, &db); err != nil {
		t.Fatal(err)
	}
	if user != w.pg.SCRAMUser.User || db != testenv.AppDatabase {
		t.Fatalf("connected as %s to %s", user, db)
	}

	want := []string{
		"connect user=someone_else database=postgres -> error 28000",
		"connect user=someone_else database=" + testenv.AppDatabase + " replication=database -> error 0A000",
		"connect user=someone_else database=" + testenv.AppDatabase + " -> ok ",
	}
	var got []string
	w.waitLogs(id, 20*time.Second, func(evs []logEvent) bool {
		got = got[:0]
		for _, e := range evs {
			if e.Kind == "connect" {
				got = append(got, e.Kind+" "+e.Statement+" -> "+e.Outcome+" "+e.ErrorCode)
			}
		}
		return len(got) >= len(want)
	})
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("connect events:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
