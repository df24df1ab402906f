package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

// logFlags are the flags of `sessions logs`.
type logFlags struct {
	follow bool
	conn   string
	kinds  []string
	errors bool
	tail   int
	since  string
	search string
}

// filtered reports whether the flags select some events only.
func (f *logFlags) filtered() bool {
	return f.conn != "" || len(f.kinds) > 0 || f.errors || f.since != "" || f.tail > 0 || f.search != ""
}

// logKinds are the event kinds (sessionlog.Kind*) this version records.
var logKinds = []string{"query", "execute", "function_call", "copy_in", "copy_out", "command", "connect", "disconnect"}

// logPageSize is the page `sessions logs` asks for.
const logPageSize = 500

// logPollInterval is how often `sessions logs --follow` asks for new
// events. An event reaches the server within about 100 ms of its
// statement's answer (the gateway's spool writes every 50 ms and uploads at
// once), so a statement shows within about half a second.
const logPollInterval = 400 * time.Millisecond

// getLogPage reads one page of a session's log.
func getLogPage(ctx context.Context, c *client, id string, q url.Values) (*session.Logs, error) {
	var page session.Logs
	if err := c.do(ctx, http.MethodGet, "/api/v1/sessions/"+url.PathEscape(id)+"/logs", q, nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// sessionLogs prints a session's events that match f; with f.follow it
// polls for new ones until the session has ended and a poll brings nothing.
func (o *options) sessionLogs(ctx context.Context, c *client, id string, f logFlags) error {
	if f.tail < 0 || f.tail > 1000 {
		return fmt.Errorf("--tail %d: give a number of events from 1 to 1000", f.tail)
	}
	q := url.Values{"limit": {strconv.Itoa(logPageSize)}}
	if len(f.kinds) > 0 {
		for _, k := range f.kinds {
			if !slices.Contains(logKinds, k) {
				fmt.Fprintf(o.stderr, "note: --kind %q is not a kind this version records (%s)\n", k, strings.Join(logKinds, ", "))
			}
		}
		q.Set("kind", strings.Join(f.kinds, ","))
	}
	if f.errors {
		q.Set("errors", "true")
	}
	if f.since != "" {
		t, err := parseTimeFlag(f.since)
		if err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		q.Set("since", t.UTC().Format(time.RFC3339Nano))
	}
	if f.search != "" {
		q.Set("search", f.search)
	}
	conns := &connNumbers{byID: map[string]int{}}
	if f.filtered() {
		// Number the connections as the whole log does, whatever is shown.
		if err := conns.load(ctx, c, id); err != nil {
			return err
		}
	}
	if f.conn != "" {
		conn, err := conns.resolve(f.conn)
		if err != nil {
			return fmt.Errorf("--conn: %w", err)
		}
		q.Set("conn", conn)
	}
	if f.tail > 0 {
		q.Set("tail", strconv.Itoa(f.tail))
	}
	pr := &logPrinter{w: o.stdout, conns: conns}
	var after int64
	printed := false
	for {
		q.Set("after", strconv.FormatInt(after, 10))
		page, err := getLogPage(ctx, c, id, q)
		if err != nil {
			return err
		}
		q.Del("tail") // then the events after the tail
		var evs []sessionlog.Event
		for _, e := range page.Events {
			if o.output == "json" {
				// One JSON object per line, as the server wrote it (no
				// HTML escaping: a statement's < stays <).
				enc := json.NewEncoder(o.stdout)
				enc.SetEscapeHTML(false)
				if err := enc.Encode(e); err != nil {
					return err
				}
				printed = true
				continue
			}
			evs = append(evs, e)
		}
		if len(evs) > 0 {
			if f.filtered() {
				// A connection opened since the numbers were loaded.
				if err := conns.refresh(ctx, c, id, evs); err != nil {
					return err
				}
			}
			pr.print(evs)
			printed = true
		}
		after = max(after, page.Next)
		if page.More || len(page.Events) == logPageSize {
			continue
		}
		if !f.follow || (page.Ended && len(page.Events) == 0) {
			if !printed && o.output != "json" {
				fmt.Fprintln(o.stdout, "(no events)")
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(logPollInterval):
		}
	}
}

// connNumbers numbers a session's connections #1, #2... in the order they
// opened: the order of their connect events, else of their first event.
type connNumbers struct {
	byID  map[string]int
	ids   []string // by number - 1
	after int64    // the seq of the last connect event loaded
}

// number returns the connection's number, giving the next one to a
// connection not seen before.
func (n *connNumbers) number(id string) int {
	if k, ok := n.byID[id]; ok {
		return k
	}
	n.ids = append(n.ids, id)
	n.byID[id] = len(n.ids)
	return len(n.ids)
}

// load numbers the connections of the session's connect events after the
// last ones loaded (the server filters them: a few events per connection).
func (n *connNumbers) load(ctx context.Context, c *client, id string) error {
	q := url.Values{"kind": {"connect"}, "limit": {"1000"}}
	for {
		q.Set("after", strconv.FormatInt(n.after, 10))
		page, err := getLogPage(ctx, c, id, q)
		if err != nil {
			return err
		}
		for _, e := range page.Events {
			if e.Kind == "connect" && e.ConnID != "" {
				n.number(e.ConnID)
			}
		}
		n.after = max(n.after, page.Next)
		if !page.More {
			return nil
		}
	}
}

// refresh loads the connect events of connections among evs not numbered
// yet, so that a connection opened while --follow runs gets its number in
// the session, not in what is shown.
func (n *connNumbers) refresh(ctx context.Context, c *client, id string, evs []sessionlog.Event) error {
	for _, e := range evs {
		if _, ok := n.byID[e.ConnID]; !ok && e.ConnID != "" {
			return n.load(ctx, c, id)
		}
	}
	return nil
}

// resolve finds the connection that v names: #2 or 2 (its number), its id,
// or the start or end of its id.
func (n *connNumbers) resolve(v string) (string, error) {
	v = strings.TrimSpace(v)
	if num, err := strconv.Atoi(strings.TrimPrefix(v, "#")); err == nil {
		if num < 1 || num > len(n.ids) {
			return "", fmt.Errorf("the session has no connection #%d (it has %d)", num, len(n.ids))
		}
		return n.ids[num-1], nil
	}
	lv := strings.ToLower(v)
	var found []string
	for _, id := range n.ids {
		l := strings.ToLower(id)
		if l == lv {
			return id, nil
		}
		if len(lv) >= 4 && (strings.HasPrefix(l, lv) || strings.HasSuffix(l, lv)) {
			found = append(found, id)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return "", fmt.Errorf("%d connections of the session match %q; give more of the id, or its number", len(found), v)
	case uuidRE.MatchString(lv):
		return v, nil // a connection with no connect event
	}
	return "", fmt.Errorf("no connection of the session matches %q; give its number (#2) or its id", v)
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// logPrinter prints events as aligned columns: SEQ, TIME, CONN, KIND,
// OUTCOME, ROWS, DURATION, then STATEMENT, whose further lines (the rest of
// a multi-line statement, an error's message, an outcome too long for its
// column) are indented to the STATEMENT column. The columns start at widths
// that fit most values (logMinWidth), OUTCOME at what the first page needs
// up to maxOutcomeWidth; after the header only SEQ, CONN, ROWS or DURATION
// may widen (past 9999 events, 999 connections...), so that the pages of
// --follow stay aligned with the header.
type logPrinter struct {
	w      io.Writer
	conns  *connNumbers
	header bool
	width  [7]int
}

// maxOutcomeWidth bounds the OUTCOME column; a longer outcome (the tags of
// many statements) is cut there and written whole on the line below.
const maxOutcomeWidth = 40

var logHeader = [7]string{"SEQ", "TIME", "CONN", "KIND", "OUTCOME", "ROWS", "DURATION"}

// logMinWidth are the columns' first widths: 9999 events, 999 connections,
// the kinds but function_call, a command tag and SQLSTATE, and a duration.
var logMinWidth = [7]int{4, 19, 4, len("disconnect"), 16, 4, 8}

// logRow is one event, ready to print.
type logRow struct {
	cols  [7]string
	lines []string // STATEMENT, and the lines under it
}

func (p *logPrinter) print(evs []sessionlog.Event) {
	rows := make([]logRow, len(evs))
	for i := range evs {
		rows[i] = p.row(&evs[i])
	}
	if !p.header {
		p.width = logMinWidth
		for _, r := range rows {
			p.width[4] = max(p.width[4], min(utf8.RuneCountInString(r.cols[4]), maxOutcomeWidth))
		}
	}
	for i := range rows {
		r := &rows[i]
		if outcome := []rune(r.cols[4]); len(outcome) > p.width[4] {
			r.cols[4] = string(outcome[:p.width[4]-1]) + "…"
			note := "-- " + string(outcome)
			if len(r.lines) == 1 && r.lines[0] == "" {
				r.lines[0] = note
			} else {
				r.lines = append(r.lines[:1], append([]string{note}, r.lines[1:]...)...)
			}
		}
		for c, v := range r.cols {
			p.width[c] = max(p.width[c], utf8.RuneCountInString(v))
		}
	}
	if !p.header {
		p.header = true
		p.line(logHeader, []string{"STATEMENT"})
	}
	for _, r := range rows {
		p.line(r.cols, r.lines)
	}
}

// line writes one row: numbers (SEQ, ROWS) right-aligned, the rest left.
func (p *logPrinter) line(cols [7]string, lines []string) {
	var b strings.Builder
	indent := 0
	for i, c := range cols {
		pad := strings.Repeat(" ", p.width[i]-utf8.RuneCountInString(c))
		if i == 0 || i == 5 {
			b.WriteString(pad + c)
		} else {
			b.WriteString(c + pad)
		}
		b.WriteString("  ")
		indent += p.width[i] + 2
	}
	first := ""
	if len(lines) > 0 {
		first = lines[0]
	}
	b.WriteString(strings.TrimRight(first, " "))
	b.WriteByte('\n')
	for _, l := range lines[min(1, len(lines)):] {
		b.WriteString(strings.Repeat(" ", indent))
		b.WriteString(strings.TrimRight(l, " "))
		b.WriteByte('\n')
	}
	fmt.Fprint(p.w, b.String())
}

func (p *logPrinter) row(e *sessionlog.Event) logRow {
	var r logRow
	r.cols[0] = strconv.FormatInt(e.Seq, 10)
	r.cols[1] = fmtTime(e.Time)
	if e.Damaged != "" {
		r.cols[2], r.cols[3], r.cols[4], r.cols[5], r.cols[6] = "-", "DAMAGED", "-", "-", "-"
		r.lines = []string{"-- " + printable(e.Damaged)}
		return r
	}
	r.cols[2] = "-"
	if e.ConnID != "" {
		r.cols[2] = "#" + strconv.Itoa(p.conns.number(e.ConnID))
	}
	r.cols[3] = printable(e.Kind)
	var notes []string
	r.cols[4] = logOutcome(e)
	r.cols[5] = strconv.FormatInt(e.Rows, 10)
	r.cols[6] = fmtMicros(e.DurationUS)
	if e.Kind == "connect" || e.Kind == "disconnect" {
		r.cols[5] = "-"
	}

	r.lines = statementLines(e.Statement)
	var extra []string
	if len(e.Params) > 0 {
		params := make([]string, len(e.Params))
		for i, v := range e.Params {
			params[i] = printable(v)
		}
		extra = append(extra, "params: "+strings.Join(params, ", "))
	}
	if e.Collection != "" {
		extra = append(extra, "collection: "+printable(e.Database)+"."+printable(e.Collection))
	}
	if e.Bytes > 0 {
		extra = append(extra, fmt.Sprintf("%d bytes", e.Bytes))
	}
	if len(extra) > 0 {
		last := len(r.lines) - 1
		if r.lines[last] != "" {
			r.lines[last] += "  "
		}
		r.lines[last] += "-- " + strings.Join(extra, "; ")
	}
	if e.ErrorMsg != "" {
		for _, l := range statementLines(e.ErrorMsg) {
			notes = append(notes, "-- "+l)
		}
	}
	if len(r.lines) == 1 && r.lines[0] == "" && len(notes) > 0 {
		r.lines, notes = notes[:1], notes[1:] // no statement: the note in its place
	}
	r.lines = append(r.lines, notes...)
	return r
}

// statementLines splits a statement into lines without control characters,
// tabs as four spaces, without its leading and trailing blank lines and
// without the indentation all its lines share. It returns at least one
// line.
func statementLines(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var lines []string
	indent := -1
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimRight(printable(strings.ReplaceAll(l, "\t", "    ")), " ")
		if l != "" {
			n := len(l) - len(strings.TrimLeft(l, " "))
			if indent < 0 || n < indent {
				indent = n
			}
		}
		lines = append(lines, l)
	}
	for len(lines) > 1 && lines[0] == "" {
		lines = lines[1:]
	}
	for len(lines) > 1 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, l := range lines {
		if len(l) >= indent && indent > 0 {
			lines[i] = l[indent:]
		}
	}
	return lines
}

// printable writes the control characters of s (but not newlines: see
// statementLines), and bytes that are not UTF-8, as Go escapes (\x1b), so
// that a recorded statement cannot drive the reader's terminal.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 && r != '\n' || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// fmtMicros writes a duration in microseconds briefly: 412µs, 1.2ms, 3.51s.
func fmtMicros(us int64) string {
	d := time.Duration(us) * time.Microsecond
	switch {
	case d < time.Millisecond:
		return strconv.FormatInt(us, 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(us)/1000, 'f', 1, 64) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	}
	return d.Round(time.Second).String()
}

// logOutcome is the OUTCOME column: the outcome with its error code, or,
// for a statement with no outcome (the start record the gateway delivered
// while the statement ran), "running".
func logOutcome(e *sessionlog.Event) string {
	outcome := printable(e.Outcome)
	if e.ErrorCode != "" {
		outcome += " (" + printable(e.ErrorCode) + ")"
	}
	switch {
	case outcome != "":
		return outcome
	case e.Kind != "connect" && e.Kind != "disconnect":
		return "running"
	}
	return "-"
}
