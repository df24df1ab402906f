package mongodb

import (
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/airlockpam/airlock/internal/proxy/common"
)

func TestStatement(t *testing.T) {
	lsid := bsoncore.NewDocumentBuilder().AppendInt32("id", 1).Build()
	doc := func(k, v string) bsoncore.Document { return bsoncore.NewDocumentBuilder().AppendString(k, v).Build() }
	cases := []struct {
		name   string
		body   bsoncore.Document
		redact bool
		want   string
	}{
		{"bookkeeping removed",
			bsoncore.NewDocumentBuilder().AppendString("find", "users").AppendDocument("filter", doc("a", "b")).
				AppendDocument("lsid", lsid).AppendDocument("$clusterTime", lsid).AppendString("$db", "app").
				AppendInt64("txnNumber", 3).AppendDocument("$readPreference", doc("mode", "primary")).Build(),
			false, `{"find":"users","filter":{"a":"b"}}`},
		{"pwd masked",
			bsoncore.NewDocumentBuilder().AppendString("createUser", "x").AppendString("pwd", "s3cret").AppendString("$db", "admin").Build(),
			false, `{"createUser":"x","pwd":"***"}`},
		{"insert redacted",
			bsoncore.NewDocumentBuilder().AppendString("insert", "c").
				AppendArray("documents", bsoncore.NewArrayBuilder().AppendDocument(doc("card", "4111")).Build()).AppendString("$db", "d").Build(),
			true, `{"insert":"c","documents":[{"card":"***"}]}`},
		{"update u redacted, q kept",
			bsoncore.NewDocumentBuilder().AppendString("update", "c").
				AppendArray("updates", bsoncore.NewArrayBuilder().AppendDocument(bsoncore.NewDocumentBuilder().
					AppendDocument("q", doc("id", "7")).
					AppendDocument("u", bsoncore.NewDocumentBuilder().AppendDocument("$set", doc("card", "4111")).Build()).
					AppendBoolean("upsert", true).Build()).Build()).AppendString("$db", "d").Build(),
			true, `{"update":"c","updates":[{"q":{"id":"7"},"u":{"$set":{"card":"***"}},"upsert":true}]}`},
		{"every delete entry",
			bsoncore.NewDocumentBuilder().AppendString("delete", "c").
				AppendArray("deletes", bsoncore.NewArrayBuilder().
					AppendDocument(bsoncore.NewDocumentBuilder().AppendDocument("q", doc("id", "7")).AppendInt32("limit", 1).Build()).
					AppendDocument(bsoncore.NewDocumentBuilder().AppendDocument("q", bsoncore.NewDocumentBuilder().Build()).AppendInt32("limit", 0).Build()).
					Build()).AppendString("$db", "d").Build(),
			true, `{"delete":"c","deletes":[{"q":{"id":"7"},"limit":1},{"q":{},"limit":0}]}`},
		{"bulkWrite redacted, filters kept",
			bsoncore.NewDocumentBuilder().AppendInt32("bulkWrite", 1).
				AppendArray("ops", bsoncore.NewArrayBuilder().
					AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("insert", 0).AppendDocument("document", doc("card", "4111")).Build()).
					AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("update", 0).AppendDocument("filter", doc("id", "7")).
						AppendDocument("updateMods", bsoncore.NewDocumentBuilder().AppendDocument("$set", doc("card", "4111")).Build()).Build()).
					AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("delete", 0).AppendDocument("filter", doc("id", "8")).Build()).
					Build()).AppendString("$db", "admin").Build(),
			true, `{"bulkWrite":1,"ops":[{"insert":0,"document":{"card":"***"}},{"update":0,"filter":{"id":"7"},"updateMods":{"$set":{"card":"***"}}},{"delete":0,"filter":{"id":"8"}}]}`},
		{"not redacted without the option",
			bsoncore.NewDocumentBuilder().AppendString("insert", "c").
				AppendArray("documents", bsoncore.NewArrayBuilder().AppendDocument(doc("card", "4111")).Build()).AppendString("$db", "d").Build(),
			false, `{"insert":"c","documents":[{"card":"4111"}]}`},
	}
	for _, tc := range cases {
		req := &request{body: tc.body}
		req.command = func() string { e, _ := tc.body.IndexErr(0); return e.Key() }()
		if got := statement(req, tc.redact, 0).String(); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		st := common.NewStatement(0)
		statementStream(req, tc.redact, st)
		if got := st.String(); got != tc.want {
			t.Errorf("%s, rendered in pieces:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}

	// A document sequence is recorded as its field, every document of it.
	req := &request{command: "insert", body: bsoncore.NewDocumentBuilder().AppendString("insert", "c").AppendString("$db", "d").Build()}
	big := bsoncore.NewDocumentBuilder().AppendString("pad", strings.Repeat("x", 1000)).Build()
	seq := docSequence{identifier: "documents"}
	for range 100 {
		seq.docs = append(seq.docs, big)
	}
	req.seqs = []docSequence{seq}
	st := statement(req, false, 0)
	got := st.String()
	if !strings.HasPrefix(got, `{"insert":"c","documents":[{"pad":"xxx`) || strings.Count(got, `{"pad":`) != 100 || st.Over() {
		t.Errorf("sequence statement (%d bytes): %.200s … %s", len(got), got, got[max(0, len(got)-100):])
	}
	// Over the limit, it is its ends and a hash.
	st = statement(req, false, 50_000)
	if got := st.String(); !st.Over() || !strings.Contains(got, "bytes, sha256 ") || len(got) > 2*common.StatementEndsBytes+200 {
		t.Errorf("over-limit statement (%d bytes): %.200s", len(got), got)
	}
}

func TestResult(t *testing.T) {
	var res result
	res.add(bsoncore.NewDocumentBuilder().AppendDocument("cursor", bsoncore.NewDocumentBuilder().
		AppendArray("firstBatch", bsoncore.NewArrayBuilder().AppendInt32(1).AppendInt32(2).Build()).Build()).AppendDouble("ok", 1).Build())
	res.add(bsoncore.NewDocumentBuilder().AppendDocument("cursor", bsoncore.NewDocumentBuilder().
		AppendArray("nextBatch", bsoncore.NewArrayBuilder().AppendInt32(3).Build()).Build()).AppendDouble("ok", 1).Build())
	if res.outcome != "ok" || res.rows != 3 {
		t.Errorf("exhaust result: %+v", res)
	}
	res = result{}
	res.add(bsoncore.NewDocumentBuilder().AppendDouble("ok", 0).AppendInt32("code", 13).AppendString("errmsg", "not authorized").Build())
	if res.outcome != "error" || res.code != "13" || res.msg != "not authorized" {
		t.Errorf("error result: %+v", res)
	}
}
