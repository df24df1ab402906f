package e2e_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestWebUI drives the web UI in Chromium against the real binary: an
// admin signs in, creates a project, adds a PostgreSQL and a MongoDB
// (FerretDB) resource and accounts, edits and filters metadata, runs the
// Access command it shows, reads the session's log and terminates it; a
// viewer sees no controls; forged requests are refused.
func TestWebUI(t *testing.T) {
	pg := testenv.StartPostgres(t)
	ferret := testenv.StartFerretDB(t)
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	var gw struct{ EnrollmentToken string }
	admin.JSON(&gw, "", "gateways", "create", "dc1")
	e2e.Start(t, nil, "gateway", "--domain", srv.URL, "--token", gw.EnrollmentToken, "--data-dir", t.TempDir())

	b := newWebBrowser(t, srv.URL)
	b.open("/projects", "#login-form") // the login page, for anyone signed out
	b.login(srv.AdminEmail, srv.AdminPassword)
	if got := b.text("#signed-in"); got != srv.AdminEmail {
		t.Fatalf("signed in as %q", got)
	}
	if !strings.Contains(b.text("footer"), "Airlock ") {
		t.Fatalf("footer: %q", b.text("footer"))
	}
	b.reloadUntil("/gateways", `tr[data-gateway="dc1"]`, "online", 30*time.Second)

	// A project.
	b.open("/projects", "#project-form")
	b.do(chromedp.SendKeys(chromedp.ID("project-name"), "web-shop"), submit(chromedp.ID("create-project")),
		chromedp.WaitVisible(chromedp.ID("add-postgres")))
	var projects []struct{ ID, Name string }
	admin.JSON(&projects, "", "projects", "list")
	if len(projects) != 1 || projects[0].Name != "web-shop" {
		t.Fatalf("projects: %+v", projects)
	}
	pid := projects[0].ID

	// A PostgreSQL resource: port and TLS switches come filled in.
	b.do(submit(chromedp.ID("add-postgres")), chromedp.WaitVisible(chromedp.ID("resource-form")))
	port, _ := chromedp.Run(b.ctx, chromedp.Value(chromedp.ID("port")))
	sslOn := b.eval(`String(document.getElementById("sslEnabled").checked && document.getElementById("sslRejectUnauthorized").checked)`)
	if port != "5432" || sslOn != "true" {
		t.Fatalf("PostgreSQL defaults: port %q, TLS on and verified %s", port, sslOn)
	}
	b.do(chromedp.SendKeys(chromedp.ID("name"), "pg-main"), chromedp.SendKeys(chromedp.ID("host"), "127.0.0.1"),
		chromedp.SetValue(chromedp.ID("port"), fmt.Sprint(pg.Port)), chromedp.SendKeys(chromedp.ID("database"), testenv.AppDatabase),
		chromedp.SetValue(chromedp.ID("sslCaPem"), string(pg.CA.CertPEM)),
		submit(chromedp.ID("create-resource")), chromedp.WaitVisible(chromedp.ID("resource-facts")))

	// A MongoDB resource on FerretDB without TLS: the auth database comes filled in.
	b.open("/projects/"+pid+"/resources/new?kind=mongodb", "#resource-form")
	if db, _ := chromedp.Run(b.ctx, chromedp.Value(chromedp.ID("database"))); db != "admin" {
		t.Fatalf("MongoDB auth database default %q", db)
	}
	b.do(chromedp.SendKeys(chromedp.ID("name"), "docs"),
		chromedp.SendKeys(chromedp.ID("connectionString"), fmt.Sprintf("mongodb://127.0.0.1:%d/", ferret.Port)),
		chromedp.Click(chromedp.ID("sslEnabled")), submit(chromedp.ID("create-resource")),
		chromedp.WaitVisible(chromedp.ID("account-form")))
	b.do(chromedp.SendKeys(chromedp.ID("account-name"), "docs-rw"), chromedp.SendKeys(chromedp.ID("account-username"), ferret.SCRAM256User.User),
		chromedp.SendKeys(chromedp.ID("account-password"), ferret.SCRAM256User.Password), submit(chromedp.ID("create-account")),
		// Not #notice: the resource's "added" notice is on the page already.
		chromedp.WaitVisible(chromedp.CSS(`tr[data-account="docs-rw"]`)))
	b.open("/projects/"+pid+"/resources", "#resources")
	list := b.text("#resources")
	for _, want := range []string{"pg-main", "PostgreSQL", "docs", "MongoDB", "dc1", "online", fmt.Sprintf("127.0.0.1:%d", pg.Port)} {
		if !strings.Contains(list, want) {
			t.Fatalf("the resources list lacks %q:\n%s", want, list)
		}
	}
	saveScreenshot(t, b, "resources.png")

	// An account with a wrong password: the gateway's refusal shows next
	// to the form, what was typed stays (but the password), nothing is saved.
	b.do(submit(chromedp.CSS(`tr[data-resource="pg-main"] a`)), chromedp.WaitVisible(chromedp.ID("account-form")))
	const wrong = "not-the-password-42"
	b.do(chromedp.SendKeys(chromedp.ID("account-name"), "app"), chromedp.SendKeys(chromedp.ID("account-description"), "the shop's app"),
		chromedp.SendKeys(chromedp.ID("account-username"), pg.SCRAMUser.User), chromedp.SendKeys(chromedp.ID("account-password"), wrong),
		chromedp.SendKeys(chromedp.CSS(`#account-form input[name=metaKey]`), "env"),
		chromedp.SendKeys(chromedp.CSS(`#account-form input[name=metaValue]`), "prod"),
		submit(chromedp.ID("create-account")), chromedp.WaitVisible(chromedp.CSS("#account-form #error")))
	if msg := b.text("#account-form #error"); !strings.Contains(strings.ToLower(msg), "password") {
		t.Fatalf("the wrong password's error: %q", msg)
	}
	if strings.Contains(b.html(), wrong) {
		t.Fatal("the page shows the wrong password")
	}
	kept := b.eval(`[document.getElementById("account-name").value, document.getElementById("account-username").value,
		document.getElementById("account-password").value, document.querySelector("#account-form input[name=metaValue]").value].join("|")`)
	if kept != "app|"+pg.SCRAMUser.User+"||prod" {
		t.Fatalf("the form kept %q", kept)
	}
	if out := admin.Must("", "accounts", "list", "--project-id", pid, "--resource", "pg-main", "--output", "json"); strings.Contains(out, `"app"`) {
		t.Fatalf("an account was saved after a failed validation: %s", out)
	}
	// The right password, with a second metadata row.
	b.do(chromedp.SendKeys(chromedp.ID("account-password"), pg.SCRAMUser.Password),
		chromedp.Click(chromedp.CSS("#account-form [data-add-row]")),
		chromedp.SendKeys(chromedp.CSS(`#account-form .meta-row:last-child input[name=metaKey]`), "team"),
		chromedp.SendKeys(chromedp.CSS(`#account-form .meta-row:last-child input[name=metaValue]`), "payments"),
		submit(chromedp.ID("create-account")), chromedp.WaitVisible(chromedp.ID("notice")))
	var accounts []struct {
		Name     string
		Metadata map[string]string
	}
	admin.JSON(&accounts, "", "accounts", "list", "--project-id", pid, "--resource", "pg-main")
	if len(accounts) != 1 || accounts[0].Name != "app" || accounts[0].Metadata["env"] != "prod" || accounts[0].Metadata["team"] != "payments" {
		t.Fatalf("accounts: %+v", accounts)
	}

	// Account details: edit the metadata.
	b.do(submit(chromedp.CSS(`tr[data-account="app"] a`)), chromedp.WaitVisible(chromedp.ID("metadata-form")))
	facts := b.text("#account-facts")
	if !strings.Contains(facts, pg.SCRAMUser.User) || !strings.Contains(facts, "the shop's app") || strings.Contains(b.html(), pg.SCRAMUser.Password) {
		t.Fatalf("account details: %s", facts)
	}
	b.do(chromedp.SetValue(chromedp.CSS(`#metadata-form .meta-row:nth-child(1) input[name=metaValue]`), "staging"),
		chromedp.SendKeys(chromedp.CSS(`#metadata-form .meta-row:last-child input[name=metaKey]`), "owner"),
		chromedp.SendKeys(chromedp.CSS(`#metadata-form .meta-row:last-child input[name=metaValue]`), "alice"),
		submit(chromedp.ID("save-metadata")), chromedp.WaitVisible(chromedp.ID("notice")))
	admin.JSON(&accounts, "", "accounts", "list", "--project-id", pid, "--resource", "pg-main")
	if m := accounts[0].Metadata; len(m) != 3 || m["env"] != "staging" || m["owner"] != "alice" || m["team"] != "payments" {
		t.Fatalf("metadata after the edit: %v", m)
	}

	// Filter the project's accounts by metadata pairs (all must match).
	filter := func(pairs ...string) string {
		q := []string{}
		for _, p := range pairs {
			k, v, _ := strings.Cut(p, "=")
			q = append(q, "metaKey="+k+"&metaValue="+v)
		}
		b.open("/projects/"+pid+"/accounts?"+strings.Join(q, "&"), "#filter-form")
		if b.has("#accounts") {
			return b.text("#accounts")
		}
		return ""
	}
	if got := filter("env=staging", "team=payments"); !strings.Contains(got, "app") || strings.Contains(got, "docs-rw") {
		t.Fatalf("filter env=staging,team=payments: %q", got)
	}
	if got := filter("env=staging", "team=other"); got != "" {
		t.Fatalf("filter env=staging,team=other: %q", got)
	}
	if got := filter("env=prod"); got != "" {
		t.Fatalf("filter env=prod after the edit: %q", got)
	}
	// The filter form itself, typed in.
	b.open("/projects/"+pid+"/accounts", "#filter-form")
	b.do(chromedp.SendKeys(chromedp.CSS(`#filter-form input[name=metaKey]`), "owner"),
		chromedp.SendKeys(chromedp.CSS(`#filter-form input[name=metaValue]`), "alice"),
		submit(chromedp.ID("apply-filter")), chromedp.WaitVisible(chromedp.CSS(`tr[data-account="app"]`)))
	if b.has(`tr[data-account="docs-rw"]`) {
		t.Fatal("the filter owner=alice shows docs-rw")
	}

	// Access: pick a duration, take the command, run it in a shell.
	b.do(chromedp.Click(chromedp.ID("access-app")), chromedp.WaitVisible(chromedp.ID("cmd-app")))
	b.eval(`(() => { const s = document.querySelector("tr[data-account=app] select.duration"); s.value = "2h";
		s.dispatchEvent(new Event("change")); return "" })()`)
	command := b.text("#cmd-app")
	want := fmt.Sprintf("airlock db access --resource pg-main --account app --project-id %s --duration 2h --domain %s", pid, srv.URL)
	if command != want {
		t.Fatalf("the Access command is\n%q, want\n%q", command, want)
	}
	saveScreenshot(t, b, "access-command.png")
	access := runShell(t, admin, command)
	url := access.waitLine(t, urlLine, 60*time.Second)
	if r := psql(t, false, url, "SELECT 'web-ui-' || 42"); r.Code != 0 || !strings.Contains(r.Out, "web-ui-42") {
		t.Fatalf("psql through the Access command: %+v", r)
	}

	// The Sessions page lists it, ongoing; its page shows the statement.
	b.open("/sessions", "#sessions")
	row := b.text("#sessions")
	for _, want := range []string{"app", "pg-main", srv.AdminEmail, "Ongoing", "active"} {
		if !strings.Contains(row, want) {
			t.Fatalf("the sessions list lacks %q:\n%s", want, row)
		}
	}
	b.do(submit(chromedp.CSS(`#sessions tbody tr a`)), chromedp.WaitVisible(chromedp.ID("session-facts")))
	var loc string
	loc, _ = chromedp.Run(b.ctx, chromedp.Location())
	sessionPath := strings.TrimPrefix(loc, srv.URL)
	log := b.reloadUntil(sessionPath, "#events", "web-ui-", 30*time.Second)
	if !strings.Contains(log, "SELECT 1") {
		t.Fatalf("the log lacks the outcome SELECT 1:\n%s", log)
	}
	saveScreenshot(t, b, "session.png")
	if v := b.text("#verify"); !strings.Contains(v, "whole") {
		t.Fatalf("verify: %q", v)
	}
	if facts := b.text("#session-facts"); !strings.Contains(facts, "127.0.0.1") || !strings.Contains(facts, "cli") {
		t.Fatalf("session facts: %s", facts)
	}
	// The page follows the live session on its own: a statement run now
	// shows up without a reload (the marker set on this document survives).
	b.eval(`(() => { window.airlockSamePage = true; return "" })()`)
	if r := psql(t, false, url, "SELECT 'live-' || 7"); r.Code != 0 {
		t.Fatalf("psql: %+v", r)
	}
	b.waitText("#session-live", "'live-' || 7", 30*time.Second)
	if b.eval(`Promise.resolve(String(window.airlockSamePage === true))`) != "true" {
		t.Fatal("the session's page was reloaded instead of refreshing itself")
	}

	// Terminate from the UI ends the CLI's session.
	b.do(submit(chromedp.ID("terminate")), chromedp.WaitVisible(chromedp.ID("notice")))
	if s := b.text("#end-reason"); !strings.Contains(s, "terminated") {
		t.Fatalf("end reason: %q", s)
	}
	access.waitExit(t, 30*time.Second)
	if r := psql(t, false, url, "SELECT 1"); r.Code == 0 {
		t.Fatalf("psql after the termination: %+v", r)
	}

	// Search inside the logs: the session is listed with its matching
	// event under it; text nobody ran lists nothing; so does a time range
	// before it.
	b.open("/sessions", "#session-filter")
	b.do(chromedp.SetValue(chromedp.ID("log-search"), "WEB-UI-"), submit(chromedp.ID("apply-session-filter")),
		chromedp.WaitVisible(chromedp.CSS("tr.matches")))
	if m := b.text("tr.matches"); !strings.Contains(m, "'web-ui-' || 42") || !strings.Contains(m, "SELECT 1") {
		t.Fatalf("the search shows %q", m)
	}
	saveScreenshot(t, b, "sessions-search.png")
	b.open("/sessions?q=drop+table+nobody", "#no-sessions")
	b.open("/sessions?to=2001-01-01", "#no-sessions")
	b.open("/sessions?from=yesterday-ish", "#error")
	// The other filters: the ended session is found by status, resource,
	// account and user, and not by another value of any of them.
	for q, found := range map[string]bool{
		"status=ended": true, "status=active": false,
		"resource=pg-main": true, "resource=docs": false,
		"account=app": true, "account=docs-rw": false,
		"user=" + srv.AdminEmail: true, "user=nobody@example.com": false,
		"status=ended&resource=pg-main&account=app&user=" + srv.AdminEmail: true,
	} {
		if found {
			b.open("/sessions?"+q, "#sessions")
			if row := b.text("#sessions"); !strings.Contains(row, "pg-main") || !strings.Contains(row, "app") {
				t.Fatalf("/sessions?%s lists %q", q, row)
			}
		} else {
			b.open("/sessions?"+q, "#no-sessions")
		}
	}

	// Forged requests: a same-origin script without the CSRF token, and a
	// form on another origin that even carries a valid token.
	b.open("/projects", "#project-form")
	if st := b.eval(`fetch("/projects", {method: "POST", body: new URLSearchParams({name: "forged-no-token"})}).then(r => String(r.status))`); st != "403" {
		t.Fatalf("a POST without the CSRF token: %s", st)
	}
	token, _ := chromedp.Run(b.ctx, chromedp.Value(chromedp.CSS(`#project-form input[name=csrf]`)))
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form id="f" method="post" action="%s/projects"><input name="name" value="forged-cross"><input name="csrf" value="%s"></form>
<script>document.getElementById("f").submit()</script>`, srv.URL, token)
	}))
	defer evil.Close()
	b.do(chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.ID("error")))
	if msg := b.text("#error"); !strings.Contains(msg, "another site") {
		t.Fatalf("the cross-origin form: %q", msg)
	}
	if out := admin.Must("", "projects", "list"); strings.Contains(out, "forged") {
		t.Fatalf("a forged request created a project:\n%s", out)
	}

	// Delete a resource: the confirmation says what else goes.
	b.open("/projects/"+pid+"/resources", "#resources")
	b.do(submit(chromedp.CSS(`tr[data-resource="docs"] a.danger`)), chromedp.WaitVisible(chromedp.ID("confirm-delete")))
	if n := b.text("#accounts-count"); n != "1 account" {
		t.Fatalf("the confirmation counts %q", n)
	}
	b.do(submit(chromedp.ID("confirm-delete")), chromedp.WaitVisible(chromedp.ID("notice")))
	if b.has(`tr[data-resource="docs"]`) {
		t.Fatal("docs is still listed")
	}

	// The audit log, filtered.
	b.open("/audit?action=resource.", "#audit")
	if a := b.text("#audit"); !strings.Contains(a, "resource.create") || !strings.Contains(a, "resource.delete") || strings.Contains(a, "auth.login") {
		t.Fatalf("audit log filtered by resource.: %s", a)
	}

	// A viewer sees no controls.
	admin.Must("viewer password 1", "users", "create", "--email", "viewer@example.com", "--password-stdin")
	admin.Must("", "projects", "members", "set", "--project-id", pid, "--email", "viewer@example.com", "--role", "viewer")
	b.do(submit(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
	b.login("viewer@example.com", "viewer password 1")
	b.open("/projects/"+pid+"/resources", "#resources")
	for _, sel := range []string{"#add-postgres", "#add-mongodb", "a.danger"} {
		if b.has(sel) {
			t.Errorf("the viewer's resources page has %s", sel)
		}
	}
	b.do(submit(chromedp.CSS(`tr[data-resource="pg-main"] a`)), chromedp.WaitVisible(chromedp.ID("resource-facts")))
	for _, sel := range []string{"#account-form", "a.danger", "#access-app"} {
		if b.has(sel) {
			t.Errorf("the viewer's resource page has %s", sel)
		}
	}
	b.do(submit(chromedp.CSS(`tr[data-account="app"] a`)), chromedp.WaitVisible(chromedp.ID("account-facts")))
	if b.has("#metadata-form") || b.has("#delete-account") || b.has("#access-app") {
		t.Error("the viewer may edit or access the account")
	}
	b.open("/projects/"+pid+"/members", "#members")
	if b.has("#add-member") || b.has("button.danger") {
		t.Error("the viewer may change members")
	}
	// The viewer's own forms, token and all, are refused by the services.
	token, _ = chromedp.Run(b.ctx, chromedp.Value(chromedp.CSS(`form[action="/logout"] input[name=csrf]`)))
	st := b.eval(`fetch("/projects/` + pid + `/members", {method: "POST", body: new URLSearchParams({csrf: ` + jsString(token) +
		`, email: "viewer@example.com", role: "admin"})}).then(r => String(r.status))`)
	if st != "403" {
		t.Fatalf("a viewer's role change: %s", st)
	}
	b.open("/gateways", "#error")

	// Headers and problems, from a plain client.
	resp := httpGet(t, "GET", srv.URL+"/login")
	if csp := resp.Header.Get("Content-Security-Policy"); csp == "" || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP %q", csp)
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{{"GET", "/api/nope", 404}, {"GET", "/api/v1/nope", 404}, {"POST", "/api/v1/auth/me", 405}} {
		resp := httpGet(t, c.method, srv.URL+c.path)
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d %s", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}

	// No password reached the server's output.
	for _, secret := range []string{wrong, pg.SCRAMUser.Password, ferret.SCRAM256User.Password} {
		if strings.Contains(srv.Proc.Stdout()+srv.Proc.Stderr(), secret) {
			t.Fatal("the server logged a password")
		}
	}
}
