package e2e_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestWebSecrets drives the secrets pages in Chromium against the real
// binary and a real PostgreSQL: an app connection (a wrong password is shown
// next to the form and nothing is saved; the right one saves, and the
// password is never shown; another through a gateway picked from a list),
// a secret added, revealed, edited, its history
// and a restore; the Add Secret Rotation wizard step by step with its review
// page; Rotate now; the mapped secrets hold credentials that log in to
// PostgreSQL (pgx and psql); a mapped secret cannot be edited and the
// connection cannot be deleted while the rotation uses it.
func TestWebSecrets(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	srv := e2e.StartServer(t, "AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS=true")
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	pid := strings.TrimSpace(admin.Must("", "projects", "create", "web-secrets"))
	pgRole(t, pg, "webui_rotator", "rotator-pw-77")
	pgRoleExec(t, pg, `ALTER ROLE webui_rotator WITH CREATEROLE`)
	pgRole(t, pg, "webui_orders_a", "initial-a-77")
	pgRole(t, pg, "webui_orders_b", "initial-b-77")

	b := newWebBrowser(t, srv.URL)
	b.login(srv.AdminEmail, srv.AdminPassword)

	// App Connections: Add PostgreSQL Connection, with the seed's fields.
	b.open("/projects/"+pid+"/app-connections", "#add-postgres-connection")
	b.do(submit(chromedp.ID("add-postgres-connection")), chromedp.WaitVisible(chromedp.ID("appconn-form")))
	port, _ := chromedp.Run(b.ctx, chromedp.Value(chromedp.ID("port")))
	if ssl := b.eval(`String(document.getElementById("sslEnabled").checked && document.getElementById("sslRejectUnauthorized").checked)`); port != "5432" || ssl != "true" {
		t.Fatalf("defaults: port %q, SSL on and verified %s", port, ssl)
	}
	const wrong = "not-the-rotator-pw"
	b.do(chromedp.SendKeys(chromedp.ID("name"), "orders-db"), chromedp.SendKeys(chromedp.ID("host"), "127.0.0.1"),
		chromedp.SetValue(chromedp.ID("port"), fmt.Sprint(pg.Cluster.Port)), chromedp.SendKeys(chromedp.ID("database"), pg.Name),
		chromedp.SendKeys(chromedp.ID("username"), "webui_rotator"), chromedp.SendKeys(chromedp.ID("password"), wrong),
		chromedp.SetValue(chromedp.ID("sslCertificate"), string(pg.Cluster.CA.CertPEM)),
		submit(chromedp.ID("create-connection")), chromedp.WaitVisible(chromedp.CSS("#appconn-form #error")))
	if msg := b.text("#appconn-form #error"); !strings.Contains(msg, "logging in failed") || !strings.Contains(msg, "not saved") {
		t.Fatalf("the wrong password's error: %q", msg)
	}
	if strings.Contains(b.html(), wrong) {
		t.Fatal("the page shows the wrong password")
	}
	kept := b.eval(`[document.getElementById("name").value, document.getElementById("username").value, document.getElementById("password").value].join("|")`)
	if kept != "orders-db|webui_rotator|" {
		t.Fatalf("the form kept %q", kept)
	}
	if out := admin.Must("", "app-connections", "list", "--project-id", pid); strings.Contains(out, "orders-db") {
		t.Fatalf("a connection that could not log in was saved: %s", out)
	}
	b.do(chromedp.SendKeys(chromedp.ID("password"), "rotator-pw-77"), submit(chromedp.ID("create-connection")),
		chromedp.WaitVisible(chromedp.ID("notice")))
	if list := b.text("#app-connections"); !strings.Contains(list, "orders-db") || !strings.Contains(list, "webui_rotator") {
		t.Fatalf("the connections list: %s", list)
	}
	if strings.Contains(b.html(), "rotator-pw-77") {
		t.Fatal("the connections page shows the password")
	}
	// A connection through a gateway picked from the registered ones: the
	// gateway logs in with it before it is saved.
	lghStartGateway(t, srv, admin, "gw-web", "env", nil)
	lghWaitOnline(t, admin, "gw-web")
	admin.Must("", "gateways", "allow-project", "gw-web", "--project-id", pid)
	b.open("/projects/"+pid+"/app-connections/new", "#appconn-form")
	if opts := b.text("#gateway"); !strings.Contains(opts, "none: the Airlock server connects itself") || !strings.Contains(opts, "gw-web (online") {
		t.Fatalf("the gateway choices: %q", opts)
	}
	b.do(chromedp.SendKeys(chromedp.ID("name"), "orders-via-gw"), chromedp.SendKeys(chromedp.ID("host"), "127.0.0.1"),
		chromedp.SetValue(chromedp.ID("port"), fmt.Sprint(pg.Cluster.Port)), chromedp.SendKeys(chromedp.ID("database"), pg.Name),
		chromedp.SendKeys(chromedp.ID("username"), "webui_rotator"), chromedp.SendKeys(chromedp.ID("password"), "rotator-pw-77"),
		chromedp.SetValue(chromedp.ID("sslCertificate"), string(pg.Cluster.CA.CertPEM)), chromedp.SetValue(chromedp.ID("gateway"), "gw-web"),
		submit(chromedp.ID("create-connection")), chromedp.WaitVisible(chromedp.ID("notice")))
	if row := b.text(`tr[data-connection="orders-via-gw"]`); !strings.Contains(row, "gateway gw-web") {
		t.Fatalf("the connection through the gateway: %s", row)
	}

	// A secret: added, hidden, revealed, edited, history, restore.
	b.open("/projects/"+pid+"/secrets?env=dev&path=/", "#secret-form")
	b.do(chromedp.SendKeys(chromedp.ID("secret-name"), "API_TOKEN"), chromedp.SendKeys(chromedp.ID("secret-value"), "tok-first-1"),
		submit(chromedp.ID("save-secret")), chromedp.WaitVisible(chromedp.ID("notice")))
	if strings.Contains(b.html(), "tok-first-1") {
		t.Fatal("the dashboard shows a value before it is revealed")
	}
	b.do(chromedp.Click(chromedp.ID("reveal-API_TOKEN")), chromedp.WaitVisible(chromedp.ID("value-API_TOKEN")))
	if v := b.text("#value-API_TOKEN"); v != "tok-first-1" {
		t.Fatalf("revealed %q", v)
	}
	b.do(submit(chromedp.ID("edit-API_TOKEN")), chromedp.WaitVisible(chromedp.ID("secret-edit-form")),
		chromedp.SendKeys(chromedp.ID("secret-value"), "tok-second-2"), submit(chromedp.ID("save-secret")),
		chromedp.WaitVisible(chromedp.ID("notice")))
	if got := strings.TrimSpace(admin.Must("", "secrets", "get", "API_TOKEN", "--project-id", pid, "--env", "dev")); got != "tok-second-2" {
		t.Fatalf("after the edit the CLI reads %q", got)
	}
	b.do(submit(chromedp.ID("history-API_TOKEN")), chromedp.WaitVisible(chromedp.ID("versions")))
	if rows := b.text("#versions"); !strings.Contains(rows, "newest") || strings.Contains(rows, "tok-") {
		t.Fatalf("history: %s", rows)
	}
	b.do(submit(chromedp.ID("restore-v1")), chromedp.WaitVisible(chromedp.ID("notice")), chromedp.WaitVisible(chromedp.ID("reveal-v3")),
		chromedp.Click(chromedp.ID("reveal-v3")), chromedp.WaitVisible(chromedp.ID("value-v3")))
	if v := b.text("#value-v3"); v != "tok-first-1" {
		t.Fatalf("version 3 (restored from 1) holds %q", v)
	}
	saveScreenshot(t, b, "secret-history.png")

	// A folder in prod for the rotation's secrets.
	b.open("/projects/"+pid+"/secrets?env=prod&path=/", "#folder-form")
	b.do(chromedp.SendKeys(chromedp.ID("folder-name"), "/db/orders"), submit(chromedp.ID("create-folder")),
		chromedp.WaitVisible(chromedp.ID("notice")))
	if p := b.text("#folder-path"); !strings.Contains(p, "orders") {
		t.Fatalf("the new folder's page: %q", p)
	}

	// Add Secret Rotation, from the folder's dashboard.
	b.do(submit(chromedp.ID("add-secret-rotation")), chromedp.WaitVisible(chromedp.CSS(`#wizard-form[data-step="1"]`)))
	b.do(chromedp.SetValue(chromedp.ID("connection"), "orders-db"), chromedp.SetValue(chromedp.ID("interval"), "0"),
		chromedp.SetValue(chromedp.ID("rotateAt"), "02:00"), chromedp.SetValue(chromedp.ID("timeZone"), "Europe/Berlin"),
		submit(chromedp.ID("wizard-next")), chromedp.WaitVisible(chromedp.CSS("#wizard-form #error")))
	if msg := b.text("#error"); !strings.Contains(msg, "Rotation Interval") {
		t.Fatalf("interval 0: %q", msg)
	}
	if tz := b.eval(`document.getElementById("timeZone").value`); tz != "Europe/Berlin" {
		t.Fatalf("the time zone was not kept: %q", tz)
	}
	b.do(chromedp.SetValue(chromedp.ID("interval"), "7"), submit(chromedp.ID("wizard-next")),
		chromedp.WaitVisible(chromedp.CSS(`#wizard-form[data-step="2"]`)),
		chromedp.SendKeys(chromedp.ID("username1"), "webui_orders_a"), chromedp.SendKeys(chromedp.ID("username2"), "webui_orders_a"),
		submit(chromedp.ID("wizard-next")), chromedp.WaitVisible(chromedp.CSS("#wizard-form #error")))
	if msg := b.text("#error"); !strings.Contains(msg, "different user") {
		t.Fatalf("the same user twice: %q", msg)
	}
	b.do(chromedp.SetValue(chromedp.ID("username2"), "webui_orders_b"), submit(chromedp.ID("wizard-next")),
		chromedp.WaitVisible(chromedp.CSS(`#wizard-form[data-step="3"]`)))
	mapping := b.eval(`[document.getElementById("env").value, document.getElementById("path").value,
		document.getElementById("usernameSecret").value, document.getElementById("passwordSecret").value].join("|")`)
	if mapping != "prod|/db/orders|PGUSER|PGPASSWORD" {
		t.Fatalf("the mapping step came filled in with %q", mapping)
	}
	b.do(submit(chromedp.ID("wizard-next")), chromedp.WaitVisible(chromedp.CSS(`#wizard-form[data-step="4"]`)),
		chromedp.SendKeys(chromedp.ID("rotation-name"), "web-orders"), chromedp.SendKeys(chromedp.ID("rotation-description"), "orders service"),
		submit(chromedp.ID("wizard-next")), chromedp.WaitVisible(chromedp.ID("review")))
	review := b.text("#review")
	for _, want := range []string{"orders-db", "every 7 days at 02:00 (Europe/Berlin)", "enabled", "webui_orders_a", "webui_orders_b",
		"prod:/db/orders", "PGUSER", "PGPASSWORD", "web-orders", "orders service"} {
		if !strings.Contains(review, want) {
			t.Fatalf("the review lacks %q:\n%s", want, review)
		}
	}
	saveScreenshot(t, b, "rotation-review.png")
	if out := admin.Must("", "secret-rotations", "list", "--project-id", pid); strings.Contains(out, "web-orders") {
		t.Fatal("the rotation exists before Create was clicked")
	}
	b.do(submit(chromedp.ID("create-rotation")), chromedp.WaitVisible(chromedp.ID("notice")))
	row := b.text(`tr[data-rotation="web-orders"]`)
	if !strings.Contains(b.text("#status-web-orders"), "ok") || b.text("#last-web-orders") == "" || !strings.Contains(b.text("#next-web-orders"), "UTC") {
		t.Fatalf("the rotation's row: %s", row)
	}
	at := []string{"--project-id", pid, "--env", "prod", "--path", "/db/orders"}
	published := func() (string, string) {
		t.Helper()
		var m map[string]string
		if err := json.Unmarshal([]byte(admin.Must("", append([]string{"export", "--format", "json"}, at...)...)), &m); err != nil {
			t.Fatal(err)
		}
		return m["PGUSER"], m["PGPASSWORD"]
	}
	u1, p1 := published()
	if u1 != "webui_orders_a" || !pgLogsIn(pg, u1, p1) {
		t.Fatalf("after create the mapped secrets hold %s, which does not log in", u1)
	}

	// Rotate now: the other user, with a new password; the previous one still works.
	b.eval(`(async () => { document.getElementById("notice").remove(); return "" })()`) // the page after Create shows one
	b.do(submit(chromedp.ID("rotate-web-orders")), chromedp.WaitVisible(chromedp.ID("notice")))
	if n := b.text("#notice"); !strings.Contains(n, "rotated") {
		t.Fatalf("after Rotate now: %q", n)
	}
	saveScreenshot(t, b, "rotations.png")
	u2, p2 := published()
	if u2 != "webui_orders_b" || !pgLogsIn(pg, u2, p2) || !pgLogsIn(pg, u1, p1) {
		t.Fatalf("after Rotate now: %s published; it or the previous credentials do not log in", u2)
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Fatalf("psql (Debian's postgresql-client) is needed: %v", err)
	}
	cmd := exec.Command(psql, "-X", "-A", "-t", "-c", "select current_user")
	cmd.Env = append(cmd.Environ(), "PGHOST=127.0.0.1", "PGPORT="+fmt.Sprint(pg.Cluster.Port), "PGDATABASE="+pg.Name,
		"PGUSER="+u2, "PGPASSWORD="+p2, "PGSSLMODE=verify-full", "PGSSLROOTCERT="+pg.Cluster.CAFile)
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != u2 {
		t.Fatalf("psql with the mapped secrets: %v %s", err, out)
	}

	// The mapped secrets are the rotation's: the dashboard says so, and an
	// edit by hand is refused.
	b.open("/projects/"+pid+"/secrets?env=prod&path=/db/orders", "#secrets")
	if row := b.text(`tr[data-secret="PGPASSWORD"]`); !strings.Contains(row, "rotated by web-orders") || b.has("#edit-PGPASSWORD") {
		t.Fatalf("the mapped secret's row: %s", row)
	}
	saveScreenshot(t, b, "secrets-mapped.png")
	b.open("/projects/"+pid+"/secrets/edit?env=prod&path=/db/orders&name=PGPASSWORD", "#secret-edit-form")
	if msg := b.text("#error"); !strings.Contains(msg, "secret rotation web-orders") {
		t.Fatalf("the edit page of a mapped secret does not warn: %q", msg)
	}
	// Sent anyway, the service refuses it (the warning goes first, so that
	// the answer's error is the one read).
	b.eval(`(async () => { document.getElementById("error").remove(); return "" })()`)
	b.do(chromedp.SendKeys(chromedp.ID("secret-value"), "by-hand"), submit(chromedp.ID("save-secret")),
		chromedp.WaitVisible(chromedp.CSS("#secret-edit-form #error")))
	if msg := b.text("#error"); !strings.Contains(msg, "secret PGPASSWORD in prod:/db/orders/ is written by secret rotation web-orders") ||
		!strings.Contains(msg, "cannot be changed by hand") {
		t.Fatalf("editing a mapped secret: %q", msg)
	}
	if u, p := published(); u != u2 || p != p2 {
		t.Fatal("a refused edit changed a mapped secret")
	}

	// The connection cannot be deleted while the rotation uses it.
	b.open("/projects/"+pid+"/app-connections", "#app-connections")
	b.do(submit(chromedp.ID("delete-connection-orders-db")), chromedp.WaitVisible(chromedp.ID("error")))
	if msg := b.text("#error"); !strings.Contains(msg, "secret rotation web-orders") {
		t.Fatalf("deleting the used connection: %q", msg)
	}
	if out := admin.Must("", "app-connections", "list", "--project-id", pid); !strings.Contains(out, "orders-db") {
		t.Fatal("the used connection was deleted")
	}
}
