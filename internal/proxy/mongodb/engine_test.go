//lint:file-ignore SA1019 the tests send OP_QUERY, as old clients do.

package mongodb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestEngine runs the engine against one FerretDB, as the SCRAM-SHA-256
// user, with clients that give no credentials.
func TestEngine(t *testing.T) {
	f := testenv.StartFerretDB(t)
	cfg := configFor(f, f.SCRAM256User)

	t.Run("CRUD", func(t *testing.T) {
		p := startProxy(t, cfg)
		ctx := testContext(t)
		coll := p.connect(t).Database("crud").Collection("users")
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "name", Value: "ada"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: 2}, {Key: "name", Value: "bob"}}, bson.D{{Key: "_id", Value: 3}, {Key: "name", Value: "cy"}}}); err != nil {
			t.Fatal(err)
		}
		up, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 2}}, bson.D{{Key: "$set", Value: bson.D{{Key: "name", Value: "bo"}}}})
		if err != nil || up.ModifiedCount != 1 {
			t.Fatalf("update: %v %+v", err, up)
		}
		del, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: 3}})
		if err != nil || del.DeletedCount != 1 {
			t.Fatalf("delete: %v %+v", err, del)
		}
		cur, err := coll.Find(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		var docs []bson.M
		if err := cur.All(ctx, &docs); err != nil || len(docs) != 2 {
			t.Fatalf("find: %v %v", err, docs)
		}
		cur, err = coll.Aggregate(ctx, mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "name", Value: "bo"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		docs = nil
		if err := cur.All(ctx, &docs); err != nil || len(docs) != 1 || docs[0]["name"] != "bo" {
			t.Fatalf("aggregate: %v %v", err, docs)
		}
		// A duplicate key is a write error: outcome error, code 11000.
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); !mongo.IsDuplicateKeyError(err) {
			t.Fatalf("duplicate insert: %v", err)
		}
		if err := p.connect(t).Ping(ctx, nil); err != nil {
			t.Fatal(err)
		}

		inserts := mghCommands(t, p.rec, "insert", 3)
		for i, want := range []int64{1, 2, 0} {
			ev := inserts[i]
			if ev.Database != "crud" || ev.Collection != "users" || ev.Rows != want {
				t.Errorf("insert event %d: %+v", i, ev)
			}
		}
		if inserts[0].Outcome != "ok" || !strings.Contains(inserts[0].Statement, `"name":"ada"`) || strings.Contains(inserts[0].Statement, "lsid") {
			t.Errorf("first insert: %+v", inserts[0])
		}
		if !strings.Contains(inserts[1].Statement, `"documents":[`) || !strings.Contains(inserts[1].Statement, `"cy"`) {
			t.Errorf("insertMany statement lacks its document sequence: %s", inserts[1].Statement)
		}
		if dup := inserts[2]; dup.Outcome != "error" || dup.ErrorCode != "11000" || dup.ErrorMsg == "" {
			t.Errorf("duplicate insert event: %+v", dup)
		}
		checkOne := func(cmd string, rows int64) {
			t.Helper()
			evs := mghCommands(t, p.rec, cmd, 1)
			if len(evs) != 1 || evs[0].Outcome != "ok" || evs[0].Rows != rows || evs[0].Collection != "users" || evs[0].Database != "crud" {
				t.Errorf("%s events: %+v", cmd, evs)
			}
			if len(evs) == 1 && evs[0].DurationUS <= 0 {
				t.Errorf("%s event without a duration: %+v", cmd, evs[0])
			}
		}
		checkOne("update", 1)
		checkOne("delete", 1)
		checkOne("find", 2)
		checkOne("aggregate", 1)
		for _, ev := range p.rec.all() {
			switch strings.ToLower(ev.Command) {
			case "hello", "ismaster", "ping", "endsessions":
				t.Errorf("%s was recorded: %+v", ev.Command, ev)
			}
			if strings.Contains(ev.Statement, "$clusterTime") || strings.Contains(ev.Statement, `"$db"`) {
				t.Errorf("bookkeeping in statement: %s", ev.Statement)
			}
		}
		if evs := eventsOfKind(p.rec, sessionlog.KindConnect); len(evs) == 0 || evs[0].Outcome != "ok" {
			t.Errorf("connect events: %+v", evs)
		}
	})

	t.Run("LargeCursor", func(t *testing.T) {
		// The 100,000 documents go in one insert of about 2 MB, whose
		// statement is recorded whole: over the default limit, which
		// InsertMany10MBRefused tests.
		p := startProxy(t, cfg, common.WithStatementLimit(8<<20, ""))
		ctx := testContext(t)
		coll := p.connect(t).Database("big").Collection("many")
		const n = 100_000
		docs := make([]any, n)
		for i := range docs {
			docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "v", Value: i % 7}}
		}
		if _, err := coll.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		cur, err := coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(1000))
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for cur.Next(ctx) {
			count++
		}
		if err := cur.Err(); err != nil || count != n {
			t.Fatalf("cursor: %d documents, %v", count, err)
		}
		var rows int64
		for _, ev := range append(p.rec.commands("find"), p.rec.commands("getMore")...) {
			rows += ev.Rows
			if ev.Collection != "many" || ev.Outcome != "ok" {
				t.Errorf("event: %+v", ev)
			}
		}
		if rows != n || len(p.rec.commands("getMore")) < 99 {
			t.Errorf("find and getMore events count %d rows in %d getMores", rows, len(p.rec.commands("getMore")))
		}
	})

	// A 10 MB insertMany is one command of 10 MB: over the default
	// recording limit (1 MiB) it is refused, whole, and nothing is
	// inserted; under a project limit that fits it, it is recorded whole;
	// with OversizeRecordEnds it runs and is recorded by its ends.
	insert10MB := func(t *testing.T, p *proxy) error {
		coll := p.connect(t).Database("big").Collection("large")
		pad := strings.Repeat("x", 10_000)
		docs := make([]any, 1000)
		for i := range docs {
			docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "pad", Value: pad}}
		}
		_, err := coll.InsertMany(testContext(t), docs)
		return err
	}
	count := func(t *testing.T, p *proxy) int64 {
		n, err := p.connect(t).Database("big").Collection("large").CountDocuments(testContext(t), bson.D{})
		if err != nil {
			t.Fatalf("count: %v", err)
		}
		return n
	}
	t.Run("InsertMany10MBRefused", func(t *testing.T) {
		p := startProxy(t, cfg)
		err := insert10MB(t, p)
		if err == nil || !strings.Contains(err.Error(), "over this project's recording limit of 1048576 bytes") {
			t.Fatalf("insertMany over the limit: %v", err)
		}
		if n := count(t, p); n != 0 {
			t.Errorf("%d documents inserted by a refused command", n)
		}
		evs := mghCommands(t, p.rec, "insert", 1)
		if evs[0].Outcome != "error" || evs[0].ErrorCode != "10334" || !strings.Contains(evs[0].Statement, "bytes, sha256 ") {
			t.Errorf("refusal events: %+v", evs)
		}
	})
	t.Run("InsertMany10MBWithinLimit", func(t *testing.T) {
		p := startProxy(t, cfg, common.WithStatementLimit(32<<20, ""))
		if err := insert10MB(t, p); err != nil {
			t.Fatal(err)
		}
		if n := count(t, p); n != 1000 {
			t.Fatalf("count: %d", n)
		}
		evs := mghCommands(t, p.rec, "insert", 1)
		if evs[0].Rows != 1000 || strings.Count(evs[0].Statement, `"pad":`) != 1000 {
			t.Errorf("insert events: %d, rows %d", len(evs), evs[0].Rows)
		}
		_ = p.connect(t).Database("big").Drop(testContext(t))
	})
	t.Run("InsertMany10MBRecordEnds", func(t *testing.T) {
		p := startProxy(t, cfg, common.WithStatementLimit(0, tunnel.OversizeRecordEnds))
		if err := insert10MB(t, p); err != nil {
			t.Fatal(err)
		}
		if n := count(t, p); n != 1000 {
			t.Fatalf("count: %d", n)
		}
		evs := mghCommands(t, p.rec, "insert", 1)
		st := evs[0].Statement
		if evs[0].Rows != 1000 || len(st) > 2*common.StatementEndsBytes+200 || !strings.Contains(st, "bytes, sha256 ") ||
			!strings.Contains(st, `"documents":[{"_id":0,"pad":"xxx`) || !strings.HasSuffix(st, `xxx"}]}`) {
			t.Errorf("insert event: rows %d, statement of %d bytes: %.300s … %s", evs[0].Rows, len(st), st, st[max(0, len(st)-300):])
		}
		_ = p.connect(t).Database("big").Drop(testContext(t))
	})

	t.Run("Concurrent", func(t *testing.T) {
		p := startProxy(t, cfg)
		ctx := testContext(t)
		const clients = 20
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := range clients {
			c := connectURI(t, p.uri())
			wg.Go(func() {
				coll := c.Database("conc").Collection(fmt.Sprintf("c%d", i))
				for j := range 20 {
					if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: j}}); err != nil {
						errs <- err
						return
					}
				}
				n, err := coll.CountDocuments(ctx, bson.D{})
				if err == nil && n != 20 {
					err = fmt.Errorf("client %d counts %d documents", i, n)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		mghCommands(t, p.rec, "insert", clients*20)
	})

	t.Run("AuthenticatedAsTheAccount", func(t *testing.T) {
		p := startProxy(t, cfg)
		ctx := testContext(t)
		var st struct {
			AuthInfo struct {
				AuthenticatedUsers []struct{ User, DB string }
			}
		}
		if err := p.connect(t).Database("admin").RunCommand(ctx, bson.D{{Key: "connectionStatus", Value: 1}}).Decode(&st); err != nil {
			t.Fatal(err)
		}
		if len(st.AuthInfo.AuthenticatedUsers) != 1 || st.AuthInfo.AuthenticatedUsers[0].User != f.SCRAM256User.User {
			t.Fatalf("authenticated users: %+v", st.AuthInfo.AuthenticatedUsers)
		}
	})

	t.Run("ClientCredentialsRefused", func(t *testing.T) {
		p := startProxy(t, cfg)
		ctx := testContext(t)
		for _, mech := range []string{"", "&authMechanism=SCRAM-SHA-1"} {
			uri := "mongodb://someone:pw@" + p.addr + "/?directConnection=true" + mech
			c := connectURI(t, uri)
			err := c.Ping(ctx, nil)
			if err == nil || !strings.Contains(err.Error(), authMessage) {
				t.Errorf("%s: ping with credentials: %v", uri, err)
			}
		}
		if evs := p.rec.commands("saslStart"); len(evs) == 0 || evs[0].Outcome != "error" || evs[0].ErrorCode != "18" || evs[0].Statement != "" {
			t.Errorf("saslStart events: %+v", evs)
		}
	})

	t.Run("CreateUserPasswordMasked", func(t *testing.T) {
		p := startProxy(t, cfg)
		ctx := testContext(t)
		const secret = "Very-Secret-Pw-4711"
		db := p.connect(t).Database("admin")
		err := db.RunCommand(ctx, bson.D{{Key: "createUser", Value: "newbie"}, {Key: "pwd", Value: secret},
			{Key: "roles", Value: bson.A{}}, {Key: "mechanisms", Value: bson.A{"SCRAM-SHA-256"}}}).Err()
		if err != nil {
			t.Fatal(err)
		}
		err = db.RunCommand(ctx, bson.D{{Key: "updateUser", Value: "newbie"}, {Key: "pwd", Value: secret + "2"}}).Err()
		t.Logf("updateUser: %v", err) // FerretDB may not support it; the event must not leak either way
		if err := db.RunCommand(ctx, bson.D{{Key: "dropUser", Value: "newbie"}}).Err(); err != nil {
			t.Fatal(err)
		}
		evs := p.rec.commands("createUser")
		if len(evs) != 1 || !strings.Contains(evs[0].Statement, `"pwd":"***"`) || evs[0].Collection != "newbie" {
			t.Errorf("createUser events: %+v", evs)
		}
		noSecret(t, p.rec, secret, f.SCRAM256User.Password)
	})

	t.Run("RedactValues", func(t *testing.T) {
		p := startProxy(t, cfg, common.WithRedactValues(true))
		ctx := testContext(t)
		coll := p.connect(t).Database("red").Collection("cards")
		if _, err := coll.InsertMany(ctx, []any{bson.D{{Key: "card", Value: "4111-1111"}, {Key: "nested", Value: bson.D{{Key: "cvv", Value: 123}}}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.UpdateOne(ctx, bson.D{{Key: "card", Value: "4111-1111"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "card", Value: "5500-0000"}}}}); err != nil {
			t.Fatal(err)
		}
		ins := mghCommands(t, p.rec, "insert", 1)
		if len(ins) != 1 || strings.Contains(ins[0].Statement, "4111") || strings.Contains(ins[0].Statement, "123") ||
			!strings.Contains(ins[0].Statement, `"card":"***"`) || !strings.Contains(ins[0].Statement, `"cvv":"***"`) {
			t.Errorf("insert events: %+v", ins)
		}
		ups := mghCommands(t, p.rec, "update", 1)
		if len(ups) != 1 || strings.Contains(ups[0].Statement, "5500") || !strings.Contains(ups[0].Statement, `"$set":{"card":"***"}`) {
			t.Errorf("update events: %+v", ups)
		}
	})

	t.Run("LegacyHello", func(t *testing.T) {
		p := startProxy(t, cfg)
		conn := dialRaw(t, p)
		q := bsoncore.NewDocumentBuilder().AppendInt32("isMaster", 1).
			AppendString("saslSupportedMechs", "admin.someone").
			AppendDocument("client", bsoncore.NewDocumentBuilder().AppendString("application", "legacy").Build()).
			AppendArray("compression", bsoncore.NewArrayBuilder().AppendString("zlib").Build()).Build()
		msg := appendOpQuery(77, "admin.$cmd", q)
		rep := roundTripRaw(t, conn, msg)
		_, _, respTo, op, rem, _ := wiremessage.ReadHeader(rep)
		if op != wiremessage.OpReply || respTo != 77 {
			t.Fatalf("reply op %s responseTo %d", op, respTo)
		}
		doc := replyDocument(t, rem)
		if v, err := doc.LookupErr("ismaster"); err != nil || !v.Boolean() {
			t.Errorf("ismaster: %v", doc)
		}
		for _, k := range []string{"saslSupportedMechs", "compression", "topologyVersion", "setName", "hosts"} {
			if _, err := doc.LookupErr(k); err == nil {
				t.Errorf("reply has %s: %v", k, doc)
			}
		}
		for _, k := range []string{"maxMessageSizeBytes", "maxBsonObjectSize", "maxWriteBatchSize", "maxWireVersion"} {
			if _, err := doc.LookupErr(k); err != nil {
				t.Errorf("reply lacks %s: %v", k, doc)
			}
		}
		// An OP_QUERY command other than hello is forwarded too.
		rep = roundTripRaw(t, conn, appendOpQuery(78, "admin.$cmd", bsoncore.NewDocumentBuilder().AppendInt32("listDatabases", 1).Build()))
		_, _, respTo, op, rem, _ = wiremessage.ReadHeader(rep)
		if doc := replyDocument(t, rem); op != wiremessage.OpReply || respTo != 78 || !replyOK(doc) {
			t.Errorf("listDatabases reply %s %d %v", op, respTo, doc)
		}
	})

	t.Run("UnacknowledgedWrite", func(t *testing.T) {
		p := startProxy(t, cfg)
		conn := dialRaw(t, p)
		body := bsoncore.NewDocumentBuilder().AppendString("insert", "w0").AppendString("$db", "unack").
			AppendArray("documents", bsoncore.NewArrayBuilder().AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()).Build()).
			AppendDocument("writeConcern", bsoncore.NewDocumentBuilder().AppendInt32("w", 0).Build()).Build()
		msg := appendMsg(nil, 5, 0, body)
		binary.LittleEndian.PutUint32(msg[16:], uint32(wiremessage.MoreToCome))
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		// The next request's reply is the next thing the client reads.
		find := bsoncore.NewDocumentBuilder().AppendString("count", "w0").AppendString("$db", "unack").Build()
		rep := roundTripRaw(t, conn, appendMsg(nil, 6, 0, find))
		rp, err := parseReply(rep)
		if err != nil || rp.responseTo != 6 || !replyOK(rp.body) {
			t.Fatalf("count reply: %v %+v", err, rp)
		}
		if evs := p.rec.commands("insert"); len(evs) != 1 || evs[0].Outcome != "unacknowledged" {
			t.Errorf("insert events: %+v", evs)
		}
	})

	t.Run("Malformed", func(t *testing.T) {
		p := startProxy(t, cfg)
		valid := appendMsg(nil, 9, 0, bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).AppendString("$db", "admin").Build())
		header := func(length int32, op wiremessage.OpCode) []byte {
			b := make([]byte, 16)
			binary.LittleEndian.PutUint32(b[0:], uint32(length))
			binary.LittleEndian.PutUint32(b[4:], 9)
			binary.LittleEndian.PutUint32(b[12:], uint32(op))
			return b
		}
		badBSON := bytes.Clone(valid)
		badBSON[len(badBSON)-1] = 0x7f // the body's terminating NUL
		badFlag := bytes.Clone(valid)
		badFlag[16] |= 0x04
		compressed := bytes.Clone(valid)
		binary.LittleEndian.PutUint32(compressed[12:], uint32(wiremessage.OpCompressed))
		cases := []struct {
			name   string
			msg    []byte
			answer bool
		}{
			{"negative length", header(-1, wiremessage.OpMsg), false},
			{"short length", header(5, wiremessage.OpMsg), false},
			{"too large", header(DefaultMaxMessageSize+1, wiremessage.OpMsg), true},
			{"huge", header(0x7fffffff, wiremessage.OpMsg), true},
			{"unknown opcode", append(header(20, 1234), 0, 0, 0, 0), true},
			{"compressed", compressed, true},
			{"invalid BSON", badBSON, true},
			{"unknown required flag", badFlag, true},
			{"truncated", valid[:len(valid)-3], false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				conn := dialRaw(t, p)
				if _, err := conn.Write(tc.msg); err != nil {
					t.Fatal(err)
				}
				if tc.name == "truncated" {
					_ = conn.(*net.TCPConn).CloseWrite()
				}
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				rep, err := readMessage(conn, readLimits{maxSize: DefaultMaxMessageSize})
				if tc.answer {
					if err != nil {
						t.Fatalf("no error reply: %v", err)
					}
					rp, err := parseReply(rep)
					if err != nil || replyOK(rp.body) || rp.responseTo != 9 {
						t.Fatalf("reply: %v %+v", err, rp)
					}
					_, msg := errorOf(rp.body)
					t.Logf("answered: %s", msg)
					_, err = readMessage(conn, readLimits{maxSize: DefaultMaxMessageSize})
					if !errors.Is(err, io.EOF) && !isReset(err) {
						t.Fatalf("connection not closed after the error: %v", err)
					}
				} else if err == nil {
					t.Fatalf("got a reply to a message without a valid header")
				} else if !errors.Is(err, io.EOF) && !isReset(err) {
					t.Fatalf("connection not closed: %v", err)
				}
			})
		}
		// Other connections are not affected.
		if err := p.connect(t).Ping(testContext(t), nil); err != nil {
			t.Fatal(err)
		}
		var protocolErrs int
		for _, err := range p.serveErrors() {
			var pe *ProtocolError
			if errors.As(err, &pe) {
				protocolErrs++
			}
		}
		if protocolErrs < 6 {
			t.Errorf("Serve returned %d protocol errors: %v", protocolErrs, p.serveErrors())
		}
	})

	t.Run("SessionClose", func(t *testing.T) {
		p := startProxy(t, cfg)
		ctx := testContext(t)
		c := p.connect(t)
		coll := c.Database("close").Collection("c")
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "a", Value: 1}}); err != nil {
			t.Fatal(err)
		}
		raw := dialRaw(t, p)
		_ = roundTripRaw(t, raw, appendMsg(nil, 1, 0, bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).AppendString("$db", "admin").Build()))
		if p.sess.Conns() == 0 {
			t.Fatal("no connection served")
		}
		endSession(p.sess)
		if n := p.sess.Conns(); n != 0 {
			t.Errorf("%d connections still served after Close", n)
		}
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := raw.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Errorf("raw connection still open: %v", err)
		}
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := coll.InsertOne(qctx, bson.D{{Key: "a", Value: 2}}); err == nil {
			t.Error("insert after Session.Close succeeded")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			var closed int
			for _, err := range p.serveErrors() {
				if isSessionClosed(err) {
					closed++
				}
			}
			if closed >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Serve errors: %v", p.serveErrors())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if evs := eventsOfKind(p.rec, sessionlog.KindDisconnect); len(evs) == 0 || evs[0].Outcome != "terminated" {
			t.Errorf("disconnect events: %+v", evs)
		}
	})

	t.Run("WrongPasswordAtServe", func(t *testing.T) {
		bad := cfg
		bad.Password = "not-the-password"
		p := startProxy(t, bad)
		err := connectTimeout(t, p.uri(), 2*time.Second).Ping(testContext(t), nil)
		if err == nil || !strings.Contains(err.Error(), "wrong username or password") {
			t.Fatalf("ping: %v", err)
		}
		noSecret(t, p.rec, bad.Password)
		var ce *ConnectError
		found := false
		for _, err := range p.serveErrors() {
			if errors.As(err, &ce) && ce.Code == "auth_failed" && !strings.Contains(err.Error(), bad.Password) {
				found = true
			}
		}
		if !found {
			t.Errorf("Serve errors: %v", p.serveErrors())
		}
	})
}

func TestSCRAMSHA1User(t *testing.T) {
	f := testenv.StartFerretDB(t)
	p := startProxy(t, configFor(f, f.SCRAM1User))
	ctx := testContext(t)
	coll := p.connect(t).Database("sha1").Collection("c")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 1 {
		t.Fatalf("count: %d %v", n, err)
	}
	if r := Validate(ctx, configFor(f, f.SCRAM1User)); !r.OK {
		t.Fatalf("Validate: %+v", r)
	}
}

func TestTLS(t *testing.T) {
	f := testenv.StartFerretDB(t, testenv.WithTLS())
	cfg := configFor(f, f.SCRAM256User)
	ctx := testContext(t)
	if r := Validate(ctx, cfg); !r.OK {
		t.Fatalf("Validate with the right CA: %+v", r)
	}
	p := startProxy(t, cfg)
	coll := p.connect(t).Database("tls").Collection("c")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); err != nil {
		t.Fatal(err)
	}

	wrong := cfg
	wrong.TLS.CAPEM = string(testenv.NewCA(t).CertPEM)
	wrong.ConnectTimeout = 3 * time.Second
	r := Validate(ctx, wrong)
	if r.OK || r.Code != "tls" || !strings.Contains(r.Message, "certificate") {
		t.Fatalf("Validate with a wrong CA: %+v", r)
	}
	t.Logf("wrong CA: %s", r.Message)

	insecure := wrong
	insecure.TLS.RejectUnauthorized = false
	if r := Validate(ctx, insecure); !r.OK {
		t.Fatalf("Validate without verification: %+v", r)
	}

	plain := cfg
	plain.TLS.Enabled = false
	plain.ConnectTimeout = 3 * time.Second
	if r := Validate(ctx, plain); r.OK {
		t.Fatalf("Validate without TLS against a TLS server: %+v", r)
	} else {
		t.Logf("no TLS: %s %s", r.Code, r.Message)
	}
}

func TestValidate(t *testing.T) {
	f := testenv.StartFerretDB(t)
	ctx := testContext(t)
	cfg := configFor(f, f.SCRAM256User)
	if r := Validate(ctx, cfg); !r.OK {
		t.Fatalf("Validate: %+v", r)
	}

	bad := cfg
	bad.Password = "wrong-password-123"
	r := Validate(ctx, bad)
	if r.OK || r.Code != "auth_failed" || !strings.Contains(r.Message, "MongoDB refused the login for user "+cfg.User+": wrong username or password") ||
		strings.Contains(r.Message, bad.Password) {
		t.Fatalf("wrong password: %+v", r)
	}

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	down := cfg
	down.URI = fmt.Sprintf("mongodb://127.0.0.1:%d/", port)
	down.ConnectTimeout = 2 * time.Second
	if r := Validate(ctx, down); r.OK || r.Code != "unreachable" {
		t.Fatalf("unreachable: %+v", r)
	} else {
		t.Logf("unreachable: %s", r.Message)
	}

	for _, uri := range []string{"http://x/", "mongodb://u:p@host/", "mongodb://host/?tlsInsecure=true", "mongodb://host/?authSource=x"} {
		inv := cfg
		inv.URI = uri
		if r := Validate(ctx, inv); r.OK || r.Code != "invalid" || strings.Contains(r.Message, cfg.Password) {
			t.Errorf("%s: %+v", uri, r)
		}
	}
}

func eventsOfKind(rec *memRecorder, kind string) []sessionlog.Event {
	var out []sessionlog.Event
	for _, ev := range rec.all() {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func dialRaw(t testing.TB, p *proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func roundTripRaw(t testing.TB, c net.Conn, msg []byte) []byte {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	rep, err := readMessage(c, readLimits{maxSize: DefaultMaxMessageSize})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func replyDocument(t testing.TB, rem []byte) bsoncore.Document {
	t.Helper()
	_, rem, _ = wiremessage.ReadReplyFlags(rem)
	_, rem, _ = wiremessage.ReadReplyCursorID(rem)
	_, rem, _ = wiremessage.ReadReplyStartingFrom(rem)
	_, rem, _ = wiremessage.ReadReplyNumberReturned(rem)
	doc, _, ok := wiremessage.ReadReplyDocument(rem)
	if !ok {
		t.Fatal("malformed OP_REPLY")
	}
	return doc
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}
