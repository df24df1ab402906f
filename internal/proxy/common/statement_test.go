package common

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

func TestStatementWithinLimit(t *testing.T) {
	s := NewStatement(100)
	for _, p := range []string{`{"delete":"c",`, `"deletes":[`, `{"q":{},"limit":0}]}`} {
		_, _ = s.WriteString(p)
	}
	want := `{"delete":"c","deletes":[{"q":{},"limit":0}]}`
	if s.Over() || s.String() != want || s.Len() != int64(len(want)) {
		t.Errorf("got over=%v %q (%d)", s.Over(), s.String(), s.Len())
	}
}

// TestStatementEnds checks that an over-limit statement keeps its head,
// its tail and the hash of the whole, in whatever pieces it was written.
func TestStatementEnds(t *testing.T) {
	whole := "DROP TABLE first; " + strings.Repeat("-- padding é\n", 100_000) + " DROP TABLE last;"
	sum := sha256.Sum256([]byte(whole))
	for _, piece := range []int{1, 7, 4096, len(whole)} {
		t.Run(strconv.Itoa(piece), func(t *testing.T) {
			s := NewStatement(1 << 20)
			for i := 0; i < len(whole); i += piece {
				_, _ = s.WriteString(whole[i:min(len(whole), i+piece)])
			}
			if !s.Over() || s.Len() != int64(len(whole)) {
				t.Fatalf("over=%v len=%d", s.Over(), s.Len())
			}
			got := s.String()
			marker := "… [" + strconv.Itoa(len(whole)) + " bytes, sha256 " + hex.EncodeToString(sum[:]) + "] …"
			head, tail, ok := strings.Cut(got, marker)
			if !ok {
				t.Fatalf("no marker %q in %.100s", marker, got)
			}
			if !strings.HasPrefix(whole, head) || !strings.HasSuffix(whole, tail) {
				t.Errorf("head or tail is not the statement's")
			}
			if !strings.Contains(head, "DROP TABLE first") || !strings.Contains(tail, "DROP TABLE last") {
				t.Errorf("the ends lost the statements: head %q … tail %q", head[:40], tail[len(tail)-40:])
			}
			if len(head) > StatementEndsBytes || len(tail) > StatementEndsBytes || len(head) < StatementEndsBytes-4 || len(tail) < StatementEndsBytes-4 {
				t.Errorf("head %d, tail %d bytes", len(head), len(tail))
			}
			if !utf8.ValidString(got) {
				t.Errorf("the ends cut a character in two")
			}
		})
	}
}

func TestStatementSmallLimit(t *testing.T) {
	s := NewStatement(10)
	_, _ = s.WriteString("0123456789abcdef")
	if got := s.String(); !strings.HasPrefix(got, "01234… [16 bytes, sha256 ") || !strings.HasSuffix(got, "] …bcdef") {
		t.Errorf("got %q", got)
	}
}

func TestBudget(t *testing.T) {
	b := NewBudget(100)
	if err := b.Acquire(60); err != nil {
		t.Fatal(err)
	}
	var be *BudgetError
	if err := b.Acquire(50); !errors.As(err, &be) || be.InUse != 60 || be.Limit != 100 {
		t.Fatalf("Acquire over the budget: %v", err)
	}
	if err := b.Acquire(40); err != nil {
		t.Fatal(err)
	}
	b.Release(100)
	if b.InUse() != 0 || b.Peak() != 100 {
		t.Errorf("in use %d, peak %d", b.InUse(), b.Peak())
	}
	if NewBudget(0).Limit() != DefaultMemoryBudget {
		t.Error("the default budget is not DefaultMemoryBudget")
	}
}

func TestStatementLimitSettings(t *testing.T) {
	s := NewSession("s4")
	if s.MaxStatementBytes() != DefaultMaxStatementBytes || s.OversizeStatements() != tunnel.OversizeRefuse {
		t.Fatalf("defaults: %d %q", s.MaxStatementBytes(), s.OversizeStatements())
	}
	s = NewSession("s5", WithStatementLimit(4096, tunnel.OversizeRecordEnds))
	if s.MaxStatementBytes() != 4096 || s.OversizeStatements() != tunnel.OversizeRecordEnds {
		t.Fatalf("options: %d %q", s.MaxStatementBytes(), s.OversizeStatements())
	}
	s.SetStatementLimit(0, "something else")
	if s.MaxStatementBytes() != DefaultMaxStatementBytes || s.OversizeStatements() != tunnel.OversizeRefuse {
		t.Fatalf("after SetStatementLimit(0, unknown): %d %q", s.MaxStatementBytes(), s.OversizeStatements())
	}
}

type sickRecorder struct{ err error }

func (r *sickRecorder) Record(sessionlog.Event) {}
func (r *sickRecorder) Err() error              { return r.err }

func TestRecorderErr(t *testing.T) {
	rec := &sickRecorder{}
	s := NewSession("s6", WithRecorder(rec))
	if s.RecorderErr() != nil {
		t.Fatal("a healthy recorder reported an error")
	}
	rec.err = errors.New("the spool is full")
	if err := s.RecorderErr(); err == nil || err.Error() != "the spool is full" {
		t.Fatalf("RecorderErr() = %v", err)
	}
	if NewSession("s7").RecorderErr() != nil {
		t.Fatal("a session without a recorder reported an error")
	}
}
