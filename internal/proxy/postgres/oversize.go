package postgres

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// DefaultMaxStatementBytes is the recording limit of a statement when the
// project sets none: 1 MiB.
const DefaultMaxStatementBytes = 1 << 20

// endsLen is what the session log keeps of each end of a statement over the
// limit, when it is forwarded (tunnel.OversizeRecordEnds) or refused.
const endsLen = 4 << 10

// SQLSTATEs of the engine's refusals.
const (
	sqlStateProgramLimitExceeded = "54000" // program_limit_exceeded: a statement over the recording limit
	sqlStateIOError              = "58030" // io_error: the session log cannot be written
)

// OutcomeRefused is a request the engine did not forward: a statement over
// the project's recording limit, or any statement while the session log
// cannot be written. The event's error code and message are what the
// client was told.
const OutcomeRefused = "refused"

// statementLimits is implemented by a common.Session that carries the
// project's statement limits (tunnel.Header.MaxStatementBytes and
// OversizeStatements). The engine reads them through this interface so
// that it works with sessions that do not (yet) carry them: those get the
// defaults.
type statementLimits interface {
	MaxStatementBytes() int64
	OversizeStatements() string
}

// limits returns the recording limit of a statement and what happens to
// one over it (tunnel.OversizeRefuse or tunnel.OversizeRecordEnds): the
// Config's when set, else the session's, else the defaults. It is read at
// each statement, so that a change to a live session applies from its next
// statement on.
func (l *connLog) limits() (int64, string) {
	max, mode := l.maxStatement, l.oversize
	if s, ok := any(l.sess).(statementLimits); ok {
		if max == 0 {
			max = s.MaxStatementBytes()
		}
		if mode == "" {
			mode = s.OversizeStatements()
		}
	}
	if max <= 0 {
		max = DefaultMaxStatementBytes
	}
	if mode != tunnel.OversizeRecordEnds {
		mode = tunnel.OversizeRefuse
	}
	return max, mode
}

// healthErr returns why the session log cannot be written now, or nil.
func (l *connLog) healthErr() error {
	if l.health == nil {
		return nil
	}
	return l.health.Err()
}

// healthOf returns rec's HealthReporter, if it is one.
func healthOf(rec sessionlog.Recorder) sessionlog.HealthReporter {
	h, _ := rec.(sessionlog.HealthReporter)
	return h
}

// refusal ends the relay of a connection whose client sent a request the
// engine does not forward: the client is told code and message (FATAL),
// once the answers to its earlier requests have reached it, and the
// connection is closed (which rolls back an open transaction, so nothing
// of the context of the refused statement commits).
type refusal struct {
	code, message string
}

func (r *refusal) Error() string { return "postgres: refused a request: " + r.message }

// bigStatement follows a Query or Parse message over the recording limit as
// its bytes pass, keeping only the statement's first and last endsLen bytes
// and its running SHA-256: memory stays bounded whatever the size.
type bigStatement struct {
	typ    byte
	size   int // the message's body length
	refuse bool

	name     []byte // Parse: the statement name (its first 256 bytes)
	nameDone bool   // Parse: the name's NUL has passed
	stmtDone bool   // the statement's NUL has passed
	n        int64  // statement bytes so far
	head     []byte
	tail     []byte
	hash     hash.Hash
	password passwordWatch
}

func newBigStatement(typ byte, size int, refuse bool) *bigStatement {
	return &bigStatement{typ: typ, size: size, refuse: refuse, nameDone: typ != 'P', hash: sha256.New(),
		head: make([]byte, 0, endsLen), tail: make([]byte, 0, endsLen)}
}

// write takes the next body bytes of the message.
func (b *bigStatement) write(p []byte) {
	if !b.nameDone {
		i := indexNUL(p)
		if i < 0 {
			b.name = appendMax(b.name, p, 256)
			return
		}
		b.name = appendMax(b.name, p[:i], 256)
		b.nameDone = true
		p = p[i+1:]
	}
	if b.stmtDone || len(p) == 0 {
		return
	}
	if i := indexNUL(p); i >= 0 {
		p = p[:i]
		b.stmtDone = true
	}
	b.n += int64(len(p))
	b.hash.Write(p)
	b.password.write(p)
	b.head = appendMax(b.head, p, endsLen)
	if len(p) >= endsLen {
		b.tail = append(b.tail[:0], p[len(p)-endsLen:]...)
	} else {
		if over := len(b.tail) + len(p) - endsLen; over > 0 {
			b.tail = b.tail[:copy(b.tail, b.tail[over:])]
		}
		b.tail = append(b.tail, p...)
	}
}

// text returns the statement as recorded: its first part (masked), its
// size and hash, and its last part (masked, or withheld if the statement
// mentions a password anywhere: it may start inside a password literal,
// which masking cannot recognise without its start).
func (b *bigStatement) text(f *frontendObserver) *statement {
	sum := hex.EncodeToString(b.hash.Sum(nil))
	head := f.statement(validPrefix(string(b.head), endsLen))
	tailText := validSuffix(string(b.tail))
	tail := maskStatement(tailText, f.log.extra())
	if b.password.seen {
		// The last part may start inside a password literal, which
		// masking cannot recognise without its start.
		tail = maskResult{text: "[last part withheld: the statement mentions a password]", sensitive: true}
	}
	st := &statement{maskResult: head.maskResult}
	st.text = head.text + fmt.Sprintf("… [%d bytes, sha256 %s] …", b.n, sum) + tail.text
	st.sensitive = head.sensitive || tail.sensitive || b.password.seen
	st.secrets = append(st.secrets, tail.secrets...)
	return st
}

// passwordWatch notices the word "password", in any case, in a stream cut
// at any place.
type passwordWatch struct {
	carry []byte
	seen  bool
}

func (w *passwordWatch) write(p []byte) {
	if w.seen {
		return
	}
	const word = "password"
	buf := append(w.carry, p[:min(len(p), len(word))]...)
	if containsFold(string(buf), word) || containsFold(string(p), word) {
		w.seen = true
		return
	}
	tail := p
	if len(tail) > len(word)-1 {
		tail = tail[len(tail)-(len(word)-1):]
	} else {
		tail = append(w.carry, p...)
		if len(tail) > len(word)-1 {
			tail = tail[len(tail)-(len(word)-1):]
		}
	}
	w.carry = append(w.carry[:0:0], tail...)
}

// refusedMessage is what the client is told about a statement over the
// limit.
func refusedMessage(size, limit int64) string {
	return fmt.Sprintf("airlock: statement of %d bytes is over this project's recording limit of %d bytes; ask a project admin to raise it", size, limit)
}

// healthMessage is what the client is told while the session log cannot be
// written.
func healthMessage(err error) string {
	return "airlock: the session log cannot be written, so statements are refused until it can (" +
		strings.TrimSpace(err.Error()) + "); try again later or tell an administrator"
}

func indexNUL(p []byte) int {
	for i, c := range p {
		if c == 0 {
			return i
		}
	}
	return -1
}

// appendMax appends p to b, up to max bytes in all.
func appendMax(b, p []byte, max int) []byte {
	if room := max - len(b); room > 0 {
		b = append(b, p[:min(room, len(p))]...)
	}
	return b
}

// validSuffix returns s without the bytes of a rune cut at its start.
func validSuffix(s string) string {
	for i := 0; i < len(s) && i < utf8.UTFMax; i++ {
		if utf8.RuneStart(s[i]) {
			return s[i:]
		}
	}
	return s
}

// DefaultMaxBufferedBytes bounds, across all the connections of an Engine,
// the bytes held for large client messages (EngineConfig.MaxBufferedBytes).
const DefaultMaxBufferedBytes = 128 << 20

// largeMessage is the size from which a client message held to be decoded
// counts against the engine's overall budget.
const largeMessage = 64 << 10

// sqlStateOutOfMemory is out_of_memory: the engine's overall budget for
// large messages is spent.
const sqlStateOutOfMemory = "53200"

// byteBudget is an engine-wide count of bytes held for large messages.
type byteBudget struct {
	max  int64
	used atomic.Int64
}

// reserve takes n bytes of the budget, if they are free.
func (b *byteBudget) reserve(n int) bool {
	if b == nil {
		return true
	}
	if b.used.Add(int64(n)) > b.max {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *byteBudget) release(n int) {
	if b != nil && n > 0 {
		b.used.Add(-int64(n))
	}
}

// busyMessage is what the client is told when the engine's overall budget
// for large messages is spent.
func busyMessage(size int) string {
	return fmt.Sprintf("airlock: the gateway is holding too many large statements right now to record a message of %d bytes; try again shortly", size)
}
