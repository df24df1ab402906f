package postgres

import (
	"regexp"
	"strings"
	"testing"
)

func TestMaskStatement(t *testing.T) {
	scram := "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$c3RvcmVka2V5c3RvcmVka2V5:c2VydmVya2V5c2VydmVya2V5"
	tests := []struct {
		name, in, want string
		sensitive      bool
	}{
		{"no password", "SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = 'x'", false},
		{"alter role", "ALTER ROLE bob PASSWORD 'hunter2'", "ALTER ROLE bob PASSWORD '***'", true},
		{"lower case, with", "alter role bob with login password 'hunter2' valid until '2030-01-01'",
			"alter role bob with login password '***' valid until '2030-01-01'", true},
		{"create user encrypted", "CREATE USER bob ENCRYPTED PASSWORD 'hunter2'", "CREATE USER bob ENCRYPTED PASSWORD '***'", true},
		{"doubled quote", "ALTER USER bob PASSWORD 'it''s secret' LOGIN", "ALTER USER bob PASSWORD '***' LOGIN", true},
		{"E string", `ALTER ROLE bob PASSWORD E'it\'s \\ secret' LOGIN`, "ALTER ROLE bob PASSWORD '***' LOGIN", true},
		{"backslash without E", `ALTER ROLE bob PASSWORD 'a\' b' LOGIN`, "ALTER ROLE bob PASSWORD '***' LOGIN", true},
		{"unicode string", `ALTER ROLE bob PASSWORD U&'d\0061t' LOGIN`, "ALTER ROLE bob PASSWORD '***' LOGIN", true},
		{"dollar quoted", "ALTER ROLE bob PASSWORD $$hunter'2$$ LOGIN", "ALTER ROLE bob PASSWORD '***' LOGIN", true},
		{"tagged dollar quote", "ALTER ROLE bob PASSWORD $pw$a$$b$pw$", "ALTER ROLE bob PASSWORD '***'", true},
		{"comment between", "ALTER ROLE bob PASSWORD /* new */ -- here\n 'hunter2'", "ALTER ROLE bob PASSWORD /* new */ -- here\n '***'", true},
		{"scram verifier", "ALTER USER bob PASSWORD '" + scram + "'", "ALTER USER bob PASSWORD '***'", true},
		{"md5 verifier", "ALTER USER bob PASSWORD 'md5" + strings.Repeat("0a", 16) + "'", "ALTER USER bob PASSWORD '***'", true},
		{"verifier anywhere", "UPDATE pg_authid SET rolpassword = '" + scram + "'", "UPDATE pg_authid SET rolpassword = '***'", true},
		{"password null kept", "ALTER ROLE bob PASSWORD NULL", "ALTER ROLE bob PASSWORD NULL", true},
		{"unquoted password", "ALTER ROLE bob PASSWORD hunter2", "ALTER ROLE bob PASSWORD ***", true},
		{"column named password", "SELECT password FROM users", "SELECT password FROM users", true},
		{"assignment", "UPDATE users SET password = 'plain' WHERE id = 1", "UPDATE users SET password = '***' WHERE id = 1", true},
		{"parameter", "ALTER ROLE bob PASSWORD $1", "ALTER ROLE bob PASSWORD $1", true},
		{"user mapping", "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'hunter2')",
			"CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password '***')", true},
		{"connection string", "SELECT dblink_connect('host=db user=bob password=hunter2 dbname=x')",
			"SELECT dblink_connect('host=db user=bob password=*** dbname=x')", true},
		{"quoted connection string value", "SELECT dblink_connect('password=''a b'' host=db')",
			"SELECT dblink_connect('password=*** host=db')", true},
		{"the word in a literal", "SELECT 'password'", "SELECT 'password'", false},
		{"quoted identifier", `SELECT "password" 'x'`, `SELECT "password" 'x'`, false},
		{"password_encryption", "SET password_encryption = 'md5'", "SET password_encryption = 'md5'", false},
		{"several statements", "CREATE ROLE a PASSWORD 'one'; CREATE ROLE b PASSWORD 'two'",
			"CREATE ROLE a PASSWORD '***'; CREATE ROLE b PASSWORD '***'", true},
		{"cut short", "ALTER ROLE bob PASSWORD 'hunt", "ALTER ROLE bob PASSWORD '***'", true},
		{"cut short, dollar", "ALTER ROLE bob PASSWORD $x$hunt", "ALTER ROLE bob PASSWORD '***'", true},
		{"unterminated comment", "ALTER ROLE bob /* PASSWORD 'x'", "ALTER ROLE bob /* PASSWORD 'x'", false},
		{"non-ASCII", "ALTER ROLE \"bébé\" PASSWORD 'pâté'", "ALTER ROLE \"bébé\" PASSWORD '***'", true},
		{"DO block", "DO $$BEGIN ALTER ROLE bob PASSWORD 'hunter2'; END$$",
			"DO $$BEGIN ALTER ROLE bob PASSWORD '***'; END$$", true},
		{"DO block, tagged, language", "DO LANGUAGE plpgsql $body$ BEGIN CREATE ROLE x LOGIN PASSWORD $p$hunter2$p$; END $body$",
			"DO LANGUAGE plpgsql $body$ BEGIN CREATE ROLE x LOGIN PASSWORD '***'; END $body$", true},
		{"EXECUTE string", "DO $$BEGIN EXECUTE 'ALTER ROLE bob PASSWORD ''hunter2'''; END$$",
			"DO $$BEGIN EXECUTE 'ALTER ROLE bob PASSWORD ''***'''; END$$", true},
		{"EXECUTE concatenation", "DO $$BEGIN EXECUTE 'ALTER ROLE bob PASSWORD ' || quote_literal('hunter2'); END$$",
			"DO $$BEGIN EXECUTE 'ALTER ROLE bob PASSWORD ' || quote_literal('***'); END$$", true},
		{"EXECUTE quote concatenation", "DO $$BEGIN EXECUTE 'ALTER ROLE bob PASSWORD ''' || 'hunter2' || ''''; END$$",
			"DO $$BEGIN EXECUTE 'ALTER ROLE bob PASSWORD ''***''' || '***' || ''''; END$$", true},
		{"format", "DO $$BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', 'bob', 'hunter2'); END$$",
			"DO $$BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', '***', '***'); END$$", true},
		{"format outside DO", "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', 'bob', 'hunter2'), 'kept'",
			"SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', '***', '***'), 'kept'", true},
		{"function body", "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $f$ ALTER ROLE bob PASSWORD 'hunter2' $f$",
			"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $f$ ALTER ROLE bob PASSWORD '***' $f$", true},
		{"DO block without a password", "DO $$BEGIN RAISE NOTICE 'password reset'; END$$",
			"DO $$BEGIN RAISE NOTICE 'password reset'; END$$", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MaskStatement(tt.in, nil); got != tt.want {
				t.Errorf("MaskStatement(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if r := maskStatement(tt.in, nil); r.sensitive != tt.sensitive {
				t.Errorf("sensitive = %v, want %v", r.sensitive, tt.sensitive)
			}
		})
	}
}

func TestMaskStatementExtraPatterns(t *testing.T) {
	extra := []*regexp.Regexp{
		regexp.MustCompile(`\b\d{4}-\d{4}-\d{4}-\d{4}\b`),
		regexp.MustCompile(`(?i)ssn:\s*\d+`),
	}
	tests := []struct{ in, want string }{
		{"INSERT INTO c VALUES ('1234-5678-9012-3456', 'ssn: 123456')", "INSERT INTO c VALUES ('***', '***')"},
		{"SELECT 1", "SELECT 1"},
		{"ALTER ROLE x PASSWORD '1234-5678-9012-3456'", "ALTER ROLE x PASSWORD '***'"},
		{"SELECT '$1 ${x}'", "SELECT '$1 ${x}'"},
	}
	for _, tt := range tests {
		if got := MaskStatement(tt.in, extra); got != tt.want {
			t.Errorf("MaskStatement(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

// FuzzMaskStatement checks that masking never panics and that a password
// literal after PASSWORD never survives it.
func FuzzMaskStatement(f *testing.F) {
	for _, s := range []string{"ALTER ROLE x PASSWORD 'secretvalue'", "DO $$BEGIN EXECUTE 'ALTER ROLE b PASSWORD ''x'''; END$$", "SELECT format('ALTER ROLE %I PASSWORD %L', 'a', 'b')", "SELECT $a$ x $a$", "/* /* */", "E'\\", "U&'", "$$", "password=''"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = MaskStatement(s, nil)
		stmt := "ALTER ROLE x PASSWORD '" + strings.ReplaceAll(s, "'", "''") + "zzsecretzz'"
		if got := MaskStatement(stmt, nil); strings.Contains(got, "zzsecretzz") {
			t.Errorf("MaskStatement(%q) = %q", stmt, got)
		}
	})
}
