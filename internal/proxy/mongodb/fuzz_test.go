//lint:file-ignore SA1019 the tests send OP_QUERY, as old clients do.

package mongodb

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"

	"github.com/airlockpam/airlock/internal/proxy/common"
)

// Bounds under fuzzing: a small message size limit, so that a length the
// fuzzer makes up cannot make a test allocate much, and a smaller shared
// memory budget, so that messages between the two are refused for memory.
const (
	fuzzMaxSize = 1 << 20
	fuzzBudget  = 64 << 10
	// fuzzSlack is what reading a message may allocate besides its
	// buffer: errors and their messages.
	fuzzSlack = 4 << 10
)

// FuzzReadMessage feeds bytes off the network to the message reader, the
// request parser and the session log's statement builder: none may panic,
// accept a message that the parser then describes inconsistently, or
// allocate beyond the memory budget. The reader's allocations are
// measured (runtime.MemStats.TotalAlloc) and must stay within twice the
// budget (a buffer grows by doubling, each size taken from the budget)
// whatever length a header declares; the budget must be whole again once
// each message is released.
func FuzzReadMessage(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		budget := common.NewBudget(fuzzBudget)
		r := bytes.NewReader(data)
		for range 4 {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			msg, err := readMessage(r, readLimits{maxSize: fuzzMaxSize, budget: budget})
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 2*fuzzBudget+fuzzSlack {
				t.Fatalf("reading a message allocated %d bytes, over twice the budget of %d", grew, fuzzBudget)
			}
			if budget.Peak() > budget.Limit() {
				t.Fatalf("the budget's peak %d is over its limit %d", budget.Peak(), budget.Limit())
			}
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				if budget.InUse() != 0 {
					t.Fatalf("a failed read holds %d bytes of the budget", budget.InUse())
				}
				return
			}
			if len(msg) < headerLen || len(msg) > fuzzMaxSize || len(msg) > fuzzBudget {
				t.Fatalf("message of %d bytes", len(msg))
			}
			if budget.InUse() != int64(cap(msg)) {
				t.Fatalf("a message of capacity %d holds %d bytes of the budget", cap(msg), budget.InUse())
			}
			req, err := parseRequest(msg)
			if err == nil {
				if req.command == "" || req.database == "" {
					t.Fatalf("accepted a request without command or database: %+v", req)
				}
				for _, redact := range []bool{false, true} {
					// Small commands are rendered in one piece, large
					// ones in pieces: the text must be the same.
					if js, err := statementWhole(req, redact); err == nil {
						st := common.NewStatement(1 << 30)
						statementStream(req, redact, st)
						if st.String() != string(js) {
							t.Fatalf("the statement in pieces differs from the whole:\n%s\n%s", st.String(), js)
						}
					}
				}
				st := statement(req, true, 256)
				if s := st.String(); st.Over() && len(s) > 256+200 {
					t.Fatalf("an over-limit statement of %d bytes", len(s))
				}
				_ = collectionOf(req)
				if isHello(req.command) {
					_ = rewriteHelloRequest(req)
				}
			} else if pe := (*ProtocolError)(nil); !errors.As(err, &pe) {
				t.Fatalf("parse error of type %T: %v", err, err)
			}
			_, _ = parseReply(msg)
			budget.Release(int64(cap(msg)))
		}
	})
}

// fuzzSeeds are the seed messages, also kept in testdata/fuzz.
func fuzzSeeds() [][]byte {
	find := bsoncore.NewDocumentBuilder().AppendString("find", "users").
		AppendDocument("filter", bsoncore.NewDocumentBuilder().AppendString("name", "ada").Build()).
		AppendString("$db", "app").Build()
	insert := bsoncore.NewDocumentBuilder().AppendString("insert", "users").AppendString("$db", "app").Build()
	doc := bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).AppendString("secret", "x").Build()

	seq := appendMsg(nil, 2, 0, insert)
	// Add a kind 1 section: size, identifier, documents.
	idx := len(seq)
	seq = append(seq, byte(wiremessage.DocumentSequence), 0, 0, 0, 0)
	seq = append(seq, "documents\x00"...)
	seq = append(seq, doc...)
	seq = append(seq, doc...)
	size := len(seq) - idx - 1
	seq[idx+1], seq[idx+2], seq[idx+3], seq[idx+4] = byte(size), byte(size>>8), byte(size>>16), byte(size>>24)
	seq = bsoncore.UpdateLength(seq, 0, int32(len(seq)))

	hello := bsoncore.NewDocumentBuilder().AppendInt32("isMaster", 1).AppendString("saslSupportedMechs", "admin.u").Build()
	query := appendOpQuery(3, "admin.$cmd", hello)
	update := bsoncore.NewDocumentBuilder().AppendString("update", "users").
		AppendArray("updates", bsoncore.NewArrayBuilder().AppendDocument(bsoncore.NewDocumentBuilder().
			AppendDocument("q", doc).AppendDocument("u", doc).Build()).Build()).
		AppendString("$db", "app").Build()
	dup := bsoncore.NewDocumentBuilder().AppendString("insert", "c").AppendString("$db", "a").AppendString("$db", "b").Build()
	// A header that declares more than the budget, followed by 100 KiB.
	overBudget := make([]byte, headerLen+100<<10)
	overBudget[0], overBudget[1], overBudget[2] = 0, 0, 0x10 // 1 MiB
	overBudget[12], overBudget[13] = 0xdd, 7
	return [][]byte{
		appendMsg(nil, 1, 0, find),
		appendMsg(nil, 5, 0, dup),
		overBudget,
		seq,
		query,
		appendMsg(nil, 4, 0, update),
		{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0, 0xdd, 7, 0, 0},
		{16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xdc, 7, 0, 0},
	}
}

// appendOpQuery builds an OP_QUERY command.
func appendOpQuery(requestID int32, ns string, q bsoncore.Document) []byte {
	idx, dst := wiremessage.AppendHeaderStart(nil, requestID, 0, wiremessage.OpQuery)
	dst = wiremessage.AppendQueryFlags(dst, 0)
	dst = wiremessage.AppendQueryFullCollectionName(dst, ns)
	dst = wiremessage.AppendQueryNumberToSkip(dst, 0)
	dst = wiremessage.AppendQueryNumberToReturn(dst, -1)
	dst = append(dst, q...)
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
}
