package mongodb

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

// Bounds of a recorded statement.
const (
	// maxStatement is the longest statement recorded, in bytes; a longer
	// one is cut and marked.
	maxStatement = 16 << 10
	// sequenceBudget bounds the raw bytes of document-sequence documents
	// turned into JSON for a statement: an insertMany of 10 MB is
	// recorded by its first documents and a count of the rest.
	sequenceBudget = 8 << 10
)

// masked replaces passwords and, on request, the values of written
// documents.
const masked = "***"

// bookkeeping are the fields a driver adds to every command, left out of
// the recorded statement.
var bookkeeping = map[string]bool{
	"lsid":                 true,
	"$clusterTime":         true,
	"$db":                  true,
	"txnNumber":            true,
	"$readPreference":      true,
	"autocommit":           true,
	"apiVersion":           true,
	"apiStrict":            true,
	"apiDeprecationErrors": true,
	"$audit":               true,
	"$client":              true,
	"$configServerState":   true,
	"$gleStats":            true,
	"$oplogQueryData":      true,
	"$replData":            true,
	"$topologyTime":        true,
}

// recorder is the session log of one client connection.
type recorder struct {
	rec       sessionlog.Recorder
	sessionID string
	connID    string
	sess      *common.Session // for its log settings, which may change
}

func (r *recorder) newEvent(kind string, at time.Time) sessionlog.Event {
	return sessionlog.Event{
		ID:        uuid.Must(uuid.NewV7()).String(),
		SessionID: r.sessionID,
		Time:      at,
		ConnID:    r.connID,
		Kind:      kind,
	}
}

// connection records a connect or disconnect event.
func (r *recorder) connection(kind string, at time.Time, database, outcome, code, msg string) {
	ev := r.newEvent(kind, at)
	ev.Database = database
	ev.Outcome = outcome
	ev.ErrorCode = code
	ev.ErrorMsg = r.mask(msg)
	r.rec.Record(ev)
}

// pending is a command forwarded and waiting for its outcome.
type pending struct {
	ev    sessionlog.Event
	start time.Time
	res   result
}

// begin starts the event of a command the client sent.
func (r *recorder) begin(req *request, at time.Time) *pending {
	ev := r.newEvent(sessionlog.KindCommand, at)
	ev.Command = req.command
	ev.Database = req.database
	ev.Collection = collectionOf(req)
	if !isAuthCommand(req.command) {
		ev.Statement = r.mask(statement(req, r.sess.RedactValues()))
	}
	return &pending{ev: ev, start: at}
}

// finish records the event with its outcome.
func (r *recorder) finish(p *pending, end time.Time) {
	ev := p.ev
	res := p.res
	ev.Outcome = res.outcome
	if ev.Outcome == "" {
		ev.Outcome = "ok"
	}
	ev.ErrorCode = res.code
	ev.ErrorMsg = r.mask(res.msg)
	ev.Rows = res.rows
	ev.DurationUS = end.Sub(p.start).Microseconds()
	r.rec.Record(ev)
}

func (r *recorder) mask(s string) string {
	for _, p := range r.sess.MaskPatterns() {
		s = p.ReplaceAllString(s, masked)
	}
	return s
}

// collectionOf returns the collection a command names: the value of its
// first field when that is a string (find: "users"), or getMore's
// collection.
func collectionOf(req *request) string {
	first, err := req.body.IndexErr(0)
	if err != nil {
		return ""
	}
	if s, ok := first.Value().StringValueOK(); ok {
		return s
	}
	if strings.EqualFold(req.command, "getMore") {
		if v, err := req.body.LookupErr("collection"); err == nil {
			s, _ := v.StringValueOK()
			return s
		}
	}
	return ""
}

// statement returns the command document as relaxed extended JSON, without
// the driver's bookkeeping, with document sequences as the fields they
// stand for, pwd masked and, if redact, the values of written documents
// masked too.
func statement(req *request, redact bool) string {
	idx, dst := bsoncore.AppendDocumentStart(nil)
	elems, _ := req.body.Elements()
	for _, el := range elems {
		k := el.Key()
		if bookkeeping[k] {
			continue
		}
		v := el.Value()
		switch {
		case k == "pwd":
			dst = bsoncore.AppendStringElement(dst, k, masked)
		case redact && isWrittenField(req.command, k):
			dst = bsoncore.AppendValueElement(dst, k, redactWritten(req.command, v))
		default:
			dst = bsoncore.AppendValueElement(dst, k, v)
		}
	}
	budget := sequenceBudget
	for _, s := range req.seqs {
		var aidx int32
		aidx, dst = bsoncore.AppendArrayElementStart(dst, s.identifier)
		for i, d := range s.docs {
			if budget <= 0 {
				dst = bsoncore.AppendStringElement(dst, strconv.Itoa(i),
					"… ["+strconv.Itoa(len(s.docs)-i)+" more documents]")
				break
			}
			budget -= len(d)
			v := bsoncore.Value{Type: bsoncore.TypeEmbeddedDocument, Data: d}
			if redact && isWrittenField(req.command, s.identifier) {
				v = redactWrittenElem(req.command, v)
			}
			dst = bsoncore.AppendValueElement(dst, strconv.Itoa(i), v)
		}
		dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	js, err := bson.MarshalExtJSON(bson.Raw(dst), false, false)
	if err != nil {
		return "[command " + req.command + " cannot be shown as JSON: " + err.Error() + "]"
	}
	return truncate(string(js))
}

func truncate(s string) string {
	if len(s) <= maxStatement {
		return s
	}
	cut := maxStatement
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "… [truncated: statement of " + strconv.Itoa(len(s)) + " bytes]"
}

// isWrittenField reports whether field of cmd holds the documents it
// writes: insert's documents, update's updates, findAndModify's update.
func isWrittenField(cmd, field string) bool {
	switch strings.ToLower(cmd) {
	case "insert":
		return field == "documents"
	case "update":
		return field == "updates"
	case "findandmodify":
		return field == "update"
	}
	return false
}

// redactWritten masks a written field: every document of insert's
// documents; the u of each of update's statements (their q, upsert, multi
// stay); findAndModify's update.
func redactWritten(cmd string, v bsoncore.Value) bsoncore.Value {
	if strings.EqualFold(cmd, "findAndModify") {
		return redactValue(v)
	}
	arr, ok := v.ArrayOK()
	if !ok {
		return redactValue(v)
	}
	vals, _ := arr.Values()
	idx, dst := bsoncore.AppendArrayStart(nil)
	for i, el := range vals {
		dst = bsoncore.AppendValueElement(dst, strconv.Itoa(i), redactWrittenElem(cmd, el))
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, idx)
	return bsoncore.Value{Type: bsoncore.TypeArray, Data: dst}
}

// redactWrittenElem masks one element of a written field.
func redactWrittenElem(cmd string, v bsoncore.Value) bsoncore.Value {
	if !strings.EqualFold(cmd, "update") {
		return redactValue(v)
	}
	doc, ok := v.DocumentOK()
	if !ok {
		return redactValue(v)
	}
	idx, dst := bsoncore.AppendDocumentStart(nil)
	elems, _ := doc.Elements()
	for _, el := range elems {
		if el.Key() == "u" {
			dst = bsoncore.AppendValueElement(dst, "u", redactValue(el.Value()))
			continue
		}
		dst = bsoncore.AppendValueElement(dst, el.Key(), el.Value())
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return bsoncore.Value{Type: bsoncore.TypeEmbeddedDocument, Data: dst}
}

// redactValue keeps the shape of documents and arrays (their keys, and
// update operators such as $set) and replaces every other value with
// "***".
func redactValue(v bsoncore.Value) bsoncore.Value {
	switch v.Type {
	case bsoncore.TypeEmbeddedDocument, bsoncore.TypeArray:
		doc := bsoncore.Document(v.Data)
		elems, _ := doc.Elements()
		idx, dst := bsoncore.AppendDocumentStart(nil)
		for _, el := range elems {
			dst = bsoncore.AppendValueElement(dst, el.Key(), redactValue(el.Value()))
		}
		dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
		return bsoncore.Value{Type: v.Type, Data: dst}
	default:
		return bsoncore.Value{Type: bsoncore.TypeString, Data: bsoncore.AppendString(nil, masked)}
	}
}

// result is the outcome of a command, from its reply or replies.
type result struct {
	outcome string // "ok", "error" or "unacknowledged"
	code    string
	msg     string
	rows    int64
}

// add folds one reply into the result: an exhaust cursor's replies add
// their batches up.
func (res *result) add(body bsoncore.Document) {
	if !replyOK(body) {
		res.outcome = "error"
		res.code, res.msg = errorOf(body)
		return
	}
	if res.outcome == "" {
		res.outcome = "ok"
	}
	res.rows += rowsOf(body)
	if v, err := body.LookupErr("writeErrors"); err == nil {
		if arr, ok := v.ArrayOK(); ok {
			vals, _ := arr.Values()
			if len(vals) > 0 {
				res.outcome = "error"
				if d, ok := vals[0].DocumentOK(); ok {
					res.code, res.msg = errorOf(d)
				}
				if len(vals) > 1 {
					res.msg += " (and " + strconv.Itoa(len(vals)-1) + " more write errors)"
				}
			}
		}
	}
	if v, err := body.LookupErr("writeConcernError"); err == nil && res.outcome != "error" {
		if d, ok := v.DocumentOK(); ok {
			res.outcome = "error"
			res.code, res.msg = errorOf(d)
		}
	}
}

// errorOf returns the code and message of an error document.
func errorOf(d bsoncore.Document) (code, msg string) {
	if v, err := d.LookupErr("code"); err == nil {
		if n, ok := v.AsInt64OK(); ok {
			code = strconv.FormatInt(n, 10)
		}
	}
	if v, err := d.LookupErr("errmsg"); err == nil {
		msg, _ = v.StringValueOK()
	}
	if v, err := d.LookupErr("codeName"); err == nil && msg == "" {
		msg, _ = v.StringValueOK()
	}
	return code, msg
}

// rowsOf returns the documents a reply returned (cursor.firstBatch or
// nextBatch) or the count of documents a write or count affected (n,
// findAndModify's lastErrorObject.n).
func rowsOf(body bsoncore.Document) int64 {
	if v, err := body.LookupErr("cursor"); err == nil {
		if c, ok := v.DocumentOK(); ok {
			for _, k := range []string{"firstBatch", "nextBatch"} {
				if b, err := c.LookupErr(k); err == nil {
					if arr, ok := b.ArrayOK(); ok {
						vals, _ := arr.Values()
						return int64(len(vals))
					}
				}
			}
		}
	}
	if v, err := body.LookupErr("n"); err == nil {
		if n, ok := v.AsInt64OK(); ok {
			return n
		}
	}
	if v, err := body.LookupErr("lastErrorObject", "n"); err == nil {
		if n, ok := v.AsInt64OK(); ok {
			return n
		}
	}
	return 0
}
