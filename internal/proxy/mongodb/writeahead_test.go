package mongodb

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
)

// The start record of each recorded command reaches the recorder before
// the server receives the command (at Begin, the document the command
// inserts is not there yet), masked as the final event is; the final
// event names it. When Begin fails, the command is refused with the
// recorder's words and forwarded to nothing.
func TestWriteAhead(t *testing.T) {
	f := testenv.StartFerretDB(t)
	cfg := configFor(f, f.SCRAM256User)
	direct, err := mongo.Connect(f.ClientOptions(f.SCRAM256User))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Disconnect(context.Background()) })
	present := func(db string, id int) (bool, error) {
		n, err := direct.Database(db).Collection("probe").CountDocuments(testContext(t), bson.D{{Key: "_id", Value: id}})
		return n > 0, err
	}

	t.Run("BeforeForwarding", func(t *testing.T) {
		p := startProxy(t, cfg)
		var mu sync.Mutex
		var seen []string
		p.wa.onBegin = func(ev sessionlog.Event) error {
			if ev.Command != "insert" {
				return nil
			}
			there, err := present("wa", 1)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			if there {
				seen = append(seen, "the document was inserted before its start record")
			} else {
				seen = append(seen, "ok")
			}
			return nil
		}
		ctx := testContext(t)
		db := p.connect(t).Database("wa")
		if _, err := db.Collection("probe").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "v", Value: "one"}}); err != nil {
			t.Fatal(err)
		}
		if err := db.RunCommand(ctx, bson.D{{Key: "createUser", Value: "wa_user"}, {Key: "pwd", Value: "secret-WA-0003"}, {Key: "roles", Value: bson.A{}}}).Err(); err != nil {
			t.Fatal(err)
		}
		_ = db.RunCommand(ctx, bson.D{{Key: "dropUser", Value: "wa_user"}}).Err()
		mu.Lock()
		got := strings.Join(seen, "; ")
		mu.Unlock()
		if got != "ok" {
			t.Fatalf("at the insert's start: %q", got)
		}
		starts := p.wa.allStarts()
		byCommand := map[string]sessionlog.Event{}
		for _, st := range starts {
			byCommand[st.Command] = st
		}
		ins, ok := byCommand["insert"]
		if !ok || ins.Database != "wa" || ins.Collection != "probe" || !strings.Contains(ins.Statement, `"v":"one"`) || ins.Outcome != "" || ins.ID == "" {
			t.Errorf("the insert's start: %+v", ins)
		}
		final := mghCommands(t, p.rec, "insert", 1)[0]
		if final.StartID != ins.ID || final.ID == ins.ID || final.Outcome != "ok" {
			t.Errorf("the insert's final event: %+v; its start %s", final, ins.ID)
		}
		if cu, ok := byCommand["createUser"]; !ok || !strings.Contains(cu.Statement, `"pwd":"***"`) {
			t.Errorf("the createUser start: %+v", cu)
		}
		all, _ := json.Marshal(starts)
		if strings.Contains(string(all), "secret-WA-0003") {
			t.Fatalf("a start record holds a password: %s", all)
		}
		for _, st := range starts {
			if st.Command == "hello" || st.Command == "ping" || st.Command == "isMaster" {
				t.Errorf("the handshake has a start record: %+v", st)
			}
		}
	})

	t.Run("FailingBeginRefuses", func(t *testing.T) {
		p := startProxy(t, cfg)
		p.wa.onBegin = func(ev sessionlog.Event) error {
			if ev.Command == "insert" {
				return &sessionlog.SpoolError{Full: true}
			}
			return nil
		}
		ctx := testContext(t)
		coll := p.connect(t).Database("wa").Collection("probe")
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}})
		if err == nil || !strings.Contains(err.Error(), "the session log cannot be written") || !strings.Contains(err.Error(), "spool is full") {
			t.Fatalf("insert with a failing Begin: %v", err)
		}
		if there, err := present("wa", 2); err != nil || there {
			t.Fatalf("the refused insert ran: %v %v", there, err)
		}
		evs := mghCommands(t, p.rec, "insert", 1)
		if evs[0].Outcome != "error" || evs[0].StartID != "" || !strings.Contains(evs[0].ErrorMsg, "spool is full") {
			t.Errorf("the refusal is recorded as %+v", evs[0])
		}
		// The connection goes on: a find runs.
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Err(); err != nil {
			t.Fatalf("a find after the refusal: %v", err)
		}
	})
}
