package postgres

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Limits of the protocol observer.
const (
	// maxDecodeLen is the largest message body the observer decodes.
	// Larger messages (PostgreSQL allows up to 1 GB) stream through; of
	// those it keeps only the first prefixLen bytes.
	maxDecodeLen = 1 << 20
	// prefixLen is what the observer keeps of a message larger than
	// maxDecodeLen: the names it starts with and the start of a statement.
	prefixLen = 8 << 10
	// retainLen is the largest body buffer kept between messages; a larger
	// one, grown for one large message, is dropped.
	retainLen = 64 << 10
)

// errBadFrame ends a connection whose stream is not a sequence of protocol
// messages: the server would close it too, and nothing after it could be
// recorded.
var errBadFrame = errors.New("postgres: invalid message length in the protocol stream")

// messageHandler receives the messages of one direction, in order. body is
// the message's body for the types the handler decodes (all of it, or its
// first prefixLen bytes when size exceeds maxDecodeLen), nil for the others;
// it is only valid during the call.
type messageHandler interface {
	message(typ byte, body []byte, size int) error
}

// streamHandler is a messageHandler that decides, at each header of a
// message to decode, how much of its body the scanner gathers, and can
// take a large body as it passes instead (the client side, for statements
// over the recording limit).
type streamHandler interface {
	// begin is called at the header of a message to decode; keep is what
	// the scanner would gather (the size, or prefixLen). at is where the
	// header starts in the current chunk (0 if it started in an earlier
	// one). It returns what to gather, or -1 to have the body passed to
	// part as it comes, and an error to stop at the header.
	begin(typ byte, size, keep, at int) (int, error)
	// part receives the body bytes of a streamed message, in order.
	part(p []byte)
}

// scanner splits one direction of the protocol into messages as its bytes
// pass, chunk by chunk, without copying them: a message's body is gathered
// only when its type is one to decode and the body spans chunks.
type scanner struct {
	decode *[256]bool    // the types whose body the handler needs
	sh     streamHandler // nil: bodies over maxDecodeLen keep prefixLen
	stream bool          // the current body goes to sh.part

	hdr    [5]byte // a header split across chunks
	hdrN   int
	inBody bool
	typ    byte
	size   int // body length of the current message
	left   int // body bytes still to come
	keep   int // body bytes to gather: size, prefixLen or 0
	buf    []byte
	broken bool
}

// feed passes the messages that p completes to h.
func (s *scanner) feed(p []byte, h messageHandler) error {
	if s.broken {
		return errBadFrame
	}
	chunk := len(p)
	for len(p) > 0 {
		if !s.inBody {
			var length int32
			at := chunk - len(p) - s.hdrN
			if at < 0 {
				at = 0
			}
			if s.hdrN == 0 && len(p) >= 5 {
				s.typ = p[0]
				length = int32(binary.BigEndian.Uint32(p[1:5]))
				p = p[5:]
			} else {
				n := copy(s.hdr[s.hdrN:], p)
				s.hdrN += n
				p = p[n:]
				if s.hdrN < len(s.hdr) {
					return nil
				}
				s.hdrN = 0
				s.typ = s.hdr[0]
				length = int32(binary.BigEndian.Uint32(s.hdr[1:5]))
			}
			if length < 4 {
				s.broken = true
				return errBadFrame
			}
			s.size = int(length) - 4
			s.left = s.size
			s.keep = 0
			s.stream = false
			if s.decode[s.typ] {
				s.keep = s.size
				if s.size > maxDecodeLen {
					s.keep = prefixLen
				}
				if s.sh != nil {
					keep, err := s.sh.begin(s.typ, s.size, s.keep, at)
					if err != nil {
						return err
					}
					if keep < 0 {
						s.keep, s.stream = 0, true
					} else {
						s.keep = keep
					}
				}
			}
			if s.left == 0 {
				var body []byte
				if s.keep == 0 && s.decode[s.typ] {
					body = p[:0]
				}
				if err := h.message(s.typ, body, 0); err != nil {
					return err
				}
				continue
			}
			s.inBody = true
			if s.keep > 0 && len(p) >= s.keep {
				// The part to decode is all in this chunk: no copy.
				body := p[:s.keep]
				n := min(len(p), s.left)
				p = p[n:]
				s.left -= n
				if s.left == 0 {
					s.inBody = false
					if err := h.message(s.typ, body, s.size); err != nil {
						return err
					}
					continue
				}
				// A large message: keep its prefix for the end.
				s.buf = append(s.buf[:0], body...)
				s.keep = 0
				continue
			}
		}
		n := min(len(p), s.left)
		if s.stream {
			s.sh.part(p[:n])
		} else if want := s.keep - len(s.buf); want > 0 {
			s.buf = append(s.buf, p[:min(n, want)]...)
		}
		p = p[n:]
		s.left -= n
		if s.left > 0 {
			return nil
		}
		s.inBody = false
		var body []byte
		if s.decode[s.typ] {
			body = s.buf
		}
		err := s.message(h, body)
		if err != nil {
			return err
		}
	}
	return nil
}

// atBoundary reports whether the bytes fed so far end with a whole
// message: bytes of the engine's own can be written after them.
func (s *scanner) atBoundary() bool {
	return !s.broken && !s.inBody && s.hdrN == 0
}

// toBoundary returns how many bytes of p, the next chunk, complete the
// message in flight: 0 at a boundary, len(p) if p does not complete it.
func (s *scanner) toBoundary(p []byte) int {
	switch {
	case s.broken:
		return 0
	case s.inBody:
		return min(s.left, len(p))
	case s.hdrN == 0:
		return 0
	}
	need := len(s.hdr) - s.hdrN
	if len(p) < need {
		return len(p)
	}
	var hdr [5]byte
	copy(hdr[:], s.hdr[:s.hdrN])
	copy(hdr[s.hdrN:], p[:need])
	length := int(int32(binary.BigEndian.Uint32(hdr[1:5])))
	if length < 4 {
		return 0 // a broken stream: nothing more is written
	}
	return min(need+length-4, len(p))
}

// message hands a gathered body to h and readies the buffer for the next.
func (s *scanner) message(h messageHandler, body []byte) error {
	err := h.message(s.typ, body, s.size)
	if cap(s.buf) > retainLen {
		s.buf = nil
	} else {
		s.buf = s.buf[:0]
	}
	return err
}

// Frontend and backend message types the observer acts on.
var (
	frontendDecode = decodeSet('Q', 'P', 'B', 'E', 'D', 'C', 'F')
	backendDecode  = decodeSet('C', 'E', 'Z', 't')
)

func decodeSet(types ...byte) *[256]bool {
	var set [256]bool
	for _, t := range types {
		set[t] = true
	}
	return &set
}

// frontendObserver watches the client's messages: it queues each request
// the server will answer, before forwarding it, and counts COPY data.
type frontendObserver struct {
	log    *connLog
	scan   scanner
	now    time.Time  // when the current chunk is forwarded, once needed
	batch  []*pending // requests of the current chunk
	spare  []*pending // answered requests, for reuse
	copyIn int64      // CopyData payload so far

	big *bigStatement // the statement over the limit being read
	bb  *bigBind      // the Bind larger than maxDecodeLen being read
	// holdAt is where the current chunk stops being forwarded (-1: it
	// is forwarded whole); holding is set once a refused message has
	// started: nothing more is forwarded.
	holdAt  int
	holding bool
	checked bool // the session log's health was checked for this chunk
	// reserved is what the current message holds of the engine's budget
	// for large messages.
	reserved int

	// With write-ahead (connLog.wa): the client side's view of the
	// statements and portals, its own decoder of binary values, and
	// where the header of the message being read is: at hdrAt in chunk
	// number hdrChunk (chunks counts them).
	cs       clientState
	values   valueDecoder
	chunks   int
	hdrChunk int
	hdrAt    int
}

func newFrontendObserver(l *connLog) *frontendObserver {
	f := &frontendObserver{log: l, scan: scanner{decode: frontendDecode}}
	f.scan.sh = f
	return f
}

// observe reads a chunk of client bytes, before it is forwarded.
func (f *frontendObserver) observe(chunk []byte) error {
	_, err := f.observeFront(chunk)
	return err
}

// midMessage reports whether the client has started a message it has not
// finished.
func (f *frontendObserver) midMessage() bool { return !f.scan.atBoundary() }

// observeFront reads a chunk of client bytes, before it is forwarded, and
// returns how many of them to forward: all of them, but when a request is
// refused (a *refusal error, once the refused message is read whole), the
// bytes before its header.
func (f *frontendObserver) observeFront(chunk []byte) (int, error) {
	f.now = time.Time{}
	f.chunks++
	f.holdAt, f.checked = -1, false
	if f.holding {
		f.holdAt = 0
	}
	err := f.scan.feed(chunk, f)
	fwd := len(chunk)
	if f.holdAt >= 0 {
		fwd = f.holdAt
	}
	f.log.copyIn.Store(f.copyIn)
	if len(f.batch) > 0 {
		var perr error
		f.spare, perr = f.log.push(f.batch, f.spare)
		if perr != nil && f.log.wa != nil {
			f.unqueued(f.batch)
		}
		if perr != nil && err == nil {
			err = perr
		}
		clear(f.batch)
		f.batch = f.batch[:0]
	}
	return fwd, err
}

// begin decides, at the header of a message to decode, whether the
// session log can take it: while the session log cannot be written, every
// request is refused; a Query or Parse whose statement is over the
// recording limit is read as it passes (bigStatement), and, unless the
// project records the ends of such statements, held back and refused.
func (f *frontendObserver) begin(typ byte, size, keep, at int) (int, error) {
	f.hdrChunk, f.hdrAt = f.chunks, at
	keep, err := f.decide(typ, size, keep, at)
	if err != nil {
		return keep, err
	}
	hold := keep
	switch {
	case keep < 0 && f.bb != nil:
		hold = bigBindBudget
	case keep < 0:
		hold = 2 * endsLen
	}
	if hold >= largeMessage {
		if !f.log.budget.reserve(hold) {
			f.bb, f.big = nil, nil
			f.holdAt, f.holding = at, true
			msg := busyMessage(size)
			it := &pending{kind: pendingQuery, time: f.log.now()}
			it.err = &failure{code: sqlStateOutOfMemory, message: msg, time: it.time}
			f.log.emit(it, sessionlog.KindQuery, "[not read: the gateway's memory for large messages is in use]", nil, OutcomeRefused, it.time)
			return keep, &refusal{code: sqlStateOutOfMemory, message: msg}
		}
		f.reserved = hold
	}
	return keep, nil
}

// releaseBudget gives back what the current message held of the engine's
// budget: at its end, or when the connection ends in its middle.
func (f *frontendObserver) releaseBudget() {
	f.log.budget.release(f.reserved)
	f.reserved = 0
}

// decide is begin without the engine's overall budget.
func (f *frontendObserver) decide(typ byte, size, keep, at int) (int, error) {
	switch typ {
	case 'Q', 'P', 'B', 'E', 'F':
	default:
		return keep, nil
	}
	if !f.checked {
		f.checked = true
		if herr := f.log.healthErr(); herr != nil {
			f.holdAt, f.holding = at, true
			msg := healthMessage(herr)
			it := &pending{kind: pendingQuery, time: f.log.now()}
			it.err = &failure{code: sqlStateIOError, message: msg, time: it.time}
			f.log.emit(it, sessionlog.KindQuery, "[not read: the session log cannot be written]", nil, OutcomeRefused, it.time)
			return keep, &refusal{code: sqlStateIOError, message: msg}
		}
	}
	if typ == 'B' && size > maxDecodeLen {
		f.bb = newBigBind()
		return -1, nil
	}
	if typ != 'Q' && typ != 'P' {
		return keep, nil
	}
	limit, mode := f.log.limits()
	// The statement of a Query is its body but the final NUL; that of a
	// Parse is at most its body but a NUL, a NUL and the count of
	// parameter types: the limit counts the statement's name and types
	// too.
	stmt := int64(size - 1)
	if typ == 'P' {
		stmt = int64(size - 4)
	}
	if stmt <= limit {
		return size, nil
	}
	refuse := mode != tunnel.OversizeRecordEnds
	if refuse {
		f.holdAt, f.holding = at, true
	}
	f.big = newBigStatement(typ, size, refuse)
	return -1, nil
}

// part takes the body bytes of a statement over the limit.
func (f *frontendObserver) part(p []byte) {
	switch {
	case f.big != nil:
		f.big.write(p)
	case f.bb != nil:
		f.bb.write(p)
	}
}

// endBig completes the statement over the limit that has just been read:
// it is recorded as refused, and the relay stops, or it is queued with
// its ends, as forwarded.
func (f *frontendObserver) endBig() error {
	b := f.big
	f.big = nil
	st := b.text(f)
	if b.refuse {
		limit, _ := f.log.limits()
		msg := refusedMessage(b.n, limit)
		it := &pending{kind: pendingQuery, time: f.log.now(), stmt: st}
		it.err = &failure{code: sqlStateProgramLimitExceeded, message: msg, time: it.time}
		kind := sessionlog.KindQuery
		if b.typ == 'P' {
			kind = sessionlog.KindExecute
		}
		f.log.emit(it, kind, st.text, nil, OutcomeRefused, it.time)
		return &refusal{code: sqlStateProgramLimitExceeded, message: msg}
	}
	if b.typ == 'Q' {
		it := f.add(pendingQuery)
		it.stmt = st
		return f.started(it)
	}
	it := f.add(pendingParse)
	it.name, it.stmt = string(b.name), st
	return f.started(it)
}

// started follows request it, filled in, on the client side and, for a
// statement, writes its start record, when the session log is written
// ahead; an error refuses it.
func (f *frontendObserver) started(it *pending) error {
	if f.log.wa == nil {
		return nil
	}
	f.followClient(it)
	switch it.kind {
	case pendingQuery, pendingExecute, pendingFunctionCall:
		return f.writeAhead(it)
	}
	return nil
}

// add queues a request of the current chunk and returns it, for its
// fields to be filled in.
func (f *frontendObserver) add(kind pendingKind) *pending {
	if f.now.IsZero() {
		f.now = f.log.now()
	}
	var it *pending
	if n := len(f.spare); n > 0 {
		it = f.spare[n-1]
		f.spare[n-1] = nil
		f.spare = f.spare[:n-1]
	} else {
		it = new(pending)
	}
	it.kind, it.time, it.copyMark = kind, f.now, f.copyIn
	f.batch = append(f.batch, it)
	return it
}

func (f *frontendObserver) message(typ byte, body []byte, size int) error {
	if f.reserved > 0 {
		defer f.releaseBudget()
	}
	if f.big != nil && (typ == 'Q' || typ == 'P') {
		return f.endBig()
	}
	if f.bb != nil && typ == 'B' {
		it := f.add(pendingBind)
		f.bb.finish(f, it)
		f.bb = nil
		return f.started(it)
	}
	switch typ {
	case 'Q':
		it := f.add(pendingQuery)
		it.stmt = f.query(body, size)
		return f.started(it)
	case 'P':
		it := f.add(pendingParse)
		it.name, it.stmt = f.parse(body, size)
		return f.started(it)
	case 'B':
		it := f.add(pendingBind)
		f.bind(it, body, size)
		return f.started(it)
	case 'E':
		// Execute is decoded by hand, as it is on every extended query's
		// path: pgproto3's decoder allocates for the portal name.
		it := f.add(pendingExecute)
		it.name = "\x00"
		if i := bytes.IndexByte(body, 0); i >= 0 {
			it.name = string(body[:i])
		}
		return f.started(it)
	case 'D':
		var m pgproto3.Describe
		it := f.add(pendingDescribe)
		it.name = "\x00"
		if len(body) == size && m.Decode(body) == nil {
			it.object, it.name = m.ObjectType, m.Name
		}
	case 'C':
		var m pgproto3.Close
		it := f.add(pendingClose)
		it.name = "\x00"
		if len(body) == size && m.Decode(body) == nil {
			it.object, it.name = m.ObjectType, m.Name
		}
		return f.started(it)
	case 'S':
		f.add(pendingSync)
	case 'F':
		it := f.add(pendingFunctionCall)
		f.functionCall(it, body, size)
		return f.started(it)
	case 'd':
		f.copyIn += int64(size)
	}
	return nil
}

// query returns the statement of a Query message.
func (f *frontendObserver) query(body []byte, size int) *statement {
	if len(body) < size {
		return f.truncated(string(body), fmt.Sprintf("statement of %d bytes", size-1))
	}
	var m pgproto3.Query
	if err := m.Decode(body); err != nil {
		return &statement{maskResult: maskResult{text: "[malformed Query message]"}}
	}
	return f.statement(m.String)
}

// parse returns the statement name and text of a Parse message.
func (f *frontendObserver) parse(body []byte, size int) (string, *statement) {
	if len(body) < size {
		// Too large to decode: the name, then the start of the text.
		name, rest, ok := bytes.Cut(body, []byte{0})
		if !ok {
			return "\x00", f.truncated("", fmt.Sprintf("Parse message of %d bytes", size))
		}
		return string(name), f.truncated(string(rest), fmt.Sprintf("Parse message of %d bytes", size))
	}
	var m pgproto3.Parse
	if err := m.Decode(body); err != nil {
		return "\x00", &statement{maskResult: maskResult{text: "[malformed Parse message]"}}
	}
	st := f.statement(m.Query)
	if len(m.ParameterOIDs) > 0 {
		st.paramOIDs = m.ParameterOIDs
		st.parseOIDs = m.ParameterOIDs
	}
	return m.Name, st
}

// statement masks a statement's text.
func (f *frontendObserver) statement(text string) *statement {
	return &statement{maskResult: maskStatement(text, f.log.extra())}
}

// truncated returns the statement of a message too large to decode, of
// which text is the start; what says how large it was.
func (f *frontendObserver) truncated(text, what string) *statement {
	text = strings.TrimRight(text, "\x00")
	st := f.statement(validPrefix(text, prefixLen))
	st.text += "… [truncated: " + what + "]"
	return st
}

// bind fills in the request of a Bind message, its parameter values
// rendered as the session log records them.
func (f *frontendObserver) bind(it *pending, body []byte, size int) {
	it.name, it.stmtName = "\x00", "\x00"
	if len(body) < size {
		// Too large to decode: the names it starts with.
		if portal, rest, ok := bytes.Cut(body, []byte{0}); ok {
			if stmt, _, ok := bytes.Cut(rest, []byte{0}); ok {
				it.name, it.stmtName = string(portal), string(stmt)
			}
		}
		it.params = []string{fmt.Sprintf("[parameters not recorded: Bind message of %d bytes]", size)}
		return
	}
	var m pgproto3.Bind
	if err := m.Decode(body); err != nil {
		it.params = []string{"[malformed Bind message]"}
		return
	}
	it.name, it.stmtName = m.DestinationPortal, m.PreparedStatement
	it.params, it.binary = f.bindParams(m.Parameters, func(i int) int16 {
		switch len(m.ParameterFormatCodes) {
		case 0:
			return 0
		case 1:
			return m.ParameterFormatCodes[0]
		}
		if i < len(m.ParameterFormatCodes) {
			return m.ParameterFormatCodes[i]
		}
		return 0
	})
}

// functionCall fills in the request of a FunctionCall message.
func (f *frontendObserver) functionCall(it *pending, body []byte, size int) {
	var m pgproto3.FunctionCall
	switch {
	case len(body) < size:
		if len(body) >= 4 {
			m.Function = binary.BigEndian.Uint32(body)
		}
		it.params = []string{fmt.Sprintf("[arguments not recorded: FunctionCall message of %d bytes]", size)}
	case m.Decode(body) != nil:
		it.stmt = &statement{maskResult: maskResult{text: "[malformed FunctionCall message]"}}
		return
	default:
		it.params = f.renderParams(m.Arguments, func(i int) int16 {
			switch len(m.ArgFormatCodes) {
			case 0:
				return 0
			case 1:
				return int16(m.ArgFormatCodes[0])
			}
			if i < len(m.ArgFormatCodes) {
				return int16(m.ArgFormatCodes[i])
			}
			return 0
		})
	}
	it.stmt = &statement{maskResult: maskResult{text: "function call oid " + strconv.FormatUint(uint64(m.Function), 10)}}
}

// renderParams renders parameter values as the session log records them:
// text values as they are, binary ones as \x and hexadecimal digits, NULL as
// NULL, each cut at maxParamLen, and with the project's mask patterns
// applied. The values may point into the relay's buffer: the result does
// not. (A Bind's binary values are decoded instead: bindParams.)
func (f *frontendObserver) renderParams(values [][]byte, format func(int) int16) []string {
	if len(values) == 0 {
		return nil
	}
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = applyPatterns(renderParam(v, format(i)), f.log.extra())
	}
	return out
}

func renderParam(v []byte, format int16) string {
	switch {
	case v == nil:
		return "NULL"
	case format == 1:
		n := min(len(v), maxParamLen/2)
		s := `\x` + hex.EncodeToString(v[:n])
		if n < len(v) {
			s += fmt.Sprintf("… [%d bytes]", len(v))
		}
		return s
	case len(v) > maxParamLen:
		return validPrefix(string(v[:maxParamLen]), maxParamLen) + fmt.Sprintf("… [%d bytes]", len(v))
	}
	return string(v)
}

// backendObserver watches the server's messages: it completes the oldest
// pending request with each answer, in protocol order, and records the
// events.
type backendObserver struct {
	log  *connLog
	scan scanner
	cur  *pending // the oldest pending request, once looked up
	// skipping is set after an error in the extended protocol: the server
	// then ignores every message up to the next Sync.
	skipping bool
	state    statementState
	group    []*pending   // reused by readyForQuery
	values   valueDecoder // decodes the binary values of Binds
}

func newBackendObserver(l *connLog) *backendObserver {
	return &backendObserver{log: l, scan: scanner{decode: backendDecode}}
}

// observe reads a chunk of server bytes, before it is forwarded.
func (b *backendObserver) observe(chunk []byte) error {
	return b.scan.feed(chunk, b)
}

// head returns the oldest pending request, or nil.
func (b *backendObserver) head() *pending {
	if b.cur == nil {
		b.cur = b.log.peek()
	}
	return b.cur
}

// done removes the oldest pending request, answered.
func (b *backendObserver) done() {
	it := b.cur
	b.log.pop()
	b.cur = nil
	b.log.release(it)
}

func (b *backendObserver) message(typ byte, body []byte, size int) error {
	switch typ {
	case 'D': // DataRow: counted, never decoded
		if h := b.head(); h != nil {
			h.stmtRows++
		}
	case 'd': // CopyData
		if h := b.head(); h != nil {
			h.bytes += int64(size)
		}
	case 'C':
		b.commandComplete(body, size)
	case 'E':
		b.errorResponse(body, size)
	case 'I': // EmptyQueryResponse
		if h := b.head(); h != nil {
			switch h.kind {
			case pendingQuery:
				h.empty = true
			case pendingExecute:
				b.finishExecute(h, OutcomeEmpty)
			}
		}
	case 's': // PortalSuspended
		if h := b.head(); h != nil && h.kind == pendingExecute {
			h.rows = h.stmtRows
			b.finishExecute(h, OutcomeSuspended)
		}
	case '1': // ParseComplete
		if h := b.head(); h != nil && h.kind == pendingParse {
			b.prepared(h.name, h.stmt, h)
			b.done()
		}
	case '2': // BindComplete
		if h := b.head(); h != nil && h.kind == pendingBind {
			b.bindValues(h, b.state.statement(h.stmtName))
			b.state.setPortal(h.name, portal{stmt: b.state.statement(h.stmtName), stmtName: h.stmtName, params: h.params})
			b.done()
		}
	case '3': // CloseComplete
		if h := b.head(); h != nil && h.kind == pendingClose {
			if h.object == 'S' {
				b.state.deleteStatement(h.name)
			} else {
				delete(b.state.portals, h.name)
			}
			b.done()
		}
	case 't': // ParameterDescription: a Describe of a statement goes on
		if h := b.head(); h != nil && h.kind == pendingDescribe && h.object == 'S' {
			b.parameterDescription(b.state.statement(h.name), body, size)
		}
	case 'T', 'n': // RowDescription, NoData: the end of a Describe
		if h := b.head(); h != nil && h.kind == pendingDescribe {
			b.done()
		}
	case 'G': // CopyInResponse
		if h := b.head(); h != nil {
			h.copyIn, h.inCopyIn = true, true
		}
	case 'H': // CopyOutResponse
		if h := b.head(); h != nil {
			h.copyOut = true
		}
	case 'W': // CopyBothResponse
		if h := b.head(); h != nil {
			h.copyIn, h.inCopyIn, h.copyOut = true, true, true
		}
	case 'Z':
		var m pgproto3.ReadyForQuery
		_ = m.Decode(body)
		b.readyForQuery(m.TxStatus)
	}
	return nil
}

// endCopyIn counts the client's COPY data of request h, the oldest
// pending one, whose COPY FROM STDIN has just ended.
func (b *backendObserver) endCopyIn(h *pending) {
	if h.inCopyIn {
		b.countCopyIn(h, b.log.copyEnd())
	}
}

// countCopyIn adds the COPY data the client sent from h's mark to end.
func (b *backendObserver) countCopyIn(h *pending, end int64) {
	if end > h.copyMark {
		h.bytes += end - h.copyMark
		h.copyMark = end
	}
	h.inCopyIn = false
}

func (b *backendObserver) commandComplete(body []byte, size int) {
	h := b.head()
	if h == nil {
		return
	}
	var m pgproto3.CommandComplete
	var tag string
	if len(body) == size && m.Decode(body) == nil {
		tag = string(m.CommandTag)
	} else {
		tag = validPrefix(strings.TrimRight(string(body), "\x00"), 256)
	}
	b.endCopyIn(h)
	rows := h.stmtRows
	if rows == 0 {
		rows = rowsOf(tag)
	}
	h.stmtRows = 0
	switch h.kind {
	case pendingQuery:
		h.rows += rows
		if h.tags != "" {
			h.tags += "; "
		}
		h.tags += tag
		b.sqlCommand(tag, h.stmt)
	case pendingExecute:
		h.rows = rows
		if p, ok := b.state.portal(h.name); ok {
			b.sqlCommand(tag, p.stmt)
		}
		b.finishExecute(h, tag)
	}
}

// sqlCommand follows the SQL commands that change the prepared statements
// and portals: PREPARE and DECLARE, whose name it reads from the statement
// when it is the only one, DEALLOCATE, DISCARD and CLOSE, after which it
// forgets the named statements (or portals) rather than keep a stale text.
func (b *backendObserver) sqlCommand(tag string, st *statement) {
	switch tag {
	case "PREPARE":
		if st != nil {
			if name, ok := sqlIdentifier(prepareName, st.text); ok && singleStatement(st.text) {
				b.prepared(name, st, nil)
				return
			}
		}
		b.state.clearNamedStatements()
	case "DECLARE CURSOR":
		if st != nil {
			if name, ok := sqlIdentifier(declareName, st.text); ok && singleStatement(st.text) {
				b.state.setPortal(name, portal{stmt: st})
				return
			}
		}
		b.clearNamedPortals()
	case "DEALLOCATE", "DEALLOCATE ALL", "DISCARD ALL":
		b.state.clearNamedStatements()
		if tag == "DISCARD ALL" {
			b.clearNamedPortals()
		}
	case "CLOSE CURSOR", "CLOSE CURSOR ALL":
		b.clearNamedPortals()
	}
}

// singleStatement reports whether text holds no more than one statement, as
// far as a semicolon shows: one inside a literal is taken for a separator,
// which errs on the safe side.
func singleStatement(text string) bool {
	return !strings.Contains(strings.TrimRight(text, " \t\r\n;"), ";")
}

func (b *backendObserver) clearNamedPortals() {
	for name := range b.state.portals {
		if name != "" {
			delete(b.state.portals, name)
		}
	}
}

// prepared records a statement the server has prepared. When the
// connection's statements hold too much text already, the statement is
// recorded now, on its own (outcome "prepared"), and remembered without its
// text; parse is the Parse request, nil for a SQL PREPARE (recorded as a
// query already).
func (b *backendObserver) prepared(name string, st *statement, parse *pending) {
	if b.state.setStatement(name, st) {
		return
	}
	if parse != nil {
		b.log.emit(parse, sessionlog.KindExecute, st.text, nil, outcomePrepared, b.log.now())
	}
	stub := &statement{maskResult: maskResult{
		text:      "[prepared statement " + strconv.Quote(name) + ", recorded when it was prepared]",
		sensitive: st.sensitive,
	}, paramOIDs: st.paramOIDs}
	stub.size = len(stub.text)
	b.state.deleteStatement(name)
	if b.state.stmts == nil {
		b.state.stmts = make(map[string]*statement)
	}
	b.state.stmts[name] = stub
}

// finishExecute records an Execute the server has answered.
func (b *backendObserver) finishExecute(h *pending, outcome string) {
	b.endCopyIn(h)
	var pp *portal
	if p, ok := b.state.portal(h.name); ok {
		pp = &p
	}
	b.emitExecute(h, pp, outcome, b.log.now())
	b.done()
}

func (b *backendObserver) emitExecute(h *pending, p *portal, outcome string, end time.Time) {
	st, text, params := b.log.describeStatement(p, h.name)
	if st != nil {
		h.stmt = st // for the error message's scrubbing
	}
	if h.err != nil && outcome == OutcomeError {
		end = h.err.time
	}
	b.log.emit(h, kindOf(h, sessionlog.KindExecute), text, params, outcome, end)
}

func (b *backendObserver) errorResponse(body []byte, size int) {
	now := b.log.now()
	f := &failure{time: now, message: fmt.Sprintf("[error response of %d bytes]", size)}
	var m pgproto3.ErrorResponse
	if len(body) == size && m.Decode(body) == nil {
		f.code, f.message = m.Code, m.Message
	}
	h := b.head()
	if h == nil {
		return // a FATAL error of an idle connection
	}
	b.endCopyIn(h)
	if h.err == nil {
		h.err = f
	}
	switch h.kind {
	case pendingParse, pendingBind, pendingDescribe, pendingExecute, pendingClose:
		// The server now skips to the next Sync, whose ReadyForQuery
		// settles the whole group.
		b.skipping = true
	}
}

// readyForQuery completes the request a ReadyForQuery answers (a Query, a
// FunctionCall or a Sync) and settles the requests before it that the
// server skipped.
func (b *backendObserver) readyForQuery(txStatus byte) {
	now := b.log.now()
	group := b.log.popGroup(b.skipping, b.group[:0])
	b.cur = nil
	b.skipping = false
	if len(group) > 0 {
		last := group[len(group)-1]
		if last.kind == pendingSync || last.kind == pendingQuery || last.kind == pendingFunctionCall {
			b.settle(group[:len(group)-1], OutcomeSkipped, now)
			b.complete(last, now)
		} else {
			b.settle(group, OutcomeSkipped, now)
		}
	}
	if txStatus == 'I' {
		// Out of a transaction, only WITH HOLD cursors survive; they are
		// forgotten too, rather than kept stale.
		clear(b.state.portals)
	}
	b.log.release(group...)
	clear(group)
	b.group = group[:0]
}

// complete records the request a ReadyForQuery answered.
func (b *backendObserver) complete(it *pending, now time.Time) {
	switch it.kind {
	case pendingQuery:
		// A simple Query replaces the unnamed statement and portal, as
		// if it used them, and drops them when it is done.
		b.state.deleteStatement("")
		delete(b.state.portals, "")
		outcome := it.tags
		switch {
		case it.err != nil:
			outcome = OutcomeError
		case outcome == "" && it.empty:
			outcome = OutcomeEmpty
		case outcome == "":
			outcome = OutcomeOK
		}
		end := now
		if it.err != nil {
			end = it.err.time
		}
		b.log.emit(it, kindOf(it, sessionlog.KindQuery), it.stmt.text, nil, outcome, end)
	case pendingFunctionCall:
		outcome := OutcomeOK
		end := now
		if it.err != nil {
			outcome, end = OutcomeError, it.err.time
		}
		b.log.emit(it, sessionlog.KindFunctionCall, it.stmt.text, it.params, outcome, end)
	case pendingSync:
		if it.err != nil {
			// The implicit COMMIT at the Sync failed (a deferred
			// constraint...): no statement of its own.
			b.log.emit(it, sessionlog.KindExecute, "[implicit commit at Sync]", nil, OutcomeError, it.err.time)
		}
	}
}

// settle records requests that got no answer of their own: those the server
// skipped after an error (outcome skipped) or that the closing of the
// connection left unanswered (outcome unknown: it may have run, even
// committed). The request that failed
// passes its error on to the first Execute after it, which it kept from
// running; if there is none, it is recorded itself, with its statement.
func (b *backendObserver) settle(items []*pending, unanswered string, now time.Time) {
	if len(items) == 0 {
		return
	}
	ov := &overlay{base: &b.state}
	for i, it := range items {
		it.rows += it.stmtRows
		it.stmtRows = 0
		if it.inCopyIn {
			next := b.log.peek() // what follows the group
			if i+1 < len(items) {
				next = items[i+1]
			}
			b.countCopyIn(it, b.log.copyEndBefore(next))
		}
		if it.kind == pendingBind {
			b.bindValues(it, ov.statement(it.stmtName))
		}
		if it.err != nil && it.name == "" {
			// The server drops the unnamed statement (portal) when a
			// Parse (Bind) of a new one starts, even if it fails.
			switch it.kind {
			case pendingParse:
				b.state.deleteStatement("")
			case pendingBind:
				delete(b.state.portals, "")
			}
		}
		if it.err != nil && it.kind != pendingExecute && it.kind != pendingQuery &&
			it.kind != pendingFunctionCall && it.kind != pendingSync && !it.inherited {
			passed := false
			for _, next := range items[i+1:] {
				if next.kind == pendingSync {
					break
				}
				if next.kind == pendingExecute {
					if next.err == nil {
						next.err, next.inherited = it.err, true
					}
					passed = true
					break
				}
			}
			if !passed {
				b.emitFailed(it, ov)
			}
		}
		switch it.kind {
		case pendingParse, pendingBind, pendingClose:
			ov.apply(it)
		case pendingExecute:
			outcome := unanswered
			if it.err != nil {
				outcome = OutcomeError
			}
			b.emitExecute(it, ov.portal(it.name), outcome, now)
		case pendingQuery, pendingFunctionCall:
			outcome := unanswered
			end := now
			if it.err != nil {
				outcome, end = OutcomeError, it.err.time
			}
			kind := kindOf(it, sessionlog.KindQuery)
			if it.kind == pendingFunctionCall {
				kind = sessionlog.KindFunctionCall
			}
			b.log.emit(it, kind, it.stmt.text, it.params, outcome, end)
		case pendingSync:
			b.complete(it, now)
		}
	}
}

// emitFailed records a Parse, Bind, Describe or Close that failed with no
// Execute after it: the statement it was about, and the error.
func (b *backendObserver) emitFailed(it *pending, ov *overlay) {
	var text string
	var params []string
	switch it.kind {
	case pendingParse:
		text = it.stmt.text
	case pendingBind:
		_, text, params = b.log.describeStatement(&portal{stmt: ov.statement(it.stmtName), stmtName: it.stmtName, params: it.params}, it.name)
		if st := ov.statement(it.stmtName); st != nil {
			it.stmt = st
		}
	default:
		if it.object == 'S' {
			_, text, _ = b.log.describeStatement(&portal{stmt: ov.statement(it.name), stmtName: it.name}, "")
			it.stmt = ov.statement(it.name)
		} else {
			var st *statement
			st, text, params = b.log.describeStatement(ov.portal(it.name), it.name)
			it.stmt = st
		}
	}
	b.log.emit(it, sessionlog.KindExecute, text, params, OutcomeError, it.err.time)
}

// finish records what the connection's end left unanswered; it runs once
// both directions have stopped.
func (b *backendObserver) finish() {
	now := b.log.now()
	b.cur = nil
	if b.skipping {
		// The server was skipping to a Sync: what comes before it was
		// not run.
		b.settle(b.log.popGroup(true, nil), OutcomeSkipped, now)
		b.skipping = false
	}
	for {
		group := b.log.popGroup(false, nil)
		if len(group) == 0 {
			return
		}
		b.settle(group, OutcomeUnknown, now)
	}
}
