//lint:file-ignore SA1019 OP_QUERY is deprecated, but the refusal must answer it.

package cli

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongoopts "go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
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

// TestRefusalAnswersALegacyHello: a client that opens with an OP_QUERY
// hello (as old drivers and mongosh's first probe do) gets an OP_REPLY
// holding the error document.
func TestRefusalAnswersALegacyHello(t *testing.T) {
	addr := refusingListener(t, "mongodb", refuseOtherUser("alice (uid 1000)", "bob (uid 1001)"))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	idx, msg := wiremessage.AppendHeaderStart(nil, 42, 0, wiremessage.OpQuery)
	msg = wiremessage.AppendQueryFlags(msg, 0)
	msg = wiremessage.AppendQueryFullCollectionName(msg, "admin.$cmd")
	msg = wiremessage.AppendQueryNumberToSkip(msg, 0)
	msg = wiremessage.AppendQueryNumberToReturn(msg, -1)
	msg = append(msg, bsoncore.NewDocumentBuilder().AppendInt32("isMaster", 1).Build()...)
	msg = bsoncore.UpdateLength(msg, idx, int32(len(msg[idx:])))
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	length, _, responseTo, op, rem, ok := wiremessage.ReadHeader(reply)
	if !ok || int(length) != len(reply) || responseTo != 42 || op != wiremessage.OpReply {
		t.Fatalf("reply header: ok %v length %d/%d responseTo %d op %v", ok, length, len(reply), responseTo, op)
	}
	_, rem, _ = wiremessage.ReadReplyFlags(rem)
	_, rem, _ = wiremessage.ReadReplyCursorID(rem)
	_, rem, _ = wiremessage.ReadReplyStartingFrom(rem)
	n, rem, _ := wiremessage.ReadReplyNumberReturned(rem)
	doc := bsoncore.Document(rem)
	if n != 1 || doc.Validate() != nil {
		t.Fatalf("reply body: %d documents, %v", n, doc.Validate())
	}
	code, _ := doc.Lookup("code").Int32OK()
	errmsg, _ := doc.Lookup("errmsg").StringValueOK()
	if ok, _ := doc.Lookup("ok").DoubleOK(); ok != 0 || code != 13 || !strings.HasPrefix(errmsg, "airlock: this proxy serves only alice (uid 1000)") {
		t.Fatalf("reply document: %s", doc)
	}
}
