package common

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
	"unicode/utf8"
)

// StatementEndsBytes is the most of each end of an over-limit statement
// that Statement.String keeps: its first and its last StatementEndsBytes
// bytes (less when the limit is smaller).
const StatementEndsBytes = 8 << 10

// Statement collects the text of a statement being recorded, in pieces, in
// bounded memory: it keeps the text whole up to its limit and, beyond it,
// only the first and last parts, the total length and the SHA-256 of the
// whole text. The engines write a statement into it as they render it, so
// that a command of tens of megabytes is never held as text, and ask Over
// whether the statement fits the project's limit (Session.MaxStatementBytes).
//
// The zero value is not usable; make one with NewStatement.
type Statement struct {
	limit int64
	ends  int
	n     int64
	buf   []byte    // the whole text while n <= limit, then the head
	tail  []byte    // a ring of the last ends bytes, once over
	pos   int       // the next write position in tail
	sum   hash.Hash // SHA-256 of everything written
}

// NewStatement returns an empty Statement with the limit limit, in bytes
// (0 or less: DefaultMaxStatementBytes).
func NewStatement(limit int64) *Statement {
	if limit <= 0 {
		limit = DefaultMaxStatementBytes
	}
	ends := int(min(int64(StatementEndsBytes), limit/2))
	return &Statement{limit: limit, ends: ends, sum: sha256.New()}
}

// Write adds p to the statement; it never fails.
func (s *Statement) Write(p []byte) (int, error) {
	s.sum.Write(p)
	s.n += int64(len(p))
	if s.tail == nil {
		if s.n <= s.limit {
			s.buf = append(s.buf, p...)
			return len(p), nil
		}
		// Over the limit: keep the head, and the last bytes so far in
		// the ring.
		prev := s.buf
		s.tail = make([]byte, 0, s.ends)
		if len(prev) >= s.ends {
			s.buf = append([]byte(nil), prev[:s.ends]...)
			s.ring(prev[s.ends:])
			s.ring(p)
			return len(p), nil
		}
		k := min(len(p), s.ends-len(prev))
		s.buf = append(append([]byte(nil), prev...), p[:k]...)
		s.ring(p[k:])
		return len(p), nil
	}
	s.ring(p)
	return len(p), nil
}

// WriteString adds str to the statement; it never fails.
func (s *Statement) WriteString(str string) (int, error) {
	// Pieces are small (a key, a value, a document): the copy is cheap.
	return s.Write([]byte(str))
}

// ring keeps the last s.ends bytes of what went through it.
func (s *Statement) ring(p []byte) {
	if s.ends == 0 {
		return
	}
	if len(p) >= s.ends {
		s.tail = append(s.tail[:0], p[len(p)-s.ends:]...)
		s.pos = 0
		return
	}
	for len(p) > 0 {
		if len(s.tail) < s.ends {
			n := min(len(p), s.ends-len(s.tail))
			s.tail = append(s.tail, p[:n]...)
			p = p[n:]
			continue
		}
		n := copy(s.tail[s.pos:], p)
		s.pos = (s.pos + n) % s.ends
		p = p[n:]
	}
}

// Len returns the length of the whole statement, in bytes.
func (s *Statement) Len() int64 { return s.n }

// Over reports whether the statement is longer than its limit.
func (s *Statement) Over() bool { return s.n > s.limit }

// Limit returns the statement's limit, in bytes.
func (s *Statement) Limit() int64 { return s.limit }

// Sum returns the SHA-256 of the whole statement, in hex.
func (s *Statement) Sum() string { return hex.EncodeToString(s.sum.Sum(nil)) }

// String returns the statement whole when it is within its limit;
// otherwise its first and last parts (StatementEndsBytes each, cut on
// character boundaries) around a marker that gives its length and
// SHA-256: "head… [N bytes, sha256 HEX] …tail".
func (s *Statement) String() string {
	if !s.Over() {
		return string(s.buf)
	}
	head := s.buf
	// Drop a character cut in two at the end of the head.
	for j := len(head) - 1; j >= 0 && j >= len(head)-utf8.UTFMax; j-- {
		if utf8.RuneStart(head[j]) {
			if !utf8.FullRune(head[j:]) {
				head = head[:j]
			}
			break
		}
	}
	tail := make([]byte, 0, len(s.tail))
	tail = append(tail, s.tail[s.pos:]...)
	tail = append(tail, s.tail[:s.pos]...)
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return string(head) + "… [" + strconv.FormatInt(s.n, 10) + " bytes, sha256 " + s.Sum() + "] …" + string(tail)
}
