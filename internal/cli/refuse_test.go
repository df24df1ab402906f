package cli

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongoopts "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// refusingListener answers every connection with r in kind's protocol.
func refusingListener(t *testing.T, kind string, r refusal) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = refuse(c, kind, r)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRefusalReachesAPostgresClient(t *testing.T) {
	r := refuseOtherUser("alice (uid 1000)", "bob (uid 1001)")
	addr := refusingListener(t, "postgres", r)
	// sslmode=prefer sends an SSLRequest first, which must get an N.
	for _, mode := range []string{"disable", "prefer"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := pgconn.Connect(ctx, "postgres://u@"+addr+"/d?sslmode="+mode)
		cancel()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Fatalf("sslmode=%s: got %v, want a PgError", mode, err)
		}
		want := "airlock: this proxy serves only alice (uid 1000), who started `airlock db access`; you are bob (uid 1001)"
		if pgErr.Code != "28000" || pgErr.Severity != "FATAL" || pgErr.Message != want {
			t.Fatalf("sslmode=%s: %s %s %q", mode, pgErr.Severity, pgErr.Code, pgErr.Message)
		}
	}
}

func TestRefusalReachesAMongoClient(t *testing.T) {
	r := refuseUnavailable("the server is away")
	addr := refusingListener(t, "mongodb", r)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	client, err := mongo.Connect(mongoopts.Client().ApplyURI("mongodb://" + addr + "/?directConnection=true").
		SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	err = client.Ping(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), "airlock: the server is away") {
		t.Fatalf("ping: %v", err)
	}
}
