//lint:file-ignore SA1019 OP_QUERY is deprecated, but old clients still open with it: it must be parsed.

package mongodb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"

	"github.com/airlockpam/airlock/internal/proxy/common"
)

// Message sizes.
const (
	// headerLen is the length of a wire message header: length,
	// requestID, responseTo and opCode, four little-endian int32s.
	headerLen = 16
	// DefaultMaxMessageSize is the largest client message accepted
	// before the upstream server has said its own maxMessageSizeBytes:
	// MongoDB's 48,000,000 bytes.
	DefaultMaxMessageSize = 48_000_000
)

// Wire protocol op codes the engine knows.
const (
	opReply      = wiremessage.OpReply
	opQuery      = wiremessage.OpQuery
	opMsg        = wiremessage.OpMsg
	opCompressed = wiremessage.OpCompressed
)

// msgFlagsKnown are the OP_MSG flag bits the protocol defines. A set bit
// among the low 16 that is not known must make the message an error; the
// high 16 are optional and may be ignored.
const msgFlagsKnown = wiremessage.ChecksumPresent | wiremessage.MoreToCome | wiremessage.ExhaustAllowed

// ProtocolError is a client message the engine cannot accept: a length out
// of bounds, an op code it does not relay, a body that is not valid BSON, a
// message that does not fit the gateway's memory budget or stalls half-way.
// The connection is answered with an error, where the protocol allows one,
// and closed.
type ProtocolError struct {
	Reason string
	// Code is the error code of the reply; zero means 17 (ProtocolError).
	Code int32
	// RequestID is the offending message's requestID, for the error reply;
	// zero when the header itself could not be read.
	RequestID int32
	// Answerable says whether the header was read whole, so that an error
	// reply can refer to it.
	Answerable bool
	// Legacy says the message was an OP_QUERY, whose reply is an OP_REPLY.
	Legacy bool
}

func (e *ProtocolError) Error() string { return "mongodb: invalid client message: " + e.Reason }

// header is a wire message's header.
type header struct {
	length     int32
	requestID  int32
	responseTo int32
	opCode     wiremessage.OpCode
}

// firstChunk is the most readMessage allocates for a message before its
// bytes arrive; it grows the buffer, doubling, as they do.
const firstChunk = 16 << 10

// readLimits bounds the reading of one client message.
type readLimits struct {
	// maxSize is the largest message accepted, and so the most one
	// connection buffers.
	maxSize int32
	// budget is shared by every connection: the bytes of a message's
	// buffer are taken from it before they are allocated. Nil: no shared
	// bound.
	budget *common.Budget
	// startBody, if not nil, is called once the header is read, before
	// the body is: it sets the deadline of the rest of the message.
	startBody func()
}

// bodyError is the failure of reading the rest of a message whose header
// was read: the client closed the connection or stalled (Err is then a
// network timeout).
type bodyError struct {
	h   header
	got int // bytes of the message that arrived
	err error
}

func (e *bodyError) Error() string {
	return fmt.Sprintf("read the rest of a message of %d bytes (%d arrived): %v", e.h.length, e.got, e.err)
}

func (e *bodyError) Unwrap() error { return e.err }

// readMessage reads one whole wire message from r: the 16-byte header, then
// the rest of the length it declares, which must be at least 16 and at most
// lim.maxSize. The message is read incrementally: its buffer starts at
// firstChunk bytes at most and doubles as bytes arrive, each growth taken
// from lim.budget first, so that a declared length costs nothing until
// the client sends the bytes, and never more than the budget allows (a
// *ProtocolError with code ExceededMemoryLimit). The returned message's
// capacity is what it holds of the budget: the caller gives it back with
// lim.budget.Release(int64(cap(msg))) when it has done with the message.
// On error, readMessage has given back what it took.
func readMessage(r io.Reader, lim readLimits) ([]byte, error) {
	var hb [headerLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, err
	}
	h := header{
		length:     int32(binary.LittleEndian.Uint32(hb[0:4])),
		requestID:  int32(binary.LittleEndian.Uint32(hb[4:8])),
		responseTo: int32(binary.LittleEndian.Uint32(hb[8:12])),
		opCode:     wiremessage.OpCode(binary.LittleEndian.Uint32(hb[12:16])),
	}
	switch {
	case h.length < headerLen:
		return nil, &ProtocolError{Reason: fmt.Sprintf("message length %d is shorter than a header", h.length), RequestID: h.requestID, Answerable: false}
	case h.length > lim.maxSize:
		// The body is not read: the connection is closed after the
		// reply, so there is no need to skip it.
		return nil, &ProtocolError{Reason: fmt.Sprintf("message of %d bytes exceeds the maximum of %d", h.length, lim.maxSize),
			RequestID: h.requestID, Answerable: true, Legacy: h.opCode == opQuery}
	}
	if lim.startBody != nil && h.length > headerLen {
		lim.startBody()
	}
	total := int(h.length)
	var msg []byte
	grow := func(size int) error {
		if err := lim.budget.Acquire(int64(size)); err != nil {
			return &ProtocolError{Reason: fmt.Sprintf("message of %d bytes refused: %v", h.length, err), Code: codeExceededMemoryLimit,
				RequestID: h.requestID, Answerable: true, Legacy: h.opCode == opQuery}
		}
		grown := make([]byte, len(msg), size)
		copy(grown, msg)
		lim.budget.Release(int64(cap(msg)))
		msg = grown
		return nil
	}
	fail := func(err error) ([]byte, error) {
		lim.budget.Release(int64(cap(msg)))
		return nil, err
	}
	if err := grow(min(total, firstChunk)); err != nil {
		return nil, err
	}
	msg = append(msg, hb[:]...)
	for len(msg) < total {
		if len(msg) == cap(msg) {
			if err := grow(min(total, 2*cap(msg))); err != nil {
				return fail(err)
			}
		}
		n, err := r.Read(msg[len(msg):cap(msg)])
		msg = msg[:len(msg)+n]
		if err != nil && len(msg) < total {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fail(&bodyError{h: h, got: len(msg), err: err})
		}
	}
	return msg, nil
}

// request is one client message, parsed.
type request struct {
	raw       []byte
	requestID int32
	opCode    wiremessage.OpCode

	// OP_MSG
	flags wiremessage.MsgFlag
	// body is the command document: the OP_MSG body section, or the
	// OP_QUERY query (unwrapped from $query).
	body bsoncore.Document
	// seqs are the OP_MSG document sequences (kind 1 sections), in order.
	seqs []docSequence

	// OP_QUERY
	namespace string // fullCollectionName: "db.$cmd"

	// Derived.
	command  string // the first key of body
	database string // $db, or the namespace's database for OP_QUERY
	// dup is a top-level field the command has twice (in its body, or in
	// its body and a document sequence, or in two sequences); empty when
	// none. Such a command is refused: the server and the session log
	// could each read another of the two.
	dup string
}

// duplicateKey returns the first top-level key of doc that occurs twice, or
// that is in seen already, and adds doc's keys to seen.
func duplicateKey(doc bsoncore.Document, seen map[string]bool) string {
	elems, _ := doc.Elements()
	dup := ""
	for _, el := range elems {
		k := el.Key()
		if seen[k] && dup == "" {
			dup = k
		}
		seen[k] = true
	}
	return dup
}

// docSequence is an OP_MSG kind 1 section: documents that belong to one
// field of the command (insert's documents, update's updates...).
type docSequence struct {
	identifier string
	docs       []bsoncore.Document
}

// moreToCome reports whether the client expects no reply.
func (r *request) moreToCome() bool {
	return r.opCode == opMsg && r.flags&wiremessage.MoreToCome != 0
}

// parseRequest parses a whole client message read by readMessage. It
// accepts OP_MSG and OP_QUERY commands (namespace "db.$cmd"); anything
// else is a *ProtocolError.
func parseRequest(msg []byte) (*request, error) {
	_, reqID, _, op, rem, ok := wiremessage.ReadHeader(msg)
	if !ok {
		return nil, &ProtocolError{Reason: "message shorter than a header"}
	}
	r := &request{raw: msg, requestID: reqID, opCode: op}
	fail := func(format string, args ...any) error {
		return &ProtocolError{Reason: fmt.Sprintf(format, args...), RequestID: reqID, Answerable: true, Legacy: op == opQuery}
	}
	switch op {
	case opMsg:
		if err := r.parseMsg(rem); err != nil {
			return nil, fail("OP_MSG: %v", err)
		}
	case opQuery:
		if err := r.parseQuery(rem); err != nil {
			return nil, fail("OP_QUERY: %v", err)
		}
	case opCompressed:
		return nil, fail("compressed messages (OP_COMPRESSED) are not supported: connect without compressors")
	default:
		return nil, fail("op code %d (%s) is not supported", int32(op), op)
	}
	elem, err := r.body.IndexErr(0)
	if err != nil {
		return nil, fail("the command document is empty")
	}
	r.command = elem.Key()
	if r.database == "" {
		return nil, fail("the command %q has no $db", r.command)
	}
	return r, nil
}

func (r *request) parseMsg(rem []byte) error {
	flags, rem, ok := wiremessage.ReadMsgFlags(rem)
	if !ok {
		return errors.New("no flags")
	}
	if unknown := flags &^ msgFlagsKnown; unknown&0xffff != 0 {
		return fmt.Errorf("unknown required flag bits %#x", uint32(unknown&0xffff))
	}
	r.flags = flags
	if flags&wiremessage.ChecksumPresent != 0 {
		if len(rem) < 4 {
			return errors.New("no room for the checksum")
		}
		// The checksum is not verified here: the message is relayed as
		// it came, and the server verifies it.
		rem = rem[:len(rem)-4]
	}
	for len(rem) > 0 {
		var stype wiremessage.SectionType
		stype, rem, _ = wiremessage.ReadMsgSectionType(rem)
		switch stype {
		case wiremessage.SingleDocument:
			if r.body != nil {
				return errors.New("more than one body section")
			}
			doc, rest, ok := wiremessage.ReadMsgSectionSingleDocument(rem)
			if !ok {
				return errors.New("truncated body section")
			}
			if err := doc.Validate(); err != nil {
				return fmt.Errorf("the body is not valid BSON: %v", err)
			}
			r.body, rem = doc, rest
		case wiremessage.DocumentSequence:
			id, docs, rest, ok := wiremessage.ReadMsgSectionDocumentSequence(rem)
			if !ok {
				return errors.New("malformed document sequence section")
			}
			for i, d := range docs {
				if err := d.Validate(); err != nil {
					return fmt.Errorf("document %d of sequence %q is not valid BSON: %v", i, id, err)
				}
			}
			r.seqs = append(r.seqs, docSequence{identifier: id, docs: docs})
			rem = rest
		default:
			return fmt.Errorf("unknown section kind %d", stype)
		}
	}
	if r.body == nil {
		return errors.New("no body section")
	}
	seen := map[string]bool{}
	r.dup = duplicateKey(r.body, seen)
	for _, sq := range r.seqs {
		if seen[sq.identifier] && r.dup == "" {
			r.dup = sq.identifier
		}
		seen[sq.identifier] = true
	}
	if v, err := r.body.LookupErr("$db"); err == nil {
		db, ok := v.StringValueOK()
		if !ok {
			return errors.New("$db is not a string")
		}
		r.database = db
	}
	return nil
}

func (r *request) parseQuery(rem []byte) error {
	_, rem, ok := wiremessage.ReadQueryFlags(rem)
	if !ok {
		return errors.New("no flags")
	}
	ns, rem, ok := wiremessage.ReadQueryFullCollectionName(rem)
	if !ok {
		return errors.New("no collection name")
	}
	db, coll, _ := strings.Cut(ns, ".")
	if coll != "$cmd" || db == "" {
		return fmt.Errorf("only commands are supported (namespace %q is not db.$cmd)", ns)
	}
	if _, rem, ok = wiremessage.ReadQueryNumberToSkip(rem); !ok {
		return errors.New("no numberToSkip")
	}
	if _, rem, ok = wiremessage.ReadQueryNumberToReturn(rem); !ok {
		return errors.New("no numberToReturn")
	}
	q, rem, ok := wiremessage.ReadQueryQuery(rem)
	if !ok {
		return errors.New("truncated query document")
	}
	if err := q.Validate(); err != nil {
		return fmt.Errorf("the query is not valid BSON: %v", err)
	}
	if len(rem) > 0 {
		// A returnFieldsSelector: valid, but meaningless for a command.
		sel, rest, ok := wiremessage.ReadQueryReturnFieldsSelector(rem)
		if !ok || len(rest) != 0 {
			return errors.New("trailing bytes after the query")
		}
		if err := sel.Validate(); err != nil {
			return fmt.Errorf("the field selector is not valid BSON: %v", err)
		}
	}
	// A command with read preference comes wrapped: {$query: {...},
	// $readPreference: {...}}.
	r.dup = duplicateKey(q, map[string]bool{})
	if first, err := q.IndexErr(0); err == nil && (first.Key() == "$query" || first.Key() == "query") {
		if inner, ok := first.Value().DocumentOK(); ok {
			q = inner
			if d := duplicateKey(q, map[string]bool{}); r.dup == "" {
				r.dup = d
			}
		}
	}
	r.namespace = ns
	r.body = q
	r.database = db
	return nil
}

// appendMsg appends an OP_MSG with one body section and no flags.
func appendMsg(dst []byte, requestID, responseTo int32, body bsoncore.Document) []byte {
	idx, dst := wiremessage.AppendHeaderStart(dst, requestID, responseTo, opMsg)
	dst = wiremessage.AppendMsgFlags(dst, 0)
	dst = wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
	dst = append(dst, body...)
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
}

// appendReply appends an OP_REPLY with one document, the answer to an
// OP_QUERY command.
func appendReply(dst []byte, requestID, responseTo int32, doc bsoncore.Document) []byte {
	idx, dst := wiremessage.AppendHeaderStart(dst, requestID, responseTo, opReply)
	dst = wiremessage.AppendReplyFlags(dst, wiremessage.AwaitCapable)
	dst = wiremessage.AppendReplyCursorID(dst, 0)
	dst = wiremessage.AppendReplyStartingFrom(dst, 0)
	dst = wiremessage.AppendReplyNumberReturned(dst, 1)
	dst = append(dst, doc...)
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
}

// reply is an upstream answer, parsed.
type reply struct {
	requestID  int32
	responseTo int32
	moreToCome bool
	body       bsoncore.Document
}

// parseReply parses an upstream OP_MSG (or OP_REPLY) answer.
func parseReply(msg []byte) (*reply, error) {
	_, reqID, respTo, op, rem, ok := wiremessage.ReadHeader(msg)
	if !ok {
		return nil, errors.New("reply shorter than a header")
	}
	rp := &reply{requestID: reqID, responseTo: respTo}
	switch op {
	case opMsg:
		flags, rest, ok := wiremessage.ReadMsgFlags(rem)
		if !ok {
			return nil, errors.New("reply without flags")
		}
		rp.moreToCome = flags&wiremessage.MoreToCome != 0
		if flags&wiremessage.ChecksumPresent != 0 && len(rest) >= 4 {
			rest = rest[:len(rest)-4]
		}
		for len(rest) > 0 {
			var stype wiremessage.SectionType
			stype, rest, _ = wiremessage.ReadMsgSectionType(rest)
			switch stype {
			case wiremessage.SingleDocument:
				doc, r2, ok := wiremessage.ReadMsgSectionSingleDocument(rest)
				if !ok {
					return nil, errors.New("truncated reply body")
				}
				rp.body, rest = doc, r2
			case wiremessage.DocumentSequence:
				_, _, r2, ok := wiremessage.ReadMsgSectionRawDocumentSequence(rest)
				if !ok {
					return nil, errors.New("malformed reply document sequence")
				}
				rest = r2
			default:
				return nil, fmt.Errorf("unknown reply section kind %d", stype)
			}
		}
	case opReply:
		_, rest, ok := wiremessage.ReadReplyFlags(rem)
		if ok {
			_, rest, ok = wiremessage.ReadReplyCursorID(rest)
		}
		if ok {
			_, rest, ok = wiremessage.ReadReplyStartingFrom(rest)
		}
		if ok {
			_, rest, ok = wiremessage.ReadReplyNumberReturned(rest)
		}
		if ok {
			rp.body, _, ok = wiremessage.ReadReplyDocument(rest)
		}
		if !ok {
			return nil, errors.New("malformed OP_REPLY")
		}
	default:
		return nil, fmt.Errorf("unexpected reply op code %s", op)
	}
	if rp.body == nil {
		return nil, errors.New("reply without a body")
	}
	if err := rp.body.Validate(); err != nil {
		return nil, fmt.Errorf("reply body is not valid BSON: %v", err)
	}
	return rp, nil
}

// errorDoc returns {ok: 0, errmsg, code, codeName}.
func errorDoc(code int32, codeName, msg string) bsoncore.Document {
	return bsoncore.NewDocumentBuilder().
		AppendDouble("ok", 0).
		AppendString("errmsg", msg).
		AppendInt32("code", code).
		AppendString("codeName", codeName).
		Build()
}
