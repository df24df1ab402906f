package mongodb

import (
	"strings"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// Error codes the engine answers with, MongoDB's own.
const (
	codeHostUnreachable      = 6
	codeProtocolError        = 17
	codeInterrupted          = 11601 // the session ended under the operation; drivers do not retry it
	codeAuthenticationFailed = 18
	codeBadValue             = 2     // a command document with a field twice
	codeInternalError        = 1     // the session log cannot be written
	codeNetworkTimeout       = 89    // a message stalled half-way
	codeExceededMemoryLimit  = 146   // the gateway's memory budget for messages is spent
	codeBSONObjectTooLarge   = 10334 // a command over the project's recording limit
)

// authMessage is the answer to a client's own authentication.
const authMessage = "Airlock injects the credentials; connect without a password"

// isHello reports whether cmd is the handshake command, by any of its names.
func isHello(cmd string) bool {
	return cmd == "hello" || strings.EqualFold(cmd, "ismaster")
}

// isAuthCommand reports whether cmd is one of the client's own
// authentication commands, which are answered with an error and never
// forwarded: the upstream connection is authenticated already.
func isAuthCommand(cmd string) bool {
	switch strings.ToLower(cmd) {
	case "saslstart", "saslcontinue", "authenticate", "logout", "getnonce":
		return true
	}
	return false
}

// unrecorded are the commands the session log leaves out: the handshake,
// liveness checks and driver bookkeeping, which every client sends on its
// own.
var unrecorded = map[string]bool{
	"hello":        true,
	"ismaster":     true,
	"ping":         true,
	"buildinfo":    true,
	"getlasterror": true,
	"endsessions":  true,
}

func isRecorded(cmd string) bool { return !unrecorded[strings.ToLower(cmd)] }

// helloRequestDrop are the fields of a client's hello that do not reach the
// server: compression and authentication are the gateway's business, the
// client metadata was given by the gateway's own handshake (a second one is
// an error), and an awaitable hello (topologyVersion, maxAwaitTimeMS) would
// stream.
var helloRequestDrop = map[string]bool{
	"client":                  true,
	"compression":             true,
	"saslSupportedMechs":      true,
	"speculativeAuthenticate": true,
	"topologyVersion":         true,
	"maxAwaitTimeMS":          true,
	"$readPreference":         true,
}

// rewriteHelloRequest returns the body of the OP_MSG hello sent upstream for
// a client's hello: its fields but the dropped ones, with $db.
func rewriteHelloRequest(req *request) bsoncore.Document {
	idx, dst := bsoncore.AppendDocumentStart(nil)
	elems, _ := req.body.Elements()
	for _, el := range elems {
		k := el.Key()
		if helloRequestDrop[k] || k == "$db" {
			continue
		}
		dst = bsoncore.AppendValueElement(dst, k, el.Value())
	}
	dst = bsoncore.AppendStringElement(dst, "$db", req.database)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// helloReplyDrop are the fields of the server's hello reply that the client
// does not see: what would make it negotiate compression or authenticate,
// stream hellos, or discover the deployment's members behind the gateway.
var helloReplyDrop = map[string]bool{
	"compression":             true,
	"saslSupportedMechs":      true,
	"speculativeAuthenticate": true,
	"topologyVersion":         true,
	"hosts":                   true,
	"passives":                true,
	"arbiters":                true,
	"setName":                 true,
	"setVersion":              true,
	"primary":                 true,
	"me":                      true,
	"electionId":              true,
	"tags":                    true,
	"lastWrite":               true,
	"secondary":               true,
	"arbiterOnly":             true,
	"passive":                 true,
	"hidden":                  true,
	"isWritablePrimary":       true,
	"ismaster":                true,
	"isreplicaset":            true,
}

// rewriteHelloReply returns the reply the client sees: the server's, less
// the dropped fields, as a writable standalone (the client reaches one
// local port, whatever the deployment behind it). The limits
// (maxMessageSizeBytes, maxBsonObjectSize, maxWriteBatchSize) and wire
// versions are the server's. An error reply is passed on as it is.
func rewriteHelloReply(cmd string, body bsoncore.Document) bsoncore.Document {
	if !replyOK(body) {
		return body
	}
	primaryKey := "isWritablePrimary"
	if cmd != "hello" {
		primaryKey = "ismaster"
	}
	idx, dst := bsoncore.AppendDocumentStart(nil)
	dst = bsoncore.AppendBooleanElement(dst, primaryKey, true)
	elems, _ := body.Elements()
	for _, el := range elems {
		if helloReplyDrop[el.Key()] {
			continue
		}
		dst = bsoncore.AppendValueElement(dst, el.Key(), el.Value())
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// replyOK reports whether a reply body has ok: 1.
func replyOK(body bsoncore.Document) bool {
	v, err := body.LookupErr("ok")
	if err != nil {
		return false
	}
	if f, ok := v.AsFloat64OK(); ok {
		return f == 1
	}
	if b, ok := v.BooleanOK(); ok {
		return b
	}
	return false
}

// commandBody returns the body sent upstream for an OP_QUERY command: the
// query with $db added.
func commandBody(req *request) bsoncore.Document {
	if _, err := req.body.LookupErr("$db"); err == nil {
		return req.body
	}
	idx, dst := bsoncore.AppendDocumentStart(nil)
	elems, _ := req.body.Elements()
	for _, el := range elems {
		dst = bsoncore.AppendValueElement(dst, el.Key(), el.Value())
	}
	dst = bsoncore.AppendStringElement(dst, "$db", req.database)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}
