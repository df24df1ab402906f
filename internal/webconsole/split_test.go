package webconsole

import "testing"

func TestCountStatements(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want int
	}{
		{"", 0},
		{" ; ;\n", 0},
		{"-- only a comment", 0},
		{"/* a /* nested */ comment */", 0},
		{"select 1", 1},
		{"select 1;", 1},
		{"select 1; -- done", 1},
		{"select 1; select 2", 2},
		{"select ';'", 1},
		{"select 'it''s; fine'", 1},
		{`select E'a\'; b'`, 1},
		{`select "a;b" from t`, 1},
		{"create function f() returns int as $$ select 1; select 2; $$ language sql", 1},
		{"create function f() returns int as $body$ select 1; $$; $body$ language sql; select 2", 2},
		{"select $1::int; select 2", 2},
		{"select 1 /* ; */ ; select 2 -- ;\n", 2},
		{"select 'unterminated; select 2", 1},
	} {
		if got := countStatements(tc.sql); got != tc.want {
			t.Errorf("countStatements(%q) = %d, want %d", tc.sql, got, tc.want)
		}
	}
}

func TestSplitStatements(t *testing.T) {
	got := splitStatements("select 1; -- one\nselect ';' /* ; */; $$ ; $$;\n\n")
	want := []string{"select 1", " -- one\nselect ';' /* ; */", " $$ ; $$"}
	if len(got) != len(want) {
		t.Fatalf("splitStatements = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statement %d = %q, want %q", i, got[i], want[i])
		}
	}
	if !beginAtomic.MatchString("create function f() returns int begin  ATOMIC select 1; end; select f()") {
		t.Fatal("BEGIN ATOMIC not found")
	}
}

func FuzzCountStatements(f *testing.F) {
	f.Add("select 1; select $a$;$a$; /* ; */ 'x'")
	f.Fuzz(func(t *testing.T, sql string) {
		if n := countStatements(sql); n < 0 || n > len(sql) {
			t.Fatalf("countStatements(%q) = %d", sql, n)
		}
	})
}
