package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/sessionlog"
)

// TestLogPrinter prints a log of two connections whose ids share their
// time-ordered start, with a multi-line statement, a failed multi-statement
// query and a terminated disconnect: the columns line up, each connection
// has its own number, and the lines under a row start at its STATEMENT.
func TestLogPrinter(t *testing.T) {
	at := time.Date(2026, 12, 3, 16, 0, 0, 0, time.Local)
	a, b := "01a23d1c-bbe6-7cb5-9503-294a53878ddf", "01a23d1c-bbe6-7f00-8313-c2eb164f0793"
	evs := []sessionlog.Event{
		{Seq: 1, Time: at, ConnID: a, Kind: "connect", Statement: "user=alice database=app", Outcome: "ok", DurationUS: 12000},
		{Seq: 2, Time: at, ConnID: b, Kind: "connect", Statement: "user=alice database=postgres", Outcome: "error", ErrorCode: "28000",
			ErrorMsg: `airlock: this access is to database "app", not "postgres"; connect with dbname=app`},
		{Seq: 3, Time: at, ConnID: a, Kind: "query", Statement: "SELECT 1; SELECT 2; SELECT x_missing;", Outcome: "error after SELECT 1; SELECT 1",
			ErrorCode: "42703", ErrorMsg: `column "x_missing" does not exist`, Rows: 2, DurationUS: 1500},
		{Seq: 4, Time: at, ConnID: a, Kind: "execute", Statement: "\n  SELECT *\n\tFROM items\n  WHERE id = $1\n", Params: []string{"7"},
			Outcome: "SELECT 1", Rows: 1, DurationUS: 300},
		{Seq: 5, Time: at, ConnID: a, Kind: "query", Statement: "SELECT '\x1b[2J'", Outcome: "SELECT 1", Rows: 1},
		{Seq: 6, Time: at, ConnID: a, Kind: "query", Statement: "INSERT ...", Outcome: strings.Repeat("INSERT 0 1; ", 5) + "INSERT 0 1", Rows: 6},
		{Seq: 7, Time: at, ConnID: a, Kind: "disconnect", Outcome: "terminated", ErrorCode: "expired", ErrorMsg: "session expired at 2026-12-03T16:00:00Z"},
		{Seq: 8, Damaged: "event 8 of session s failed its integrity check"},
	}
	var out strings.Builder
	p := &logPrinter{w: &out, conns: &connNumbers{byID: map[string]int{}}}
	p.print(evs[:3])
	p.print(evs[3:]) // a second page, as --follow prints it
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	col := strings.Index(lines[0], "STATEMENT") // the header is ASCII
	if col < 0 {
		t.Fatalf("no header:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
	want := []string{
		"user=alice database=app",
		"user=alice database=postgres",
		`-- airlock: this access is to database "app", not "postgres"; connect with dbname=app`,
		"SELECT 1; SELECT 2; SELECT x_missing;",
		`-- column "x_missing" does not exist`,
		"SELECT *",
		"  FROM items",
		"WHERE id = $1  -- params: 7",
		`SELECT '\x1b[2J'`,
		"INSERT ...",
		"-- INSERT 0 1; INSERT 0 1; INSERT 0 1; INSERT 0 1; INSERT 0 1; INSERT 0 1",
		"-- session expired at 2026-12-03T16:00:00Z",
		"-- event 8 of session s failed its integrity check",
	}
	if len(lines)-1 != len(want) {
		t.Fatalf("%d lines, want %d", len(lines)-1, len(want))
	}
	for i, w := range want {
		l := []rune(lines[i+1])
		if len(l) < col || string(l[col:]) != w || l[col-1] != ' ' {
			t.Errorf("line %d: %q, want %q at column %d", i+1, string(l), w, col)
		}
	}
	for _, c := range []struct {
		line int
		want string
	}{
		{1, "1 " + at.Format("2006-01-02 15:04:05") + " #1 connect ok - 12.0ms"},
		{2, "#2 connect error (28000) - 0µs"},
		{4, "#1 query error after SELECT 1; SELECT 1 (42703) 2 1.5ms"},
		{6, "#1 execute SELECT 1 1 300µs"},
		{10, "INSERT 0 1; INSERT 0 1; INSERT 0 1; I… 6"},
		{12, "#1 disconnect terminated (expired)"},
		{13, "- DAMAGED"},
	} {
		if !strings.Contains(strings.Join(strings.Fields(lines[c.line]), " "), strings.Join(strings.Fields(c.want), " ")) {
			t.Errorf("line %d: %q, want it to hold %q", c.line, lines[c.line], c.want)
		}
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Error("a control character reached the terminal")
	}
}

func TestConnNumbersResolve(t *testing.T) {
	a, b := "01a23d1c-bbe6-7cb5-9503-294a53878ddf", "01a23d1c-bbe6-7f00-8313-c2eb164f0793"
	n := &connNumbers{byID: map[string]int{}}
	n.number(a)
	n.number(b)
	for _, tt := range []struct{ in, want, err string }{
		{"#1", a, ""},
		{"2", b, ""},
		{"#3", "", "no connection #3 (it has 2)"},
		{a, a, ""},
		{"4a53878ddf", a, ""},
		{"01A23D1C-BBE6-7F", b, ""},
		{"01a23d1c", "", "2 connections of the session match"},
		{"ffff", "", "no connection of the session matches"},
		{"01a23d1c-0000-7000-8000-000000000000", "01a23d1c-0000-7000-8000-000000000000", ""},
	} {
		got, err := n.resolve(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("resolve(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}
