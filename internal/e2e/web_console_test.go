package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestWebConsole drives the browser SQL console in Chromium against the
// real binary, gateway and PostgreSQL: Web Access opens a console whose
// session has access method web; select 1 (with Ctrl+Enter), a DDL
// statement, a failing statement (SQLSTATE, message), a 5,000-row select
// (1,000 shown), a transaction's state, and pg_sleep(60) cancelled from the
// console; the session log (`airlock sessions logs` and the Sessions page)
// holds those statements and their outcomes; a terminate from the CLI ends
// the console, and closing a console's page ends its session.
func TestWebConsole(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	b := newWebBrowser(t, w.srv.URL)
	b.login(w.srv.AdminEmail, w.srv.AdminPassword)

	// Web Access on the resource's page opens a console.
	b.open("/projects/"+w.project+"/resources/main-db", `tr[data-account="app"]`)
	b.do(submit(chromedp.ID("web-access-app")), chromedp.WaitVisible(chromedp.ID("sql")),
		chromedp.WaitVisible(chromedp.CSS(`#schema-tree details[data-schema="public"]`)))
	sid := strings.TrimSpace(b.text("#console-session"))
	var sess struct{ Status, EndReason, EndMessage string }
	w.admin.JSON(&sess, "", "sessions", "show", sid)
	if sess.Status != "active" {
		t.Fatalf("the console's session: %+v", sess)
	}

	run := func(sql string) {
		t.Helper()
		b.do(chromedp.SetValue(chromedp.ID("sql"), sql), chromedp.Evaluate[chromedp.Void](`document.getElementById("status").textContent = ""`),
			chromedp.Click(chromedp.ID("run")),
			chromedp.Poll[chromedp.Void](`document.getElementById("status").textContent.indexOf(" in ") > 0`, chromedp.WithPollingTimeout(40*time.Second)))
	}

	// select 1, with Ctrl+Enter.
	b.do(chromedp.SetValue(chromedp.ID("sql"), "select 1 as one"), chromedp.Focus(chromedp.ID("sql")),
		chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)),
		chromedp.WaitVisible(chromedp.CSS(`#results table.grid`)))
	if got := b.text("#results"); !strings.Contains(got, "one") || !strings.Contains(got, "int4") || !strings.Contains(got, "SELECT 1") {
		t.Fatalf("select 1 shows %q", got)
	}
	if got := b.text("#tx-state"); got != "idle" {
		t.Fatalf("transaction state %q", got)
	}

	// DDL and DML: the command tags and affected rows.
	run("create temp table web_t (id int primary key, name varchar(20)); insert into web_t values (1, 'a'), (2, 'b'); update web_t set name = 'c' where id = 2")
	got := b.text("#results")
	for _, want := range []string{"CREATE TABLE", "INSERT 0 2", "2 rows affected", "UPDATE 1", "1 row affected"} {
		if !strings.Contains(got, want) {
			t.Fatalf("the DDL batch shows %q, want %q", got, want)
		}
	}
	run("select * from web_t order by id")
	if got := b.text("#results"); !strings.Contains(got, "varchar(20)") || !strings.Contains(got, "c") {
		t.Fatalf("the table shows %q", got)
	}

	// A failing statement: SQLSTATE and message; then a transaction.
	run("select * from no_such_table")
	if got := b.text("#sql-error"); !strings.Contains(got, "42P01") || !strings.Contains(got, `relation "no_such_table" does not exist`) {
		t.Fatalf("the error shows %q", got)
	}
	run("begin; select 1")
	if got := b.text("#tx-state"); got != "in transaction" {
		t.Fatalf("after begin: %q", got)
	}
	run("select 1/0")
	if got := b.text("#tx-state"); got != "failed transaction" || !strings.Contains(b.text("#sql-error"), "22012") {
		t.Fatalf("after an error in a transaction: %q, %q", got, b.text("#sql-error"))
	}
	run("rollback")
	if got := b.text("#tx-state"); got != "idle" {
		t.Fatalf("after rollback: %q", got)
	}

	// 5,000 rows: 1,000 shown, and the grid says so.
	run("select g, md5(g::text) from generate_series(1, 5000) g")
	if n := b.eval(`Promise.resolve(String(document.querySelectorAll("#results table.grid tbody tr").length))`); n != "1000" {
		t.Fatalf("the grid shows %s rows", n)
	}
	if got := b.text("#results .truncated"); !strings.Contains(got, "first 1000 rows") || !strings.Contains(got, "not fetched") {
		t.Fatalf("the truncation note: %q", got)
	}
	saveScreenshot(t, b, "web-console-rows.png")
	// In a batch of several statements, each result shows at most 1,000
	// rows too, and the rest are not fetched either.
	run("select 1 as first; select g from generate_series(1, 1500) g; select 3 as third")
	if got := b.text("#results"); !strings.Contains(got, "first") || !strings.Contains(got, "third") || !strings.Contains(got, "not fetched") {
		t.Fatalf("a batch with a long result: %q", got)
	}
	if n := b.eval(`Promise.resolve(String(document.querySelectorAll("#results .truncated").length))`); n != "1" {
		t.Fatalf("%s results of the batch say they were cut, want 1", n)
	}
	if n := b.eval(`Promise.resolve(String(document.querySelectorAll("#results table.grid tbody tr").length))`); n != "1002" {
		t.Fatalf("the batch's grids show %s rows, want 1 + 1000 + 1", n)
	}
	// A batch is one transaction, as psql -c sends it: an error in it
	// undoes what ran before.
	run("insert into web_t values (3, 'x'); select 1/0")
	if !strings.Contains(b.text("#sql-error"), "22012") {
		t.Fatalf("the failing batch shows %q", b.text("#sql-error"))
	}
	run("select count(*) as n from web_t")
	if got := b.text("#results table.grid tbody"); strings.TrimSpace(got) != "2" {
		t.Fatalf("after a failed batch web_t has %q rows, want 2", got)
	}

	// The schema browser: the account's table and its columns.
	// The tree on the page is marked, so that the wait below is met by the
	// refreshed tree only, not by the nodes the refresh replaces.
	b.eval(`(() => { document.querySelectorAll("#schema-tree button").forEach(e => e.dataset.old = "1"); return "" })()`)
	b.do(chromedp.Click(chromedp.ID("schema-refresh")),
		chromedp.WaitVisible(chromedp.CSS(`#schema-tree button[data-table="items"]:not([data-old])`)),
		chromedp.Click(chromedp.CSS(`#schema-tree button[data-table="items"]:not([data-old])`)), chromedp.WaitVisible(chromedp.ID("columns")))
	if got := b.text("#columns"); !strings.Contains(got, "id") || !strings.Contains(got, "integer not null") || !strings.Contains(got, "text") {
		t.Fatalf("the columns of items: %q", got)
	}

	// pg_sleep(60), cancelled from the console with a real CancelRequest.
	start := time.Now()
	b.do(chromedp.SetValue(chromedp.ID("sql"), "select pg_sleep(60)"), chromedp.Click(chromedp.ID("run")),
		chromedp.WaitEnabled(chromedp.ID("cancel")))
	time.Sleep(time.Second)
	// A second batch while one runs is refused, the first one untouched.
	busy := b.eval(`fetch("/console/" + document.getElementById("console").dataset.console + "/run", {method: "POST", credentials: "same-origin",
		headers: {"X-CSRF-Token": document.getElementById("console").dataset.csrf, "Content-Type": "application/json"},
		body: JSON.stringify({sql: "select 2"})}).then(r => r.json().then(j => r.status + " " + j.error))`)
	if !strings.HasPrefix(busy, "409 ") || !strings.Contains(busy, "a statement is running") {
		t.Fatalf("a second batch while pg_sleep runs: %q", busy)
	}
	b.do(chromedp.Click(chromedp.ID("cancel")), chromedp.WaitVisible(chromedp.ID("sql-error")))
	if got := b.text("#sql-error"); !strings.Contains(got, "57014") || !strings.Contains(got, "canceling statement due to user request") {
		t.Fatalf("the cancelled statement shows %q", got)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the cancel took %s", d)
	}
	saveScreenshot(t, b, "web-console.png")
	// The console is usable after the cancel.
	run("select 2 as two")
	if got := b.text("#results"); !strings.Contains(got, "two") || b.has("#sql-error") {
		t.Fatalf("after the cancel: %q", got)
	}

	// The session log holds each statement and its outcome.
	w.waitOutcome(sid, "select 1 as one", "SELECT 1")
	w.waitOutcome(sid, "select * from no_such_table", "error")
	w.waitOutcome(sid, "select pg_sleep(60)", "error")
	var cancelled bool
	for _, line := range strings.Split(strings.TrimSpace(w.admin.Must("", "sessions", "logs", sid, "--output", "json")), "\n") {
		var ev struct{ Statement, Outcome, Error string }
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Statement == "select pg_sleep(60)" {
			cancelled = strings.Contains(line, "57014") || strings.Contains(line, "cancel")
		}
	}
	if !cancelled {
		t.Errorf("the session log does not say that pg_sleep(60) was cancelled")
	}
	out := w.admin.Must("", "sessions", "logs", sid, "--output", "json")
	for _, want := range []string{"create temp table web_t", "generate_series(1, 5000)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the session log lacks %q:\n%s", want, out)
		}
	}
	// The Sessions page lists the web session, and its page shows its
	// statements and outcomes.
	b.open("/sessions?project="+w.project, chromedp.CSS(`tr[data-session="`+sid+`"]`))
	if got := b.text(chromedp.CSS(`tr[data-session="` + sid + `"] td.method`)); got != "web" {
		t.Errorf("the sessions list says the access method is %q", got)
	}
	b.open("/sessions/"+sid, "h1")
	if got := b.eval(`Promise.resolve([...document.querySelectorAll("dt")].find(d => d.textContent == "How").nextElementSibling.textContent)`); got != "web" {
		t.Errorf("the session page says the access method is %q", got)
	}
	page := b.pageText()
	for _, want := range []string{"select 1 as one", "select * from no_such_table", "select pg_sleep(60)"} {
		if !strings.Contains(page, want) {
			t.Errorf("the session page lacks %q", want)
		}
	}
	saveScreenshot(t, b, "web-console-session.png")

	// Leaving the console's page closed its event stream: the session ended.
	deadline := time.Now().Add(15 * time.Second)
	for w.admin.JSON(&sess, "", "sessions", "show", sid); sess.Status == "active" && time.Now().Before(deadline); w.admin.JSON(&sess, "", "sessions", "show", sid) {
		time.Sleep(200 * time.Millisecond)
	}
	if sess.Status != "ended" || sess.EndReason != "ended_by_user" || !strings.Contains(sess.EndMessage, "page was closed") {
		t.Fatalf("after leaving the console: %+v", sess)
	}

	// A new console, terminated from the CLI: the console says so.
	b.open("/projects/"+w.project+"/resources/main-db", `tr[data-account="app"]`)
	b.do(submit(chromedp.ID("web-access-app")), chromedp.WaitVisible(chromedp.ID("sql")))
	sid2 := strings.TrimSpace(b.text("#console-session"))
	if sid2 == sid {
		t.Fatal("the second console reused the session")
	}
	w.admin.Must("", "sessions", "terminate", sid2)
	b.do(chromedp.WaitVisible(chromedp.ID("console-ended")))
	if got := b.text("#console-ended"); !strings.Contains(got, "terminated by an administrator") {
		t.Fatalf("the terminated console says %q", got)
	}
	w.admin.JSON(&sess, "", "sessions", "show", sid2)
	if sess.EndReason != "terminated" {
		t.Fatalf("the terminated console's session: %+v", sess)
	}
	saveScreenshot(t, b, "web-console-terminated.png")
}

// TestWebConsoleLimits: the project's statement timeout holds; a request
// the page never sends closes only its console; SQL over 1 MiB is
// refused; at most five live web sessions per user and project.
func TestWebConsoleLimits(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	// The statement timeout is a project setting: out of range is refused
	// and names the flag; 1s is taken.
	if _, errOut, code := w.admin.Run("", "projects", "update", w.project, "--console-statement-timeout", "2h"); code == 0 ||
		!strings.Contains(errOut, "--console-statement-timeout") || !strings.Contains(errOut, "1s to 1h") {
		t.Fatalf("a 2h console timeout: exit %d, %s", code, errOut)
	}
	w.admin.Must("", "projects", "update", w.project, "--console-statement-timeout", "1s")
	b := newWebBrowser(t, w.srv.URL)
	b.login(w.srv.AdminEmail, w.srv.AdminPassword)
	var webAccess string // the Web Access form's action
	open := func() string {
		t.Helper()
		b.open("/projects/"+w.project+"/resources/main-db", `tr[data-account="app"]`)
		webAccess = b.eval(`Promise.resolve(new URL(document.querySelector("#web-access-app").form.action).pathname)`)
		b.do(submit(chromedp.ID("web-access-app")), chromedp.WaitVisible(chromedp.ID("sql")))
		return b.eval(`Promise.resolve(document.getElementById("console").dataset.console)`)
	}
	// post sends body to the console's run endpoint from the page, as its
	// script does, and returns the status and the error.
	post := func(cid, body string) string {
		t.Helper()
		return b.eval(`fetch("/console/` + cid + `/run", {method: "POST", credentials: "same-origin",
			headers: {"X-CSRF-Token": document.getElementById("console").dataset.csrf, "Content-Type": "application/json"},
			body: ` + body + `}).then(r => r.json().then(j => r.status + " " + (j.error || "")))`)
	}
	// End session ends it, saying so.
	open()
	ended := strings.TrimSpace(b.text("#console-session"))
	b.do(chromedp.Click(chromedp.ID("end-console")), chromedp.WaitVisible(chromedp.ID("console-ended")))
	var sess struct{ Status, EndReason, EndMessage string }
	w.admin.JSON(&sess, "", "sessions", "show", ended)
	if sess.Status != "ended" || sess.EndReason != "ended_by_user" || !strings.Contains(sess.EndMessage, "ended from the web console") {
		t.Fatalf("after End session: %+v", sess)
	}

	cid := open()
	if page := b.text("#console-limits"); !strings.Contains(page, "Statement timeout 1s") {
		t.Fatalf("the console names its limits as %q, want the project's 1s statement timeout", page)
	}
	slow := b.eval(`fetch("/console/` + cid + `/run", {method: "POST", credentials: "same-origin",
		headers: {"X-CSRF-Token": document.getElementById("console").dataset.csrf, "Content-Type": "application/json"},
		body: JSON.stringify({sql: "select pg_sleep(5)"})}).then(r => r.json()).then(j => j.error && j.error.code ? j.error.code + " " + j.error.message : JSON.stringify(j))`)
	if !strings.HasPrefix(slow, "57014 ") || !strings.Contains(slow, "statement timeout") {
		t.Fatalf("pg_sleep(5) with a 1s console timeout: %s", slow)
	}
	big := `JSON.stringify({sql: "select '" + "x".repeat(1100000) + "'"})`
	if got := post(cid, big); !strings.HasPrefix(got, "413 ") || !strings.Contains(got, "1 MiB") {
		t.Fatalf("1.1 MB of SQL: %q", got)
	}
	if got := post(cid, `JSON.stringify({sql: "select 1"})`); !strings.HasPrefix(got, "200") {
		t.Fatalf("the console after a refused batch: %q", got)
	}
	sid := strings.TrimSpace(b.text("#console-session"))
	// A second console of the same browser (opened without leaving this
	// page, which would end this one) is not touched by it.
	beside := b.eval(`fetch("` + webAccess + `", {method: "POST", credentials: "same-origin",
		body: new URLSearchParams({csrf: document.getElementById("console").dataset.csrf})}).then(r => r.text())`)
	m1, m2 := consoleIDRE.FindStringSubmatch(beside), consoleSessionRE.FindStringSubmatch(beside)
	if m1 == nil || m2 == nil {
		t.Fatalf("a second console did not open: %.500s", beside)
	}
	other, otherSession := m1[1], m2[1]
	if got := post(cid, `JSON.stringify({sql: "select 1", evil: true})`); !strings.HasPrefix(got, "400 ") {
		t.Fatalf("an unexpected request: %q", got)
	}
	w.admin.JSON(&sess, "", "sessions", "show", sid)
	if sess.Status != "ended" || !strings.Contains(sess.EndMessage, "does not send") {
		t.Fatalf("after an unexpected request: %+v", sess)
	}
	if got := post(other, `JSON.stringify({sql: "select 1"})`); !strings.HasPrefix(got, "200") {
		t.Fatalf("another console after one got an unexpected request: %q", got)
	}
	w.admin.JSON(&sess, "", "sessions", "show", otherSession)
	if sess.Status != "active" {
		t.Fatalf("another console's session after one got an unexpected request: %+v", sess)
	}
	if got := b.eval(`fetch("/console/` + other + `/end", {method: "POST", credentials: "same-origin",
		headers: {"X-CSRF-Token": document.getElementById("console").dataset.csrf}}).then(r => String(r.status))`); !strings.HasPrefix(got, "2") {
		t.Fatalf("ending the second console: %s", got)
	}

	// Five live consoles at most: open them from the API's point of view
	// by posting the Web Access form five times from one page.
	b.open("/projects/"+w.project+"/resources/main-db", `tr[data-account="app"]`)
	form := `document.querySelector("form.web-access")`
	var live []string
	for i := 0; i < 6; i++ {
		got := b.eval(`fetch(` + form + `.action, {method: "POST", credentials: "same-origin", body: new FormData(` + form + `)}).then(r => r.text())`)
		if i < 5 {
			m := consoleSessionRE.FindStringSubmatch(got)
			if m == nil {
				t.Fatalf("console %d did not open: %s", i+1, got)
			}
			live = append(live, m[1])
		}
		if i == 5 && !strings.Contains(got, "5 live web console sessions") {
			t.Fatalf("a sixth console: %s", got)
		}
	}

	// Signing out ends the browser's consoles, saying why.
	b.do(submit(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
	for _, id := range live {
		w.admin.JSON(&sess, "", "sessions", "show", id)
		if sess.Status != "ended" || sess.EndReason != "ended_by_user" || !strings.Contains(sess.EndMessage, "signed out") {
			t.Fatalf("a console's session after signing out: %+v", sess)
		}
	}
}

var consoleIDRE = regexp.MustCompile(`data-console="([^"]+)"`)

var consoleSessionRE = regexp.MustCompile(`id="console-session">([0-9a-f-]{36})<`)

// saveScreenshot saves the page as name under $AIRLOCK_TEST_ARTIFACTS (or
// a temporary directory) and logs where.
func saveScreenshot(t *testing.T, b *webBrowser, name string) {
	t.Helper()
	dir := os.Getenv("AIRLOCK_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(dir, t.Name()+"-"+name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", path)
}
