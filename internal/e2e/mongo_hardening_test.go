package e2e_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestMongoDBHardeningEndToEnd runs issue 13's MongoDB attacks through the
// real binaries (server, gateway, db access): a delete whose second entry
// empties the collection is recorded whole; a command with two $db is
// refused and runs nowhere; fifty connections each declaring a 48 MB
// message and stalling do not move the gateway's heap by more than a few
// MB, while a normal client keeps working.
func TestMongoDBHardeningEndToEnd(t *testing.T) {
	f := testenv.StartFerretDB(t)
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	var gw struct{ EnrollmentToken string }
	admin.JSON(&gw, "", "gateways", "create", "dc1")
	debug := e2e.FreeAddr(t)
	e2e.Start(t, nil, "gateway", "--domain", srv.URL, "--token", gw.EnrollmentToken, "--data-dir", t.TempDir(), "--debug-addr", debug)
	project := strings.TrimSpace(admin.Must("", "projects", "create", "mongo-hardening"))
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(admin.Must("", "gateways", "list"), "online") {
		if time.Now().After(deadline) {
			t.Fatal("gateway not online")
		}
		time.Sleep(200 * time.Millisecond)
	}
	admin.Must("", "resources", "create", "mongodb", "--project-id", project, "--name", "docs", "--gateway", "dc1",
		"--connection-string", fmt.Sprintf("mongodb://127.0.0.1:%d/", f.Port), "--ssl-enabled=false")
	admin.Must(f.SCRAM256User.Password, "accounts", "create", "--project-id", project, "--resource", "docs", "--name", "app",
		"--username", f.SCRAM256User.User, "--password-stdin")
	p := admin.Start("db", "access", "--project-id", project, "--resource", "docs", "--account", "app")
	uri := p.WaitLine(t, mongoURLLine, 60*time.Second)
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	victims := client.Database("hard").Collection("victims")
	if _, err := victims.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}}); err != nil {
		t.Fatal(err)
	}

	// A delete of two entries in a document sequence: a large one, then
	// one that empties the collection.
	conn := mghDial(t, u.Host)
	body := bsoncore.NewDocumentBuilder().AppendString("delete", "victims").AppendString("$db", "hard").Build()
	rep := mghRoundTrip(t, conn, mghMsg(21, body, "deletes",
		mghDeleteEntry(bsoncore.NewDocumentBuilder().AppendString("pad", strings.Repeat("p", 20_000)).Build(), 1),
		mghDeleteEntry(bsoncore.NewDocumentBuilder().Build(), 0)))
	if n, ok := rep.Lookup("n").AsInt64OK(); !ok || n != 2 {
		t.Fatalf("delete: %s", rep)
	}

	// A command with two $db.
	dup := bsoncore.NewDocumentBuilder().AppendString("insert", "dups").
		AppendArray("documents", bsoncore.NewArrayBuilder().AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()).Build()).
		AppendString("$db", "logged").AppendString("$db", "executed").Build()
	rep = mghRoundTrip(t, conn, mghMsg(22, dup, ""))
	if code, _ := rep.Lookup("code").AsInt64OK(); code != 2 || !strings.Contains(rep.Lookup("errmsg").StringValue(), `"$db" more than once`) {
		t.Errorf("two $db answered with %s", rep)
	}
	for _, db := range []string{"logged", "executed"} {
		if n, err := client.Database(db).Collection("dups").CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
			t.Errorf("%s.dups holds %d documents (%v): the refused command ran", db, n, err)
		}
	}

	// Both are in the session log as they were sent.
	deadline = time.Now().Add(30 * time.Second)
	for {
		evs := mghLogs(t, admin, id)
		var del, ins *mghEvent
		for i := range evs {
			switch evs[i].Command {
			case "delete":
				del = &evs[i]
			case "insert":
				if evs[i].Outcome == "error" {
					ins = &evs[i]
				}
			}
		}
		if del != nil && ins != nil {
			if !strings.HasSuffix(del.Statement, `,{"q":{},"limit":0}]}`) || del.Rows != 2 {
				t.Errorf("the delete's emptying entry is not in the log: rows %d, statement ends %s", del.Rows, del.Statement[max(0, len(del.Statement)-100):])
			}
			if ins.ErrorCode != "2" || !strings.Contains(ins.ErrorMessage, `"$db"`) {
				t.Errorf("the refusal of two $db is logged as %+v", *ins)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the session log lacks the delete or the refusal: %d events", len(evs))
			break
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Fifty connections declare 48 MB each, send 1 KiB and stall.
	before := mghGatewayHeap(t, debug)
	var most uint64
	for range 50 {
		c := mghDial(t, u.Host)
		hdr := make([]byte, 16+1024)
		binary.LittleEndian.PutUint32(hdr[0:], 48_000_000)
		binary.LittleEndian.PutUint32(hdr[4:], 99)
		binary.LittleEndian.PutUint32(hdr[12:], uint32(wiremessage.OpMsg))
		if _, err := c.Write(hdr); err != nil {
			t.Fatal(err)
		}
	}
	// A normal client keeps working meanwhile; the gateway's heap is
	// sampled as it does.
	for i := range 20 {
		if _, err := client.Database("hard").Collection("normal").InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatalf("a normal client failed while others stalled: %v", err)
		}
		if i%5 == 4 {
			most = max(most, mghGatewayHeap(t, debug))
		}
	}
	if grew := int64(most) - int64(before); grew > 8<<20 {
		t.Errorf("the gateway's heap grew by %d bytes for 50 stalled 48 MB declarations", grew)
	} else {
		t.Logf("the gateway's heap grew by %d bytes for 50 stalled 48 MB declarations", grew)
	}
}

// mghEvent is a session-log event as `sessions logs --output json` prints
// it.
type mghEvent struct {
	Kind         string `json:"kind"`
	Command      string `json:"command"`
	Statement    string `json:"statement"`
	Outcome      string `json:"outcome"`
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
	Rows         int64  `json:"rows"`
}

// mghLogs reads a session's log as u.
func mghLogs(t *testing.T, u *e2e.User, id string) []mghEvent {
	t.Helper()
	var evs []mghEvent
	for _, line := range strings.Split(strings.TrimSpace(u.Must("", "sessions", "logs", id, "--output", "json")), "\n") {
		if line == "" {
			continue
		}
		var e mghEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %.200q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// mghGatewayHeap returns the gateway's live heap, after a collection, from
// its debug listener.
func mghGatewayHeap(t *testing.T, debug string) uint64 {
	t.Helper()
	get := func(path string) []byte {
		resp, err := http.Get("http://" + debug + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	get("/debug/pprof/heap?gc=1") // collects first
	var vars struct {
		Memstats struct{ HeapAlloc uint64 } `json:"memstats"`
	}
	if err := json.Unmarshal(get("/debug/vars"), &vars); err != nil {
		t.Fatal(err)
	}
	return vars.Memstats.HeapAlloc
}

func mghDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// mghMsg returns an OP_MSG with body and, if identifier is not empty, one
// document sequence of docs.
func mghMsg(requestID int32, body bsoncore.Document, identifier string, docs ...bsoncore.Document) []byte {
	idx, dst := wiremessage.AppendHeaderStart(nil, requestID, 0, wiremessage.OpMsg)
	dst = wiremessage.AppendMsgFlags(dst, 0)
	dst = wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
	dst = append(dst, body...)
	if identifier != "" {
		dst = wiremessage.AppendMsgSectionType(dst, wiremessage.DocumentSequence)
		var sidx int32
		sidx, dst = bsoncore.ReserveLength(dst)
		dst = append(dst, identifier...)
		dst = append(dst, 0)
		for _, d := range docs {
			dst = append(dst, d...)
		}
		dst = bsoncore.UpdateLength(dst, sidx, int32(len(dst[sidx:])))
	}
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
}

func mghDeleteEntry(q bsoncore.Document, limit int32) bsoncore.Document {
	return bsoncore.NewDocumentBuilder().AppendDocument("q", q).AppendInt32("limit", limit).Build()
}

// mghRoundTrip sends an OP_MSG and returns the body of its OP_MSG reply.
func mghRoundTrip(t *testing.T, c net.Conn, msg []byte) bsoncore.Document {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	var hdr [16]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	n := int(binary.LittleEndian.Uint32(hdr[:4]))
	if n < 21 || n > 48_000_000 {
		t.Fatalf("reply of %d bytes", n)
	}
	rest := make([]byte, n-16)
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatal(err)
	}
	// Flags (4 bytes), section kind 0, the body.
	doc, _, ok := bsoncore.ReadDocument(rest[5:])
	if !ok {
		t.Fatalf("malformed reply")
	}
	return doc
}
