package mongodb

import (
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
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
	// wa, when the recorder can, takes each command's start record before
	// the command is forwarded (write-ahead).
	wa sessionlog.WriteAheadRecorder
}

// newRecorder returns the session log of a connection of sess, into rec.
func newRecorder(rec sessionlog.Recorder, sess *common.Session, connID string) *recorder {
	wa, _ := rec.(sessionlog.WriteAheadRecorder)
	return &recorder{rec: rec, sessionID: sess.ID(), connID: connID, sess: sess, wa: wa}
}

// writeAhead hands the recorder the start record of p, the event of a
// command about to be forwarded, and names it in p's final event. It
// returns the recorder's error when it cannot take it: the command must
// then not be forwarded.
func (r *recorder) writeAhead(p *pending) error {
	if r.wa == nil {
		return nil
	}
	start := p.ev
	start.ID = uuid.Must(uuid.NewV7()).String()
	if err := r.wa.Begin(start); err != nil {
		return err
	}
	p.ev.StartID = start.ID
	return nil
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
	// over says the statement is longer than the session's
	// MaxStatementBytes (of stmtLen bytes); ev.Statement holds its ends.
	over    bool
	stmtLen int64
}

// begin starts the event of a command the client sent.
func (r *recorder) begin(req *request, at time.Time) *pending {
	ev := r.newEvent(sessionlog.KindCommand, at)
	ev.Command = req.command
	ev.Database = req.database
	ev.Collection = collectionOf(req)
	p := &pending{start: at}
	if !isAuthCommand(req.command) {
		st := statement(req, r.sess.RedactValues(), r.sess.MaxStatementBytes())
		ev.Statement = r.mask(st.String())
		p.over, p.stmtLen = st.Over(), st.Len()
	}
	p.ev = ev
	return p
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

// statement renders the command document as relaxed extended JSON into a
// common.Statement of the given limit: without the driver's bookkeeping,
// with document sequences as the fields they stand for, every entry of
// every array (every document of an insert, every statement of an update
// or delete, every operation of a bulkWrite) in full, pwd masked and, if
// redact, the values of written documents masked too. It renders one
// element or array entry at a time, so a command of tens of megabytes is
// never held as text: the Statement keeps its ends and hash once over the
// limit.
func statement(req *request, redact bool, limit int64) *common.Statement {
	st := common.NewStatement(limit)
	if rawSize(req) <= wholeRender {
		// A small command is rendered in one piece: the same text,
		// for a fraction of the work.
		if js, err := statementWhole(req, redact); err == nil {
			_, _ = st.Write(js)
			return st
		}
	}
	statementStream(req, redact, st)
	return st
}

// wholeRender is the size of a command's BSON (body and document
// sequences) up to which statement renders it in one piece.
const wholeRender = 64 << 10

// rawSize returns the bytes of req's body and document sequences.
func rawSize(req *request) int {
	n := len(req.body)
	for _, s := range req.seqs {
		for _, d := range s.docs {
			n += len(d)
		}
	}
	return n
}

// statementWhole renders req as statementStream does, in one piece: it
// builds the document to record (bookkeeping left out, sequences as
// fields, written values redacted) and renders it at once.
func statementWhole(req *request, redact bool) ([]byte, error) {
	idx, dst := bsoncore.AppendDocumentStart(nil)
	elems, _ := req.body.Elements()
	for _, el := range elems {
		k := el.Key()
		if bookkeeping[k] {
			continue
		}
		v := el.Value()
		written := redact && isWrittenField(req.command, k)
		switch {
		case k == "pwd":
			dst = bsoncore.AppendStringElement(dst, k, masked)
		case written && v.Type == bsoncore.TypeArray:
			vals, _ := bsoncore.Array(v.Data).Values()
			dst = appendArrayElement(dst, k, vals, func(e bsoncore.Value) bsoncore.Value { return redactWrittenElem(req.command, e) })
		case written:
			dst = bsoncore.AppendValueElement(dst, k, redactValue(v))
		default:
			dst = bsoncore.AppendValueElement(dst, k, v)
		}
	}
	for _, s := range req.seqs {
		written := redact && isWrittenField(req.command, s.identifier)
		vals := make([]bsoncore.Value, len(s.docs))
		for i, d := range s.docs {
			vals[i] = bsoncore.Value{Type: bsoncore.TypeEmbeddedDocument, Data: d}
		}
		dst = appendArrayElement(dst, s.identifier, vals, func(e bsoncore.Value) bsoncore.Value {
			if written {
				return redactWrittenElem(req.command, e)
			}
			return e
		})
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return bson.MarshalExtJSON(bson.Raw(dst), false, false)
}

// appendArrayElement appends the array of vals, each through conv, as the
// element k.
func appendArrayElement(dst []byte, k string, vals []bsoncore.Value, conv func(bsoncore.Value) bsoncore.Value) []byte {
	aidx, dst := bsoncore.AppendArrayElementStart(dst, k)
	for i, e := range vals {
		dst = bsoncore.AppendValueElement(dst, strconv.Itoa(i), conv(e))
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	return dst
}

// statementStream renders req into st one element or array entry at a
// time (see statement).
func statementStream(req *request, redact bool, st *common.Statement) {
	_, _ = st.WriteString("{")
	n := 0
	field := func(k string) {
		if n > 0 {
			_, _ = st.WriteString(",")
		}
		n++
		writeJSONKey(st, k)
	}
	elems, _ := req.body.Elements()
	for _, el := range elems {
		k := el.Key()
		if bookkeeping[k] {
			continue
		}
		v := el.Value()
		field(k)
		written := redact && isWrittenField(req.command, k)
		switch {
		case k == "pwd":
			writeJSONValue(st, bsoncore.Value{Type: bsoncore.TypeString, Data: bsoncore.AppendString(nil, masked)})
		case v.Type == bsoncore.TypeArray:
			vals, _ := bsoncore.Array(v.Data).Values()
			writeJSONArray(st, vals, func(e bsoncore.Value) bsoncore.Value {
				if written {
					return redactWrittenElem(req.command, e)
				}
				return e
			})
		case written:
			writeJSONValue(st, redactValue(v))
		default:
			writeJSONValue(st, v)
		}
	}
	for _, s := range req.seqs {
		field(s.identifier)
		written := redact && isWrittenField(req.command, s.identifier)
		vals := make([]bsoncore.Value, len(s.docs))
		for i, d := range s.docs {
			vals[i] = bsoncore.Value{Type: bsoncore.TypeEmbeddedDocument, Data: d}
		}
		writeJSONArray(st, vals, func(e bsoncore.Value) bsoncore.Value {
			if written {
				return redactWrittenElem(req.command, e)
			}
			return e
		})
	}
	_, _ = st.WriteString("}")
}

// writeJSONArray writes vals, each through conv, as a JSON array.
func writeJSONArray(st *common.Statement, vals []bsoncore.Value, conv func(bsoncore.Value) bsoncore.Value) {
	_, _ = st.WriteString("[")
	for i, e := range vals {
		if i > 0 {
			_, _ = st.WriteString(",")
		}
		writeJSONValue(st, conv(e))
	}
	_, _ = st.WriteString("]")
}

// writeJSONKey writes k, quoted as the driver quotes a key, and a colon.
func writeJSONKey(st *common.Statement, k string) {
	doc := bsoncore.BuildDocumentFromElements(nil, bsoncore.AppendNullElement(nil, k))
	js, err := bson.MarshalExtJSON(bson.Raw(doc), false, false)
	if err != nil || len(js) < len("{:null}") {
		_, _ = st.WriteString(`"[a key that cannot be shown as JSON]":`)
		return
	}
	_, _ = st.Write(js[1 : len(js)-len("null}")])
}

// writeJSONValue writes v as relaxed extended JSON, exactly as the driver
// renders it inside a document.
func writeJSONValue(st *common.Statement, v bsoncore.Value) {
	doc := bsoncore.BuildDocumentFromElements(nil, bsoncore.AppendValueElement(nil, "", v))
	js, err := bson.MarshalExtJSON(bson.Raw(doc), false, false)
	const prefix = `{"":`
	if err != nil || len(js) < len(prefix)+1 || string(js[:len(prefix)]) != prefix {
		msg := "a value that cannot be shown as JSON"
		if err != nil {
			msg += ": " + err.Error()
		}
		writeJSONValue(st, bsoncore.Value{Type: bsoncore.TypeString, Data: bsoncore.AppendString(nil, "["+msg+"]")})
		return
	}
	_, _ = st.Write(js[len(prefix) : len(js)-1])
}

// isWrittenField reports whether field of cmd holds the documents it
// writes: insert's documents, update's updates, findAndModify's update,
// bulkWrite's ops.
func isWrittenField(cmd, field string) bool {
	switch strings.ToLower(cmd) {
	case "insert":
		return field == "documents"
	case "update":
		return field == "updates"
	case "findandmodify":
		return field == "update"
	case "bulkwrite":
		return field == "ops"
	}
	return false
}

// writtenKeys are, for the commands whose written field holds statements
// rather than documents, the keys of a statement whose values are written:
// update's u; bulkWrite's document (insert), updateMods (update) and
// replacement. The other keys of a statement (q, filter, upsert, multi...)
// stay visible.
var writtenKeys = map[string]map[string]bool{
	"update":    {"u": true},
	"bulkwrite": {"document": true, "updateMods": true, "replacement": true},
}

// redactWrittenElem masks one element of a written field: a whole
// document, or the written keys of a statement.
func redactWrittenElem(cmd string, v bsoncore.Value) bsoncore.Value {
	keys := writtenKeys[strings.ToLower(cmd)]
	if keys == nil {
		return redactValue(v)
	}
	doc, ok := v.DocumentOK()
	if !ok {
		return redactValue(v)
	}
	idx, dst := bsoncore.AppendDocumentStart(nil)
	elems, _ := doc.Elements()
	for _, el := range elems {
		if keys[el.Key()] {
			dst = bsoncore.AppendValueElement(dst, el.Key(), redactValue(el.Value()))
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
