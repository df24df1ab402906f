package postgres

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// masked is the text of the mask, what the session log shows in place of a
// secret.
const masked = "***"

// maskedLiteral replaces a password literal: still a string literal, so the
// statement reads as SQL.
const maskedLiteral = "'" + masked + "'"

// MaskStatement returns stmt as the session log records it: the passwords it
// holds replaced by '***', then every match of each of the extra patterns
// (the project's own, such as card numbers) replaced by ***.
//
// A password is the string literal or word that follows the keyword
// PASSWORD, with an optional = between them, as in CREATE or ALTER ROLE or
// USER ... [ENCRYPTED] PASSWORD '...', a user mapping's OPTIONS (password
// '...') or UPDATE ... SET password = '...'; the literal may be a standard
// '...' string, an E'...', U&'...' or N'...' string or a dollar-quoted one.
// Besides, any string literal that is a stored password verifier (SCRAM-SHA-256
// or md5, as psql's \password sends) is masked wherever it is, and so is the
// value of password= in a connection string literal (dblink, postgres_fdw).
// PASSWORD NULL is kept. A literal cut short (a statement recorded
// truncated) is masked to the end of the text.
//
// MaskStatement does not check that stmt is valid SQL: it masks what looks
// like a password and leaves the rest as it is.
func MaskStatement(stmt string, extra []*regexp.Regexp) string {
	return maskStatement(stmt, extra).text
}

// maskResult is a statement as the session log records it.
type maskResult struct {
	text string
	// sensitive is set when the statement mentions a password (the word
	// PASSWORD outside of literals, or a verifier): the values bound to
	// its parameters are masked too.
	sensitive bool
	// secrets are the values masked, to scrub an error message about the
	// statement; only for sensitive statements.
	secrets []string
}

// maskStatement masks stmt, as MaskStatement documents, and says whether the
// statement is sensitive.
func maskStatement(stmt string, extra []*regexp.Regexp) maskResult {
	r := maskResult{text: stmt}
	if mayHoldPassword(stmt) {
		r = maskPasswords(stmt)
	}
	r.text = applyPatterns(r.text, extra)
	return r
}

// applyPatterns replaces each match of each pattern in s with ***.
func applyPatterns(s string, patterns []*regexp.Regexp) string {
	for _, re := range patterns {
		if re != nil {
			s = re.ReplaceAllLiteralString(s, masked)
		}
	}
	return s
}

// mayHoldPassword is the fast path of maskStatement: most statements
// mention neither a password nor a verifier, and are not lexed.
func mayHoldPassword(s string) bool {
	for i := 0; i < len(s); i++ {
		var word string
		switch s[i] | 0x20 { // ASCII lower case, and a few other bytes
		case 'p':
			word = "password"
		case 'm':
			word = "md5"
		case 's':
			word = "scram-sha-256$"
		default:
			continue
		}
		if len(s)-i >= len(word) && strings.EqualFold(s[i:i+len(word)], word) {
			return true
		}
	}
	return false
}

// containsFold reports whether s contains sub (lower-case ASCII), ignoring
// ASCII case, without allocating.
func containsFold(s, sub string) bool {
	first := sub[0]
	upper := first - ('a' - 'A')
	for i := 0; i+len(sub) <= len(s); i++ {
		if c := s[i]; (c == first || c == upper) && strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// maskPasswords lexes s as PostgreSQL does, enough to tell string literals,
// quoted identifiers, comments and words apart, and masks passwords.
func maskPasswords(s string) maskResult {
	return maskLex(s, 0).maskResult
}

// maxMaskDepth bounds the nesting of SQL in literals that masking follows
// (a DO block's body, an EXECUTE string in it, ...).
const maxMaskDepth = 4

// lexResult is maskLex's result: the masked text, and how it ends, for the
// literal it may be the content of.
type lexResult struct {
	maskResult
	// trailingPass: the text ends right after PASSWORD (or inside the
	// literal that follows it), so that what is concatenated next is
	// the password: 'ALTER ROLE x PASSWORD ' || 'secret'.
	trailingPass bool
	// formatHole: PASSWORD is followed by a format() placeholder (%L,
	// %s...), so that the arguments after the format string hold the
	// password.
	formatHole bool
}

// maskLex is maskPasswords at a nesting depth: string literals and
// dollar-quoted bodies that mention a password are SQL (a DO block, an
// EXECUTE string, a format() string) and are masked in turn, up to
// maxMaskDepth.
func maskLex(s string, depth int) lexResult {
	var (
		out       strings.Builder
		copied    int // s[:copied] is in out already
		r         maskResult
		afterPass bool // the last significant token is PASSWORD (or PASSWORD =)
		words     int  // significant tokens so far
		roleStmt  bool // CREATE or ALTER ROLE, USER or GROUP
		first     string
		res       lexResult
		parens    int  // open parentheses
		maskNext  bool // the next literal is a password (concatenated after PASSWORD)
		maskFrom  = -1 // literals at this paren depth or deeper are format() arguments of a password
	)
	// nested masks the content of a literal that is itself SQL.
	nested := func(content string) (lexResult, bool) {
		if depth >= maxMaskDepth || !mayHoldPassword(content) {
			return lexResult{}, false
		}
		in := maskLex(content, depth+1)
		return in, true
	}
	// secretLiteral reports whether the literal starting now is a
	// password by its place: after PASSWORD concatenated, or an argument
	// of a format() string with a password placeholder.
	secretLiteral := func() bool {
		if maskFrom >= 0 && parens < maskFrom {
			maskFrom = -1
		}
		return maskNext || maskFrom >= 0
	}
	replace := func(start, end int, with string, secret string) {
		out.WriteString(s[copied:start])
		out.WriteString(with)
		copied = end
		r.sensitive = true
		if secret != "" {
			r.secrets = append(r.secrets, secret)
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				res.maskResult = r.finish(s, &out, copied)
				return res
			}
			i += end + 1
			continue
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			i = skipBlockComment(s, i)
			continue
		}

		start := i
		lit, quote, backslash := literalStart(s, i)
		switch {
		case lit:
			end, content := scanQuoted(s, quote, backslash)
			if afterPass && !backslash && strings.IndexByte(content, '\\') >= 0 {
				// With standard_conforming_strings off, a backslash
				// escapes a quote even in '...': mask up to the later
				// of the two possible ends.
				if alt, altContent := scanQuoted(s, quote, true); alt > end {
					end, content = alt, altContent
				}
			}
			terminated := end-1 > quote && s[end-1] == s[quote]
			switch {
			case afterPass:
				replace(start, end, maskedLiteral, content)
				if !terminated && roleStmt {
					res.trailingPass = true
				}
			case secretLiteral():
				replace(start, end, maskedLiteral, content)
				maskNext = false
			case isVerifier(content):
				replace(start, end, maskedLiteral, content)
			case containsFold(content, "password"):
				if m, ok := maskConnString(content); ok {
					replace(quote+1, quote+1+len(content), m, "")
					break
				}
				if backslash {
					// E'...' SQL: its escapes are not followed; masked
					// whole.
					if depth < maxMaskDepth {
						replace(start, end, maskedLiteral, content)
					}
					break
				}
				sql := strings.ReplaceAll(content, "''", "'")
				if in, ok := nested(sql); ok {
					if in.text != sql {
						replace(quote+1, quote+1+len(content), strings.ReplaceAll(in.text, "'", "''"), "")
						r.secrets = append(r.secrets, in.secrets...)
					}
					if in.text != sql || in.trailingPass || in.formatHole {
						r.sensitive = true
					}
					maskNext = in.trailingPass
					if in.formatHole {
						maskFrom = parens
					}
				}
			}
			i = end
			afterPass = false
		case c == '$' && dollarTag(s, i) != "":
			tag := dollarTag(s, i)
			body := i + len(tag)
			end := len(s)
			content := s[body:]
			if k := strings.Index(s[body:], tag); k >= 0 {
				end = body + k + len(tag)
				content = s[body : body+k]
			}
			switch {
			case afterPass || secretLiteral() || isVerifier(content):
				replace(start, end, maskedLiteral, content)
				maskNext = false
			default:
				// A DO block or a function's body: SQL.
				if in, ok := nested(content); ok {
					if in.text != content {
						replace(body, body+len(content), in.text, "")
						r.secrets = append(r.secrets, in.secrets...)
					}
					if in.text != content || in.trailingPass || in.formatHole {
						r.sensitive = true
					}
				}
			}
			i = end
			afterPass = false
		case c == '"':
			end, _ := scanQuoted(s, i, false)
			i = end
			afterPass = false
		case isIdentStart(c):
			end := i + 1
			for end < len(s) && isIdentChar(s[end]) {
				end++
			}
			word := s[i:end]
			i = end
			switch {
			case strings.EqualFold(word, "password"):
				r.sensitive = true
				afterPass = true
			case afterPass && roleStmt && !strings.EqualFold(word, "null"):
				// PASSWORD secret, unquoted: a syntax error the
				// server reports with the word in its message.
				replace(start, end, masked, word)
				afterPass = false
			default:
				afterPass = false
			}
			switch words {
			case 0:
				first = word
			case 1:
				roleStmt = (strings.EqualFold(first, "create") || strings.EqualFold(first, "alter")) &&
					(strings.EqualFold(word, "role") || strings.EqualFold(word, "user") || strings.EqualFold(word, "group"))
			}
		case c == '=' && afterPass:
			i++ // PASSWORD = '...'
		case c == '%' && afterPass:
			// PASSWORD %L in a format() string.
			res.formatHole = roleStmt
			i++
			afterPass = false
		default:
			switch c {
			case '(':
				parens++
			case ')':
				parens--
			case ';':
				maskNext, maskFrom = false, -1
			}
			i++
			afterPass = false
		}
		words++
	}
	if afterPass && roleStmt {
		res.trailingPass = true
	}
	res.maskResult = r.finish(s, &out, copied)
	return res
}

// finish completes the masked text of maskPasswords.
func (r maskResult) finish(s string, out *strings.Builder, copied int) maskResult {
	if copied == 0 {
		r.text = s
		return r
	}
	out.WriteString(s[copied:])
	r.text = out.String()
	return r
}

// literalStart reports whether a string literal starts at s[i], where its
// opening quote is, and whether backslashes escape in it (E'...').
func literalStart(s string, i int) (ok bool, quote int, backslash bool) {
	at := func(j int, c byte) bool { return j < len(s) && s[j] == c }
	switch s[i] {
	case '\'':
		return true, i, false
	case 'e', 'E':
		if at(i+1, '\'') && !identBefore(s, i) {
			return true, i + 1, true
		}
	case 'n', 'N', 'b', 'B', 'x', 'X':
		if at(i+1, '\'') && !identBefore(s, i) {
			return true, i + 1, false
		}
	case 'u', 'U':
		if at(i+1, '&') && at(i+2, '\'') && !identBefore(s, i) {
			return true, i + 2, false
		}
	}
	return false, 0, false
}

// identBefore reports whether s[i] continues a word (so that the E of
// "somE'x'" is no prefix); the lexer never stops inside a word, so this is
// only a safeguard.
func identBefore(s string, i int) bool { return i > 0 && isIdentChar(s[i-1]) }

// scanQuoted returns the end (after the closing quote) and the raw content
// of the quoted token whose opening quote is at s[q]: a doubled quote stands
// for one, and with backslash, a backslash escapes the next byte. An
// unterminated token runs to the end of s.
func scanQuoted(s string, q int, backslash bool) (end int, content string) {
	quote := s[q]
	for j := q + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if backslash {
				j++
			}
		case quote:
			if j+1 < len(s) && s[j+1] == quote {
				j++
				continue
			}
			return j + 1, s[q+1 : j]
		}
	}
	return len(s), s[q+1:]
}

// skipBlockComment returns the end of the /* */ comment starting at s[i];
// such comments nest.
func skipBlockComment(s string, i int) int {
	depth := 0
	for j := i; j+1 < len(s); j++ {
		switch {
		case s[j] == '/' && s[j+1] == '*':
			depth++
			j++
		case s[j] == '*' && s[j+1] == '/':
			depth--
			j++
			if depth == 0 {
				return j + 1
			}
		}
	}
	return len(s)
}

// dollarTag returns the $tag$ that opens a dollar-quoted string at s[i], or
// "" if none does ($1 is a parameter).
func dollarTag(s string, i int) string {
	if identBefore(s, i) {
		return ""
	}
	for j := i + 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '$':
			return s[i : j+1]
		case j == i+1 && !isIdentStart(c):
			return ""
		case !isIdentStart(c) && (c < '0' || c > '9'):
			return ""
		}
	}
	return ""
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' || c == '$' }

// isVerifier reports whether a literal's content is a password verifier as
// pg_authid stores it: SCRAM-SHA-256$<iterations>:<salt>$<keys> or md5
// followed by 32 hexadecimal digits.
func isVerifier(content string) bool {
	if len(content) > 14 && strings.EqualFold(content[:14], "scram-sha-256$") {
		return true
	}
	if len(content) == 35 && strings.EqualFold(content[:3], "md5") {
		for i := 3; i < len(content); i++ {
			c := content[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
		return true
	}
	return false
}

// maskConnString masks the values of password= in the content of a string
// literal that holds a libpq connection string. A value may itself be
// quoted: its quotes are then doubled in the SQL literal.
func maskConnString(content string) (string, bool) {
	var out strings.Builder
	copied := 0
	for i := 0; i+8 <= len(content); i++ {
		if !strings.EqualFold(content[i:i+8], "password") || (i > 0 && isIdentChar(content[i-1])) {
			continue
		}
		j := i + 8
		for j < len(content) && content[j] == ' ' {
			j++
		}
		if j >= len(content) || content[j] != '=' {
			continue
		}
		j++
		for j < len(content) && content[j] == ' ' {
			j++
		}
		start, end := j, j
		if strings.HasPrefix(content[j:], "''") {
			if k := strings.Index(content[j+2:], "''"); k >= 0 {
				end = j + 2 + k + 2
			} else {
				end = len(content)
			}
		} else {
			for end < len(content) && content[end] != ' ' && content[end] != '\t' && content[end] != '\n' {
				end++
			}
		}
		if end == start {
			continue
		}
		out.WriteString(content[copied:start])
		out.WriteString(masked)
		copied = end
		i = end - 1
	}
	if copied == 0 {
		return content, false
	}
	out.WriteString(content[copied:])
	return out.String(), true
}

// scrubSecrets replaces the secrets of a sensitive statement in msg (an
// error message about it) with ***.
func scrubSecrets(msg string, secrets []string) string {
	for _, s := range secrets {
		if len(s) >= 3 {
			msg = strings.ReplaceAll(msg, s, masked)
		}
	}
	return msg
}

// validPrefix returns the longest prefix of s, at most n bytes long, that
// does not end in the middle of a UTF-8 sequence.
func validPrefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut > n-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
