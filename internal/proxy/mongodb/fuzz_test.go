//lint:file-ignore SA1019 the tests send OP_QUERY, as old clients do.

package mongodb

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// fuzzMaxSize is the message size limit under fuzzing: small, so that a
// length the fuzzer makes up cannot make a test allocate much.
const fuzzMaxSize = 1 << 20

// FuzzReadMessage feeds bytes off the network to the message reader, the
// request parser and the session log's statement builder: none may panic,
// allocate beyond the limit, or accept a message that the parser then
// describes inconsistently.
func FuzzReadMessage(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for range 4 {
			msg, err := readMessage(r, readLimits{maxSize: fuzzMaxSize})
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if len(msg) < headerLen || len(msg) > fuzzMaxSize {
				t.Fatalf("message of %d bytes", len(msg))
			}
			req, err := parseRequest(msg)
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("parse error of type %T: %v", err, err)
				}
				continue
			}
			if req.command == "" || req.database == "" {
				t.Fatalf("accepted a request without command or database: %+v", req)
			}
			_ = statement(req, false, 0).String()
			_ = statement(req, true, 4096).String()
			_ = collectionOf(req)
			if isHello(req.command) {
				_ = rewriteHelloRequest(req)
			}
			_, _ = parseReply(msg)
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
	return [][]byte{
		appendMsg(nil, 1, 0, find),
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
