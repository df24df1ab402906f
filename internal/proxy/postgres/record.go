package postgres

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

// Outcomes the engine records besides command tags.
const (
	OutcomeError   = "error"   // the server answered with an ErrorResponse
	OutcomeSkipped = "skipped" // not run: an earlier message of the same pipeline failed
	// OutcomeUnknown is a request whose connection closed before its
	// answer: it may have run, even committed.
	OutcomeUnknown = "outcome unknown"
	// OutcomeCancelled is a request stopped by the cancel the engine sent
	// when its session ended (the database answered 57014).
	OutcomeCancelled = "cancelled"
	OutcomeSuspended = "suspended" // an Execute with a row limit stopped at it (PortalSuspended)
	OutcomeEmpty     = "empty"     // an empty statement (EmptyQueryResponse)
	OutcomeOK        = "ok"        // a FunctionCall's result; a connection opened or closed
	// OutcomeTerminated ends a connection ended by Session.End; the
	// event's error code is the end's reason, its message the words the
	// client was told.
	OutcomeTerminated = "terminated"
)

// Limits of the session log of one connection.
const (
	// maxPending bounds the requests forwarded and not yet answered. A
	// client that pipelines more without reading the answers has its
	// connection closed: the engine does not relay what it cannot record.
	maxPending = 1 << 18
	// maxStatementBytes bounds the text of the prepared statements and
	// portals remembered for one connection; past it, a statement's text is
	// recorded when it is prepared (outcome "prepared") instead of with
	// each Execute.
	maxStatementBytes = 16 << 20
	// maxParamLen bounds the text recorded for one parameter value; a
	// binary value shows half as many bytes, in hexadecimal.
	maxParamLen = 1024
)

// outcomePrepared is the outcome of a Parse recorded on its own because the
// connection's prepared statements are too large to remember.
const outcomePrepared = "prepared"

// errTooManyPending ends a connection whose client pipelines more than
// maxPending requests.
var errTooManyPending = errors.New("postgres: the client sent too many requests without reading the answers")

// connLog is the session log of one relayed connection: the state the two
// directions of the relay share, which is the FIFO of requests waiting for
// their answers, and how the events are made.
type connLog struct {
	rec       sessionlog.Recorder
	sessionID string
	connID    string
	database  string
	sess      *common.Session // for its mask patterns and limits, which may change
	// maxStatement and oversize are the Config's statement limits (zero:
	// the session's, see limits).
	maxStatement int64
	oversize     string
	health       sessionlog.HealthReporter // nil: the recorder cannot fail
	// wa, when the recorder can, takes each statement's start record
	// before the statement is forwarded (write-ahead); nil: the events
	// are only recorded when the answers come.
	wa     sessionlog.WriteAheadRecorder
	budget *byteBudget // the engine's, for large messages; nil: none
	now    func() time.Time
	// client is what the client asked for at startup (clientRequest):
	// the statement of the connect event.
	client string

	// cancelling is set when the session's end has sent a cancel for the
	// connection: a 57014 answer is then recorded as OutcomeCancelled.
	cancelling atomic.Bool
	// idleCh, when not nil, is closed when no request waits for its
	// answer any more (idle).
	idleCh chan struct{}

	// copyIn is the total payload of the CopyData messages the client has
	// sent, published by the client side before it forwards them.
	copyIn atomic.Int64

	mu    sync.Mutex
	queue []*pending // queue[head:] waits for answers, oldest first
	head  int
	// free holds answered requests for the client side to reuse: the
	// server side releases them into released, which it owns, and hands
	// them over when it next takes the lock.
	free     []*pending
	released []*pending
}

// Bounds of the reuse of pending requests.
const (
	maxFree   = 256 // requests kept for reuse
	spareTake = 64  // requests the client side takes at once
)

// pendingKind is the frontend message a pending request stands for.
type pendingKind uint8

const (
	pendingQuery pendingKind = iota + 1
	pendingParse
	pendingBind
	pendingDescribe
	pendingExecute
	pendingClose
	pendingSync
	pendingFunctionCall
)

// pending is one frontend message that the server answers, from the time it
// is forwarded until its answer is complete. The client side fills the
// request fields before it queues the item; after that only the server side
// touches it.
type pending struct {
	kind     pendingKind
	time     time.Time // when it was forwarded
	copyMark int64     // connLog.copyIn when it was forwarded
	startID  string    // Query, Execute, FunctionCall: the ID of its start record, if one was written

	name     string     // Parse: statement; Bind, Execute: portal; Describe, Close: object
	object   byte       // Describe, Close: 'S' (statement) or 'P' (portal)
	stmtName string     // Bind: the statement bound
	stmt     *statement // Query, Parse, FunctionCall
	params   []string   // Bind, FunctionCall: values as recorded
	// binary are the binary values of a Bind, which the server side
	// decodes into params once it knows the types of the statement's
	// parameters (backendObserver.bindValues).
	binary []binaryParam

	// The answer, as the server side sees it.
	stmtRows  int64  // DataRow messages of the current statement
	rows      int64  // rows of the statements completed
	tags      string // command tags, "; "-separated
	empty     bool   // EmptyQueryResponse
	copyIn    bool   // a COPY FROM STDIN ran
	copyOut   bool   // a COPY TO STDOUT ran
	inCopyIn  bool   // a COPY FROM STDIN is running
	bytes     int64  // COPY payload
	err       *failure
	inherited bool // err is an earlier message's, which kept this one from running
}

// failure is an ErrorResponse, as recorded.
type failure struct {
	code, message string
	time          time.Time
}

// statement is a statement's text as recorded, and the types of its
// parameters.
type statement struct {
	maskResult
	size int // bytes counted against maxStatementBytes
	// paramOIDs are the types of the parameters, to decode the binary
	// values bound to them: those the Parse message gave (0 where it left
	// one unspecified), replaced by the server's ParameterDescription when
	// the statement is described. Only the server side touches them once
	// the Parse is queued.
	paramOIDs []uint32
	// parseOIDs are the types the Parse message gave, never changed, and
	// described those of the ParameterDescription once the server side
	// has seen it (guarded by connLog.mu): the client side reads them to
	// render the values of a start record.
	parseOIDs []uint32
	described []uint32
}

// portal is a bound statement.
type portal struct {
	stmt     *statement // nil: not known
	stmtName string
	params   []string
}

func newConnLog(sess *common.Session, cfg Config, connID string) *connLog {
	return &connLog{
		rec:       sess.Recorder(),
		sessionID: sess.ID(),
		connID:    connID,
		database:  cfg.Database,
		sess:      sess,
		now:       time.Now,

		maxStatement: cfg.MaxStatementBytes,
		oversize:     cfg.OversizeStatements,
		health:       healthOf(sess.Recorder()),
		wa:           writeAheadOf(sess.Recorder()),
	}
}

// extra returns the project's mask patterns as they are now: a change
// applies from the next statement on.
func (l *connLog) extra() []*regexp.Regexp { return l.sess.MaskPatterns() }

// closedCh is a closed channel.
var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// idle returns a channel closed once no request waits for its answer.
func (l *connLog) idle() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head == len(l.queue) {
		return closedCh
	}
	if l.idleCh == nil {
		l.idleCh = make(chan struct{})
	}
	return l.idleCh
}

// push queues the requests of one chunk of client bytes, before they are
// forwarded. It returns spare with requests to reuse added.
func (l *connLog) push(items, spare []*pending) ([]*pending, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue)-l.head+len(items) > maxPending {
		return spare, errTooManyPending
	}
	l.queue = append(l.queue, items...)
	if len(spare) < spareTake {
		k := max(len(l.free)-(spareTake-len(spare)), 0)
		spare = append(spare, l.free[k:]...)
		clear(l.free[k:])
		l.free = l.free[:k]
	}
	return spare, nil
}

// release gives back requests the server side is done with; it holds no
// reference to them any more.
func (l *connLog) release(items ...*pending) {
	for _, it := range items {
		if len(l.released) < maxFree {
			*it = pending{}
			l.released = append(l.released, it)
		}
	}
}

// recycleLocked moves the released requests to free.
func (l *connLog) recycleLocked() {
	if len(l.released) > 0 {
		n := min(len(l.released), maxFree-len(l.free))
		l.free = append(l.free, l.released[:n]...)
		clear(l.released)
		l.released = l.released[:0]
	}
}

// peek returns the oldest request waiting for its answer, or nil.
func (l *connLog) peek() *pending {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head == len(l.queue) {
		return nil
	}
	return l.queue[l.head]
}

// pop removes the oldest request; the caller got it from peek.
func (l *connLog) pop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.popLocked()
	l.recycleLocked()
}

func (l *connLog) popLocked() *pending {
	if l.head == len(l.queue) {
		return nil
	}
	it := l.queue[l.head]
	l.queue[l.head] = nil
	l.head++
	if l.head == len(l.queue) && l.idleCh != nil {
		close(l.idleCh)
		l.idleCh = nil
	}
	switch {
	case l.head == len(l.queue):
		l.queue, l.head = l.queue[:0], 0
	case l.head >= 1024 && 2*l.head >= len(l.queue):
		n := copy(l.queue, l.queue[l.head:])
		clear(l.queue[n:])
		l.queue, l.head = l.queue[:n], 0
	}
	return it
}

// popGroup removes the requests up to the one a ReadyForQuery answers (the
// next Sync, or, unless the server is skipping to a Sync, the next Query or
// FunctionCall) and appends them to group. Without one, it takes them all.
func (l *connLog) popGroup(toSync bool, group []*pending) []*pending {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recycleLocked()
	for {
		it := l.popLocked()
		if it == nil {
			return group
		}
		group = append(group, it)
		if it.kind == pendingSync || !toSync && (it.kind == pendingQuery || it.kind == pendingFunctionCall) {
			return group
		}
	}
}

// copyEnd returns the client's CopyData total that ends the COPY of the
// oldest request, still queued: what the client has sent, but no more than
// what it had sent when it sent the next request.
func (l *connLog) copyEnd() int64 {
	l.mu.Lock()
	var next *pending
	if l.head+1 < len(l.queue) {
		next = l.queue[l.head+1]
	}
	l.mu.Unlock()
	return l.copyEndBefore(next)
}

// copyEndBefore is copyEnd for a request no longer queued, followed by next
// (nil if none has come yet).
func (l *connLog) copyEndBefore(next *pending) int64 {
	end := l.copyIn.Load()
	if next != nil {
		end = min(end, next.copyMark)
	}
	return end
}

// emit records one event for request it, which ended at end.
func (l *connLog) emit(it *pending, kind, stmt string, params []string, outcome string, end time.Time) {
	ev := sessionlog.Event{
		ID:         uuid.Must(uuid.NewV7()).String(),
		StartID:    it.startID,
		SessionID:  l.sessionID,
		Time:       it.time,
		ConnID:     l.connID,
		Kind:       kind,
		Statement:  stmt,
		Params:     params,
		Database:   l.database,
		Outcome:    outcome,
		Rows:       it.rows,
		Bytes:      it.bytes,
		DurationUS: max(end.Sub(it.time).Microseconds(), 0),
	}
	if it.err != nil && outcome == OutcomeError && it.err.code == sqlStateQueryCanceled && l.cancelling.Load() {
		outcome = OutcomeCancelled
		ev.Outcome = outcome
	}
	if it.kind == pendingQuery && it.tags != "" && outcome != it.tags {
		// A Query cut short: the statements that completed before it.
		ev.Outcome += " after " + it.tags
	}
	if it.err != nil && (outcome == OutcomeError || outcome == OutcomeCancelled || outcome == OutcomeRefused) {
		ev.ErrorCode = it.err.code
		ev.ErrorMsg = it.err.message
		if it.stmt != nil && it.stmt.sensitive {
			ev.ErrorMsg = scrubSecrets(ev.ErrorMsg, it.stmt.secrets)
		}
		ev.ErrorMsg = applyPatterns(ev.ErrorMsg, l.extra())
	}
	if outcome == OutcomeSkipped {
		ev.DurationUS = 0
	}
	l.rec.Record(ev)
}

// emitConn records a connection's opening (at the time it started, lasting
// until the login succeeded or failed) or its end (at the time it ended,
// lasting as long as the connection).
func (l *connLog) emitConn(kind string, start, end time.Time, outcome, code, message string) {
	at, stmt := start, l.client
	if kind == sessionlog.KindDisconnect {
		at, stmt = end, ""
	}
	l.rec.Record(sessionlog.Event{
		ID:         uuid.Must(uuid.NewV7()).String(),
		SessionID:  l.sessionID,
		Time:       at,
		ConnID:     l.connID,
		Kind:       kind,
		Statement:  applyPatterns(stmt, l.extra()),
		Database:   l.database,
		Outcome:    outcome,
		ErrorCode:  code,
		ErrorMsg:   applyPatterns(message, l.extra()),
		DurationUS: max(end.Sub(start).Microseconds(), 0),
	})
}

// kindOf returns the event kind of a Query or Execute request: a COPY is
// recorded as such.
func kindOf(it *pending, plain string) string {
	switch {
	case it.copyIn:
		return sessionlog.KindCopyIn
	case it.copyOut:
		return sessionlog.KindCopyOut
	}
	return plain
}

// statementState is what the server side remembers of a connection's
// prepared statements and portals, updated in protocol order as the server
// confirms each Parse, Bind and Close, so that an Execute is recorded with
// the statement the server actually ran.
type statementState struct {
	stmts   map[string]*statement
	portals map[string]portal
	bytes   int // statement text held, against maxStatementBytes
}

func (s *statementState) statement(name string) *statement { return s.stmts[name] }

func (s *statementState) portal(name string) (portal, bool) {
	p, ok := s.portals[name]
	return p, ok
}

// setStatement records a prepared statement; it reports false when there is
// no room for its text.
func (s *statementState) setStatement(name string, st *statement) bool {
	if old := s.stmts[name]; old != nil {
		s.bytes -= old.size
		delete(s.stmts, name)
	}
	if st.size == 0 {
		st.size = len(st.text) + len(name) + 64
	}
	if s.bytes+st.size > maxStatementBytes {
		return false
	}
	if s.stmts == nil {
		s.stmts = make(map[string]*statement)
	}
	s.stmts[name] = st
	s.bytes += st.size
	return true
}

func (s *statementState) deleteStatement(name string) {
	if old := s.stmts[name]; old != nil {
		s.bytes -= old.size
		delete(s.stmts, name)
	}
}

// clearNamedStatements forgets every named statement, after a DEALLOCATE or
// DISCARD whose target is not known.
func (s *statementState) clearNamedStatements() {
	for name, st := range s.stmts {
		if name != "" {
			s.bytes -= st.size
			delete(s.stmts, name)
		}
	}
}

func (s *statementState) setPortal(name string, p portal) {
	if s.portals == nil {
		s.portals = make(map[string]portal)
	}
	s.portals[name] = p
}

// overlay is what skipped Parse, Bind and Close messages would have done,
// had they run: it names the statement of a skipped Execute. A nil value
// stands for a deletion.
type overlay struct {
	base    *statementState
	stmts   map[string]*statement
	portals map[string]*portal
}

func (o *overlay) statement(name string) *statement {
	if st, ok := o.stmts[name]; ok {
		return st
	}
	return o.base.statement(name)
}

func (o *overlay) portal(name string) *portal {
	if p, ok := o.portals[name]; ok {
		return p
	}
	if p, ok := o.base.portal(name); ok {
		return &p
	}
	return nil
}

// apply plays a request the server did not run, as if it had succeeded.
func (o *overlay) apply(it *pending) {
	if o.stmts == nil {
		o.stmts = make(map[string]*statement)
		o.portals = make(map[string]*portal)
	}
	switch it.kind {
	case pendingParse:
		o.stmts[it.name] = it.stmt
	case pendingBind:
		o.portals[it.name] = &portal{stmt: o.statement(it.stmtName), stmtName: it.stmtName, params: it.params}
	case pendingClose:
		if it.object == 'S' {
			o.stmts[it.name] = nil
		} else {
			o.portals[it.name] = nil
		}
	}
}

// describeStatement returns the text and parameters an Execute of portal p
// is recorded with, masked.
func (l *connLog) describeStatement(p *portal, portalName string) (*statement, string, []string) {
	switch {
	case p == nil:
		return nil, "[unknown portal " + strconv.Quote(portalName) + "]", nil
	case p.stmt == nil:
		return nil, "[unknown prepared statement " + strconv.Quote(p.stmtName) + "]", p.params
	}
	params := p.params
	if p.stmt.sensitive && len(params) > 0 {
		params = make([]string, len(p.params))
		for i := range params {
			params[i] = masked
		}
	}
	return p.stmt, p.stmt.text, params
}

// rowsOf returns the row count of a command tag, for the commands whose tag
// carries one ("INSERT 0 3", "UPDATE 2", "SELECT 5", "COPY 10"...), or 0.
func rowsOf(tag string) int64 {
	sp := strings.LastIndexByte(tag, ' ')
	if sp < 0 {
		return 0
	}
	switch verb, _, _ := strings.Cut(tag, " "); verb {
	case "INSERT", "UPDATE", "DELETE", "MERGE", "SELECT", "COPY", "FETCH", "MOVE":
		n, err := strconv.ParseInt(tag[sp+1:], 10, 64)
		if err == nil {
			return n
		}
	}
	return 0
}

// sqlName matches the name a PREPARE or DECLARE statement gives, as an
// identifier: quoted, or folded to lower case.
var (
	prepareName = regexp.MustCompile(`(?is)^\s*PREPARE\s+("(?:[^"]|"")+"|[\pL_][\pL\pN_$]*)`)
	declareName = regexp.MustCompile(`(?is)^\s*DECLARE\s+("(?:[^"]|"")+"|[\pL_][\pL\pN_$]*)`)
)

// maxIdentifierLen is PostgreSQL's NAMEDATALEN - 1: longer identifiers are
// truncated.
const maxIdentifierLen = 63

// sqlIdentifier returns the name that the statement text declares according
// to re, or false.
func sqlIdentifier(re *regexp.Regexp, text string) (string, bool) {
	m := re.FindStringSubmatch(text)
	if m == nil {
		return "", false
	}
	name := m[1]
	if strings.HasPrefix(name, `"`) {
		name = strings.ReplaceAll(name[1:len(name)-1], `""`, `"`)
	} else {
		name = strings.Map(func(r rune) rune {
			if r >= 'A' && r <= 'Z' {
				return r + ('a' - 'A')
			}
			return r
		}, name)
	}
	return validPrefix(name, maxIdentifierLen), true
}
