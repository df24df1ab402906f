package webconsole

import (
	"regexp"
	"strings"
)

// countStatements counts the statements of a batch of SQL.
func countStatements(sql string) int { return len(splitStatements(sql)) }

// beginAtomic finds a SQL-standard function body (BEGIN ATOMIC ... END),
// whose statements end with semicolons inside the one statement. psql's
// splitter tracks those bodies; this one does not, so a batch holding one
// is sent whole, as a simple query.
var beginAtomic = regexp.MustCompile(`(?i)\bbegin\s+atomic\b`)

// splitStatements splits a batch of SQL into its statements: the parts
// between semicolons that hold more than white space and comments, each
// without its semicolon. It knows PostgreSQL's quoting: '...' (with ”
// inside), E'...' (with backslash escapes), "..." identifiers,
// $tag$...$tag$ bodies, -- and nested /* */ comments; not BEGIN ATOMIC
// bodies (see beginAtomic). The database parses each statement.
func splitStatements(sql string) []string {
	var out []string
	start := 0
	content := false
	for i := 0; i < len(sql); i++ {
		ch := sql[i]
		switch {
		case ch == ';':
			if content {
				out = append(out, sql[start:i])
			}
			start, content = i+1, false
			continue
		case ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f':
			continue
		case ch == '-' && i+1 < len(sql) && sql[i+1] == '-':
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				i = len(sql)
			} else {
				i += j
			}
			continue
		case ch == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth := 1
			i += 2
			for ; i < len(sql) && depth > 0; i++ {
				switch {
				case sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*':
					depth++
					i++
				case sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/':
					depth--
					i++
				}
			}
			i--
			continue
		}
		content = true
		switch {
		case ch == '\'':
			backslash := i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i < 2 || !isIdent(sql[i-2]))
			i = skipQuoted(sql, i, '\'', backslash)
		case ch == '"':
			i = skipQuoted(sql, i, '"', false)
		case ch == '$' && (i == 0 || !isIdent(sql[i-1])):
			if end := strings.IndexByte(sql[i+1:], '$'); end >= 0 {
				tag := sql[i : i+end+2]
				if validTag(tag[1 : len(tag)-1]) {
					if close := strings.Index(sql[i+len(tag):], tag); close >= 0 {
						i += len(tag) + close + len(tag) - 1
					} else {
						i = len(sql)
					}
				}
			}
		}
	}
	if content {
		out = append(out, sql[start:])
	}
	return out
}

// skipQuoted returns the index of the quote that closes the one at i.
func skipQuoted(sql string, i int, q byte, backslash bool) int {
	for j := i + 1; j < len(sql); j++ {
		switch {
		case backslash && sql[j] == '\\':
			j++
		case sql[j] == q:
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j
		}
	}
	return len(sql)
}

func isIdent(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// validTag reports whether t can be a dollar quote's tag ("" included).
func validTag(t string) bool {
	for i := 0; i < len(t); i++ {
		if !isIdent(t[i]) || (i == 0 && t[i] >= '0' && t[i] <= '9') {
			return false
		}
	}
	return true
}
