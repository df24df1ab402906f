package mongodb

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestHardening runs the attacks of issue 13 on the MongoDB engine against
// one FerretDB: each must fail to escape the session log or to exhaust the
// gateway's memory.
func TestHardening(t *testing.T) {
	f := testenv.StartFerretDB(t)
	cfg := configFor(f, f.SCRAM256User)

	// A delete whose first entry is large and whose second empties the
	// collection was recorded as "[1 more documents]": every entry is
	// recorded now.
	t.Run("EveryBatchEntryRecorded", func(t *testing.T) {
		p := startProxy(t, cfg)
		ctx := testContext(t)
		coll := p.connect(t).Database("batch").Collection("victims")
		docs := []any{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}, bson.D{{Key: "_id", Value: 3}}}
		if _, err := coll.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		// The entries come in an OP_MSG document sequence, as drivers
		// send them.
		conn := dialRaw(t, p)
		body := bsoncore.NewDocumentBuilder().AppendString("delete", "victims").AppendString("$db", "batch").Build()
		doc := replyBody(t, roundTripRaw(t, conn, mghAppendMsgSeq(5, body, "deletes",
			mghDelete(bsoncore.NewDocumentBuilder().AppendString("pad", strings.Repeat("p", 20_000)).Build(), 1),
			mghDelete(bsoncore.NewDocumentBuilder().Build(), 0))))
		if !replyOK(doc) || rowsOf(doc) != 3 {
			t.Fatalf("delete: %s", doc)
		}
		evs := mghCommands(t, p.rec, "delete", 1)
		st := evs[0].Statement
		if !strings.Contains(st, `{"q":{"pad":"ppp`) || !strings.HasSuffix(st, `,{"q":{},"limit":0}]}`) {
			t.Errorf("the delete's entries are not all recorded: %.200s … %s", st, st[max(0, len(st)-200):])
		}
		if strings.Contains(st, "more documents") || evs[0].Rows != 3 {
			t.Errorf("delete event: rows %d, statement ends %s", evs[0].Rows, st[max(0, len(st)-200):])
		}
	})

	// With the project's redaction on, written values are masked in
	// every entry, from the body and from document sequences alike,
	// while filters and update operators stay visible.
	t.Run("RedactedEntries", func(t *testing.T) {
		p := startProxy(t, cfg, common.WithRedactValues(true))
		ctx := testContext(t)
		coll := p.connect(t).Database("batch").Collection("cards")
		var docs []any
		for i := range 50 {
			docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "card", Value: "4111-1111-1111-" + string(rune('A'+i%26))}})
		}
		if _, err := coll.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.UpdateMany(ctx, bson.D{{Key: "owner", Value: "ada"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "card", Value: "5500-0000"}}}}); err != nil {
			t.Fatal(err)
		}
		// The same insert with its documents in the body, not in a
		// sequence, as an OP_MSG built by hand.
		arr := bsoncore.NewArrayBuilder()
		for i := range 50 {
			arr.AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("_id", int32(100+i)).AppendString("card", "4111-2222").Build())
		}
		body := bsoncore.NewDocumentBuilder().AppendString("insert", "cards").AppendArray("documents", arr.Build()).AppendString("$db", "batch").Build()
		conn := dialRaw(t, p)
		if doc := replyBody(t, roundTripRaw(t, conn, appendMsg(nil, 7, 0, body))); !replyOK(doc) {
			t.Fatalf("raw insert: %s", doc)
		}
		ins := mghCommands(t, p.rec, "insert", 2)
		for _, ev := range ins {
			if n := strings.Count(ev.Statement, `"card":"***"`); n != 50 {
				t.Errorf("insert statement masks %d of 50 cards: %.300s", n, ev.Statement)
			}
		}
		up := mghCommands(t, p.rec, "update", 1)
		if !strings.Contains(up[0].Statement, `"q":{"owner":"ada"},"u":{"$set":{"card":"***"}}`) {
			t.Errorf("update events: %+v", up)
		}
		noSecret(t, p.rec, "4111", "5500")
	})

	// A 1.1 MB padded delete that empties the collection: refused by
	// default, nothing deleted; recorded by its ends (the emptying entry
	// included) under OversizeRecordEnds.
	t.Run("PaddedDelete", func(t *testing.T) {
		padded := func(t *testing.T, p *proxy) (*mongo.BulkWriteResult, error) {
			coll := p.connect(t).Database("batch").Collection("padded")
			if _, err := coll.InsertMany(testContext(t), []any{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}}); err != nil {
				t.Fatal(err)
			}
			// Two deleteMany in one bulk write are one delete command.
			return coll.BulkWrite(testContext(t), []mongo.WriteModel{
				mongo.NewDeleteManyModel().SetFilter(bson.D{{Key: "pad", Value: strings.Repeat("p", 1_100_000)}}),
				mongo.NewDeleteManyModel().SetFilter(bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: 0}}}}),
			})
		}
		count := func(t *testing.T, p *proxy) int64 {
			n, err := p.connect(t).Database("batch").Collection("padded").CountDocuments(testContext(t), bson.D{})
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		t.Run("Refused", func(t *testing.T) {
			p := startProxy(t, cfg)
			_, err := padded(t, p)
			if err == nil || !strings.Contains(err.Error(), "over this project's recording limit") {
				t.Fatalf("padded delete: %v", err)
			}
			if n := count(t, p); n != 2 {
				t.Errorf("%d documents left: the refused delete ran", n)
			}
			evs := mghCommands(t, p.rec, "delete", 1)
			if evs[0].Outcome != "error" || evs[0].ErrorCode != "10334" || !strings.Contains(evs[0].Statement, `"$gte":`) {
				t.Errorf("refusal not recorded with the statement's ends: %d events", len(evs))
			}
			_ = p.connect(t).Database("batch").Collection("padded").Drop(testContext(t))
		})
		t.Run("RecordEnds", func(t *testing.T) {
			p := startProxy(t, cfg, common.WithStatementLimit(0, tunnel.OversizeRecordEnds))
			if _, err := padded(t, p); err != nil {
				t.Fatal(err)
			}
			evs := mghCommands(t, p.rec, "delete", 1)
			if evs[0].Rows != 2 {
				t.Fatalf("delete events: %d", len(evs))
			}
			st := evs[0].Statement
			if !strings.Contains(st, "bytes, sha256 ") || !strings.Contains(st, `"$gte":`) || len(st) > 2*common.StatementEndsBytes+200 {
				t.Errorf("statement of %d bytes does not show its ends: %s", len(st), st[max(0, len(st)-300):])
			}
			_ = p.connect(t).Database("batch").Collection("padded").Drop(testContext(t))
		})
		t.Run("LimitChangedWhileLive", func(t *testing.T) {
			p := startProxy(t, cfg, common.WithStatementLimit(0, tunnel.OversizeRecordEnds))
			p.sess.SetStatementLimit(0, tunnel.OversizeRefuse)
			if _, err := padded(t, p); err == nil {
				t.Fatal("the padded delete ran after the project's policy became refuse")
			}
			_ = p.connect(t).Database("batch").Collection("padded").Drop(testContext(t))
		})
	})

	// A command with two $db was logged as one database and run in the
	// other: it is refused now, and nothing runs.
	t.Run("DuplicateDB", func(t *testing.T) {
		p := startProxy(t, cfg)
		body := bsoncore.NewDocumentBuilder().AppendString("insert", "dups").
			AppendArray("documents", bsoncore.NewArrayBuilder().AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()).Build()).
			AppendString("$db", "logged").AppendString("$db", "executed").Build()
		conn := dialRaw(t, p)
		doc := replyBody(t, roundTripRaw(t, conn, appendMsg(nil, 9, 0, body)))
		code, msg := errorOf(doc)
		if replyOK(doc) || code != "2" || !strings.Contains(msg, `field "$db" more than once`) {
			t.Fatalf("duplicate $db answered with %s", doc)
		}
		// The connection stays usable.
		ping := bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).AppendString("$db", "admin").Build()
		if doc := replyBody(t, roundTripRaw(t, conn, appendMsg(nil, 10, 0, ping))); !replyOK(doc) {
			t.Fatalf("ping after the refusal: %s", doc)
		}
		c := p.connect(t)
		for _, db := range []string{"logged", "executed"} {
			if n, err := c.Database(db).Collection("dups").CountDocuments(testContext(t), bson.D{}); err != nil || n != 0 {
				t.Errorf("%s.dups holds %d documents (%v): the refused command ran", db, n, err)
			}
		}
		evs := mghCommands(t, p.rec, "insert", 1)
		if evs[0].Outcome != "error" || evs[0].ErrorCode != "2" || !strings.Contains(evs[0].ErrorMsg, `"$db"`) {
			t.Errorf("refusal events: %+v", evs)
		}
	})

	// While the recorder cannot persist, commands are refused and
	// nothing is forwarded; when it can again, they run.
	t.Run("FailClosed", func(t *testing.T) {
		rec := &mghSickRecorder{}
		p := startProxy(t, cfg, common.WithRecorder(rec))
		ctx := testContext(t)
		coll := p.connect(t).Database("closed").Collection("c")
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
			t.Fatal(err)
		}
		rec.fail(errors.New("the spool is full (2 MiB cap reached)"))
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}})
		var ce mongo.CommandError
		if !errors.As(err, &ce) || !strings.Contains(ce.Message, "the session log cannot be written (the spool is full (2 MiB cap reached))") {
			t.Fatalf("insert while the log cannot be written: %v", err)
		}
		if err := p.connect(t).Ping(ctx, nil); err == nil {
			t.Error("a ping ran while the log cannot be written")
		}
		rec.fail(nil)
		if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 1 {
			t.Errorf("count after recovery: %d %v (the refused insert must not have run)", n, err)
		}
	})

	// Fifty connections each declare a 48 MB message, send its first
	// kilobyte and stall: the gateway's heap moves by a few MB, not
	// 2.4 GB, and a normal client keeps working meanwhile.
	t.Run("StalledDeclarations", func(t *testing.T) {
		budget := common.NewBudget(0)
		p := startProxyWith(t, cfg, []Option{WithMemoryBudget(budget)})
		ctx := testContext(t)
		normal := p.connect(t).Database("mem").Collection("c")
		if _, err := normal.InsertOne(ctx, bson.D{{Key: "_id", Value: 0}}); err != nil {
			t.Fatal(err)
		}
		before := mghHeap()
		const conns = 50
		var held []net.Conn
		for range conns {
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if _, err := c.Write(mghDeclaration(DefaultMaxMessageSize, 1024)); err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		}
		// Every connection has read its header and first bytes.
		mghWait(t, func() bool { return budget.InUse() == conns*firstChunk })
		after := mghHeap()
		if grew := int64(after) - int64(before); grew > 8<<20 {
			t.Errorf("the heap grew by %d bytes for %d stalled 48 MB declarations", grew, conns)
		} else {
			t.Logf("the heap grew by %d bytes for %d stalled 48 MB declarations", grew, conns)
		}
		for i := 1; i <= 20; i++ {
			if _, err := normal.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatalf("a normal client failed while others stalled: %v", err)
			}
		}
		if n, err := normal.CountDocuments(ctx, bson.D{}); err != nil || n != 21 {
			t.Fatalf("count: %d %v", n, err)
		}
		for _, c := range held {
			_ = c.Close()
		}
		mghWait(t, func() bool { return budget.InUse() == 0 })
	})

	// A message that stalls half-way is answered with NetworkTimeout and
	// its memory freed.
	t.Run("StallTimeout", func(t *testing.T) {
		budget := common.NewBudget(0)
		p := startProxyWith(t, cfg, []Option{WithMemoryBudget(budget), WithMessageTimeout(300 * time.Millisecond)})
		conn := dialRaw(t, p)
		if _, err := conn.Write(mghDeclaration(100_000, 10)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
		rep, err := readMessage(conn, readLimits{maxSize: DefaultMaxMessageSize})
		if err != nil {
			t.Fatal(err)
		}
		doc := replyBody(t, rep)
		if code, msg := errorOf(doc); code != "89" || !strings.Contains(msg, "did not arrive within 300ms") {
			t.Errorf("stalled message answered with %s", doc)
		}
		mghWait(t, func() bool { return budget.InUse() == 0 })
	})

	// Messages that the shared budget cannot hold are refused with
	// ExceededMemoryLimit; small ones keep working.
	t.Run("BudgetExceeded", func(t *testing.T) {
		budget := common.NewBudget(1 << 20)
		p := startProxyWith(t, cfg, []Option{WithMemoryBudget(budget)})
		big := bsoncore.NewDocumentBuilder().AppendString("insert", "c").
			AppendArray("documents", bsoncore.NewArrayBuilder().AppendDocument(bsoncore.NewDocumentBuilder().
				AppendString("pad", strings.Repeat("x", 2<<20)).Build()).Build()).
			AppendString("$db", "mem").Build()
		conn := dialRaw(t, p)
		_ = conn.SetDeadline(time.Now().Add(testTimeout))
		go func() { _, _ = conn.Write(appendMsg(nil, 11, 0, big)) }()
		rep, err := readMessage(conn, readLimits{maxSize: DefaultMaxMessageSize})
		if err != nil {
			t.Fatal(err)
		}
		doc := replyBody(t, rep)
		if code, msg := errorOf(doc); code != "146" || !strings.Contains(msg, "memory for client messages") {
			t.Errorf("over-budget message answered with %s", doc)
		}
		if err := p.connect(t).Ping(testContext(t), nil); err != nil {
			t.Errorf("a small command failed: %v", err)
		}
		mghWait(t, func() bool { return budget.InUse() == 0 })
		if budget.Peak() > budget.Limit() {
			t.Errorf("peak %d over the limit %d", budget.Peak(), budget.Limit())
		}
	})

	// The engine's dialer opens every upstream connection: the gateway's
	// target policy cannot be bypassed.
	t.Run("Dialer", func(t *testing.T) {
		var dials atomic.Int32
		allow := func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		p := startProxyWith(t, cfg, []Option{WithDialer(allow)})
		if err := p.connect(t).Ping(testContext(t), nil); err != nil {
			t.Fatal(err)
		}
		if dials.Load() == 0 {
			t.Error("the upstream connection did not go through the engine's dialer")
		}
		deny := func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("the gateway's target policy does not allow " + addr)}
		}
		eng, err := NewEngine(WithDialer(deny))
		if err != nil {
			t.Fatal(err)
		}
		target := tunnel.Target{Kind: tunnel.KindMongoDB, URI: cfg.URI, Database: cfg.AuthDatabase, Username: cfg.User, Password: cfg.Password}
		ctx, cancel := context.WithTimeout(testContext(t), 3*time.Second)
		defer cancel()
		res := eng.Validate(ctx, target)
		if res.OK || res.Code != tunnel.CodeUnreachable || !strings.Contains(res.Message, "target policy") || strings.Contains(res.Message, cfg.Password) {
			t.Errorf("Validate through a denying dialer: %+v", res)
		}
		fast := cfg
		fast.ConnectTimeout = time.Second
		denied := startProxyWith(t, fast, []Option{WithDialer(deny)})
		ping := bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).AppendString("$db", "admin").Build()
		doc := replyBody(t, roundTripRaw(t, dialRaw(t, denied), appendMsg(nil, 12, 0, ping)))
		if code, msg := errorOf(doc); replyOK(doc) || code != "6" || !strings.Contains(msg, "target policy") {
			t.Errorf("a client past a denying dialer was answered %s", doc)
		}
	})
}

// mghSickRecorder is a recorder that can be made to report that it cannot
// persist (sessionlog.HealthReporter).
type mghSickRecorder struct {
	memRecorder
	err atomic.Pointer[error]
}

func (r *mghSickRecorder) fail(err error) {
	if err == nil {
		r.err.Store(nil)
		return
	}
	r.err.Store(&err)
}

func (r *mghSickRecorder) Err() error {
	if e := r.err.Load(); e != nil {
		return *e
	}
	return nil
}

var _ sessionlog.HealthReporter = (*mghSickRecorder)(nil)

// mghDeclaration returns the header of an OP_MSG that declares length
// bytes, and the first sent bytes of its body.
func mghDeclaration(length, sent int) []byte {
	b := make([]byte, headerLen+sent)
	binary.LittleEndian.PutUint32(b[0:], uint32(length))
	binary.LittleEndian.PutUint32(b[4:], 77)
	binary.LittleEndian.PutUint32(b[12:], uint32(wiremessage.OpMsg))
	return b
}

// mghHeap returns the bytes of live heap objects after a collection.
func mghHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// mghWait waits for cond, up to testTimeout.
func mghWait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within the test timeout")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replyBody returns the body of an OP_MSG reply.
func replyBody(t testing.TB, msg []byte) bsoncore.Document {
	t.Helper()
	rp, err := parseReply(msg)
	if err != nil {
		t.Fatal(err)
	}
	return rp.body
}

// mghAppendMsgSeq returns an OP_MSG with body and one document sequence.
func mghAppendMsgSeq(requestID int32, body bsoncore.Document, identifier string, docs ...bsoncore.Document) []byte {
	idx, dst := wiremessage.AppendHeaderStart(nil, requestID, 0, wiremessage.OpMsg)
	dst = wiremessage.AppendMsgFlags(dst, 0)
	dst = wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
	dst = append(dst, body...)
	dst = wiremessage.AppendMsgSectionType(dst, wiremessage.DocumentSequence)
	sidx, dst := bsoncore.ReserveLength(dst)
	dst = append(dst, identifier...)
	dst = append(dst, 0)
	for _, d := range docs {
		dst = append(dst, d...)
	}
	dst = bsoncore.UpdateLength(dst, sidx, int32(len(dst[sidx:])))
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
}

// mghDelete returns a delete statement {q, limit}.
func mghDelete(q bsoncore.Document, limit int32) bsoncore.Document {
	return bsoncore.NewDocumentBuilder().AppendDocument("q", q).AppendInt32("limit", limit).Build()
}

// TestDuplicateKeys checks which command documents parseRequest marks as
// having a field twice.
func TestDuplicateKeys(t *testing.T) {
	doc := func(keys ...string) bsoncore.Document {
		b := bsoncore.NewDocumentBuilder()
		for _, k := range keys {
			b.AppendString(k, "v")
		}
		return b.Build()
	}
	item := bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()
	cases := []struct {
		name string
		msg  []byte
		dup  string
	}{
		{"none", appendMsg(nil, 1, 0, doc("insert", "ordered", "$db")), ""},
		{"two $db", appendMsg(nil, 1, 0, doc("insert", "$db", "$db")), "$db"},
		{"two of a field", appendMsg(nil, 1, 0, doc("delete", "deletes", "deletes", "$db")), "deletes"},
		{"body and sequence", mghAppendMsgSeq(1, doc("insert", "documents", "$db"), "documents", item), "documents"},
		{"sequence alone", mghAppendMsgSeq(1, doc("insert", "$db"), "documents", item), ""},
		{"OP_QUERY", appendOpQuery(1, "admin.$cmd", doc("isMaster", "client", "client")), "client"},
		{"OP_QUERY wrapped", appendOpQuery(1, "admin.$cmd", bsoncore.NewDocumentBuilder().
			AppendDocument("$query", doc("find", "filter", "filter")).AppendDocument("$readPreference", doc("mode")).Build()), "filter"},
		{"OP_QUERY wrapper", appendOpQuery(1, "admin.$cmd", bsoncore.NewDocumentBuilder().
			AppendDocument("$query", doc("find")).AppendDocument("$readPreference", doc("mode")).AppendDocument("$readPreference", doc("mode")).Build()), "$readPreference"},
	}
	for _, tc := range cases {
		req, err := parseRequest(tc.msg)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if req.dup != tc.dup {
			t.Errorf("%s: dup %q, want %q", tc.name, req.dup, tc.dup)
		}
	}
}

// mghCommands waits until rec holds n command events named name (an event
// is recorded once its reply is on its way to the client, so a test that
// reads the events right after its last command must wait) and returns
// them; more than n fails the test.
func mghCommands(t *testing.T, rec *memRecorder, name string, n int) []sessionlog.Event {
	t.Helper()
	mghWait(t, func() bool { return len(rec.commands(name)) >= n })
	evs := rec.commands(name)
	if len(evs) != n {
		t.Fatalf("%d %s events, want %d", len(evs), name, n)
	}
	return evs
}
