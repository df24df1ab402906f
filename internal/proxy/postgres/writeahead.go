package postgres

import (
	"strings"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/sessionlog"
)

// writeAheadOf returns rec's WriteAheadRecorder, if it is one.
func writeAheadOf(rec sessionlog.Recorder) sessionlog.WriteAheadRecorder {
	w, _ := rec.(sessionlog.WriteAheadRecorder)
	return w
}

// maxClientPortals bounds the named portals the client side remembers;
// past it, it forgets them (an Execute of one is then started as an
// unknown portal, and its final event still says what ran).
const maxClientPortals = 1024

// clientState is what the client side knows of a connection's prepared
// statements and portals, from the messages the client sends, before the
// server confirms them: enough to write the start record of an Execute
// (its statement and values) before it is forwarded. It assumes that
// every Parse and Bind succeeds; where it is wrong, the statement failed or
// was skipped, and the final event, from the server side's confirmed
// state, says so. Its memory is bounded as the server side's is: the
// statements' text by maxStatementBytes, the named portals by
// maxClientPortals.
type clientState struct {
	stmts   map[string]clientStatement
	portals map[string]portal
	bytes   int
}

// clientStatement is a prepared statement as the client side remembers it.
type clientStatement struct {
	st   *statement
	size int
}

func (c *clientState) statement(name string) *statement { return c.stmts[name].st }

// setStatement remembers a statement the client prepares. When the
// statements' text would exceed maxStatementBytes, it remembers a stub,
// as the server side does (the statement is then recorded when it is
// prepared).
func (c *clientState) setStatement(name string, st *statement) {
	c.deleteStatement(name)
	size := len(st.text) + len(name) + 64
	if c.bytes+size > maxStatementBytes {
		st = &statement{maskResult: maskResult{
			text:      "[prepared statement \"" + name + "\", recorded when it was prepared]",
			sensitive: st.sensitive,
		}}
		size = len(st.text) + len(name) + 64
	}
	if c.stmts == nil {
		c.stmts = make(map[string]clientStatement)
	}
	c.stmts[name] = clientStatement{st: st, size: size}
	c.bytes += size
}

func (c *clientState) deleteStatement(name string) {
	if old, ok := c.stmts[name]; ok {
		c.bytes -= old.size
		delete(c.stmts, name)
	}
}

func (c *clientState) clearNamedStatements() {
	for name := range c.stmts {
		if name != "" {
			c.deleteStatement(name)
		}
	}
}

func (c *clientState) setPortal(name string, p portal) {
	if c.portals == nil {
		c.portals = make(map[string]portal)
	}
	if _, ok := c.portals[name]; !ok && len(c.portals) >= maxClientPortals {
		c.clearNamedPortals()
	}
	c.portals[name] = p
}

func (c *clientState) clearNamedPortals() {
	for name := range c.portals {
		if name != "" {
			delete(c.portals, name)
		}
	}
}

// query follows what a simple Query does to the statements and portals:
// it drops the unnamed ones, and, when it is a single SQL PREPARE,
// DECLARE, DEALLOCATE, DISCARD or CLOSE, what that does (as the server
// side does once the server confirms it).
func (c *clientState) query(st *statement) {
	c.deleteStatement("")
	delete(c.portals, "")
	text := strings.TrimLeft(st.text, " \t\r\n")
	switch {
	case hasPrefixFold(text, "PREPARE"):
		if name, ok := sqlIdentifier(prepareName, st.text); ok && singleStatement(st.text) {
			c.setStatement(name, st)
			return
		}
		c.clearNamedStatements()
	case hasPrefixFold(text, "DECLARE"):
		if name, ok := sqlIdentifier(declareName, st.text); ok && singleStatement(st.text) {
			c.setPortal(name, portal{stmt: st})
			return
		}
		c.clearNamedPortals()
	case hasPrefixFold(text, "DEALLOCATE"):
		c.clearNamedStatements()
	case hasPrefixFold(text, "DISCARD"):
		c.clearNamedStatements()
		c.clearNamedPortals()
	case hasPrefixFold(text, "CLOSE"):
		c.clearNamedPortals()
	}
}

// hasPrefixFold reports whether s starts with the ASCII word prefix, in
// any case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// clientOIDs returns the types of st's parameters as far as the client
// side knows them: the server's ParameterDescription once the server side
// has seen it, else the Parse message's.
func (l *connLog) clientOIDs(st *statement) []uint32 {
	l.mu.Lock()
	d := st.described
	l.mu.Unlock()
	if d != nil {
		return d
	}
	return st.parseOIDs
}

// startParams returns the values of Bind request it as its Execute's
// start record shows them: as the final event will (the binary values
// decoded, with the client side's own decoder, when the statement's types
// are known; else in hexadecimal), all masked when the statement mentions
// a password. it is not queued yet: its params may be shared, as the
// server side changes only those that are binary.
func (f *frontendObserver) startParams(it *pending, st *statement) []string {
	if len(it.params) == 0 {
		return nil
	}
	if st != nil && st.sensitive {
		out := make([]string, len(it.params))
		for i := range out {
			out[i] = masked
		}
		return out
	}
	if len(it.binary) == 0 {
		return it.params
	}
	out := make([]string, len(it.params))
	copy(out, it.params)
	var oids []uint32
	if st != nil {
		oids = f.log.clientOIDs(st)
	}
	for _, p := range it.binary {
		if p.index >= len(out) {
			continue
		}
		var oid uint32
		if p.index < len(oids) {
			oid = oids[p.index]
		}
		out[p.index] = applyPatterns(f.values.render(oid, p.value), f.log.extra())
	}
	return out
}

// followClient updates the client side's state with request it, once it is
// filled in, before it is forwarded.
func (f *frontendObserver) followClient(it *pending) {
	switch it.kind {
	case pendingParse:
		f.cs.setStatement(it.name, it.stmt)
	case pendingBind:
		st := f.cs.statement(it.stmtName)
		f.cs.setPortal(it.name, portal{stmt: st, stmtName: it.stmtName, params: f.startParams(it, st)})
	case pendingClose:
		if it.object == 'S' {
			f.cs.deleteStatement(it.name)
		} else {
			delete(f.cs.portals, it.name)
		}
	case pendingQuery:
		f.cs.query(it.stmt)
	}
}

// writeAhead hands the recorder the start record of request it (a Query,
// an Execute or a FunctionCall), before it is forwarded, and names it in
// it. If the recorder cannot take it, the request is refused: not
// forwarded, and the connection ends (see refusal), as while the session
// log cannot be written (decide).
func (f *frontendObserver) writeAhead(it *pending) error {
	var kind, text string
	var params []string
	switch it.kind {
	case pendingQuery:
		kind, text = sessionlog.KindQuery, it.stmt.text
	case pendingFunctionCall:
		kind, text, params = sessionlog.KindFunctionCall, it.stmt.text, it.params
	case pendingExecute:
		kind = sessionlog.KindExecute
		var pp *portal
		if p, ok := f.cs.portals[it.name]; ok {
			pp = &p
		}
		_, text, params = f.log.describeStatement(pp, it.name)
	default:
		return nil
	}
	id := uuid.Must(uuid.NewV7()).String()
	err := f.log.wa.Begin(sessionlog.Event{
		ID:        id,
		SessionID: f.log.sessionID,
		Time:      it.time,
		ConnID:    f.log.connID,
		Kind:      kind,
		Statement: text,
		Params:    params,
		Database:  f.log.database,
	})
	if err == nil {
		it.startID = id
		return nil
	}
	// Not forwarded: out of the chunk's requests, and held back from
	// its header on.
	f.batch = f.batch[:len(f.batch)-1]
	f.holdAt, f.holding = f.msgAt(), true
	msg := healthMessage(err)
	it.err = &failure{code: sqlStateIOError, message: msg, time: it.time}
	f.log.emit(it, kind, text, params, OutcomeRefused, it.time)
	*it = pending{}
	f.spare = append(f.spare, it)
	return &refusal{code: sqlStateIOError, message: msg}
}

// msgAt returns where the message being handled starts in the current
// chunk: 0 when it started in an earlier one (those bytes are forwarded;
// without its end the server does not run it).
func (f *frontendObserver) msgAt() int {
	if f.hdrChunk == f.chunks {
		return f.hdrAt
	}
	return 0
}

// unqueued records, as "outcome unknown", the requests of a chunk that
// was forwarded but could not be queued (the client pipelined too much):
// their start records must not stay open.
func (f *frontendObserver) unqueued(items []*pending) {
	for _, it := range items {
		if it.startID == "" {
			continue
		}
		switch it.kind {
		case pendingQuery:
			f.log.emit(it, sessionlog.KindQuery, it.stmt.text, nil, OutcomeUnknown, it.time)
		case pendingFunctionCall:
			f.log.emit(it, sessionlog.KindFunctionCall, it.stmt.text, it.params, OutcomeUnknown, it.time)
		case pendingExecute:
			var pp *portal
			if p, ok := f.cs.portals[it.name]; ok {
				pp = &p
			}
			_, text, params := f.log.describeStatement(pp, it.name)
			f.log.emit(it, sessionlog.KindExecute, text, params, OutcomeUnknown, it.time)
		}
	}
}
