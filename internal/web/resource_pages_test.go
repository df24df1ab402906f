package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/gateway"
	"github.com/airlockpam/airlock/internal/pam"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/server"
	"github.com/airlockpam/airlock/internal/testenv"
)

// runGateway enrolls a gateway named name with e's server and runs it in
// this process (as `airlock dev` runs its own) until the test ends. It
// returns a function that stops it.
func (e *env) runGateway(name string) (stop func()) {
	t := e.t
	t.Helper()
	ctx := context.Background()
	orgID, err := e.srv.OrgID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e.srv.Relay.EnsureGateway(ctx, orgID, name)
	if err != nil {
		t.Fatal(err)
	}
	id, err := gateway.Enroll(ctx, e.http.URL, g.EnrollmentToken, t.TempDir(), &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a, err := gateway.New(gateway.Config{Identity: id, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(gctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			a.Close()
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(15 * time.Second)
	for !e.srv.Relay.Connected(id.GatewayID) {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not connect")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return stop
}

var hrefIDRE = regexp.MustCompile(`/resources/([0-9a-f-]{36})`)

// TestResourceAndAccountRotationPages drives the Add Resource form with a
// rotation account, the resource page, the Edit Resource page (rename,
// rotation account), Add Account with rotation, the account page's
// rotation controls and Rotate now, against real PostgreSQL through a
// real (in-process) gateway; a viewer sees no controls and is refused.
func TestResourceAndAccountRotationPages(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	e := startWith(t, func(*server.Config) {})
	jctx, stopJobs := context.WithCancel(context.Background())
	go e.srv.Jobs.Run(jctx) // as Serve does: rotations run on the jobs scheduler
	t.Cleanup(stopJobs)
	stopGateway := e.runGateway("gw-web")
	for _, stmt := range []string{
		`DROP ROLE IF EXISTS webres_rotator`, `DROP ROLE IF EXISTS webres_app`, `DROP ROLE IF EXISTS webres_plain`,
		`CREATE ROLE webres_rotator LOGIN CREATEROLE PASSWORD 'rotator-SECRET-pw'`,
		`CREATE ROLE webres_app LOGIN PASSWORD 'app-SECRET-pw'`,
		`CREATE ROLE webres_plain LOGIN PASSWORD 'plain-SECRET-pw'`,
	} {
		pgExec(t, pg.SuperURL(), stmt)
	}
	b := e.browser()
	b.login(adminEmail, adminPassword)
	pid := b.newProject("rotations")
	resources := "/projects/" + pid + "/resources"

	// Add Resource: a wrong rotation password is refused (checked by a
	// real login), the form keeps the username, never the password.
	form := url.Values{"kind": {"postgres"}, "name": {"orders-db"}, "gateway": {"gw-web"}, "host": {"127.0.0.1"},
		"port": {fmt.Sprint(pg.Cluster.Port)}, "database": {pg.Name}, "sslEnabled": {"on"}, "sslRejectUnauthorized": {"on"},
		"sslCaPem": {string(pg.Cluster.CA.CertPEM)}, "rotationUsername": {"webres_rotator"}, "rotationPassword": {"wrong-SECRET-pw"}}
	if _, body := b.get(resources + "/new?kind=postgres"); !strings.Contains(body, `id="rotationUsername"`) || !strings.Contains(body, `id="rotationPassword"`) {
		t.Fatal("the Add Resource form has no rotation account")
	}
	resp, body := b.post(resources+"/new", resources, form)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "webres_rotator") || strings.Contains(body, "wrong-SECRET-pw") ||
		!strings.Contains(body, `value="webres_rotator"`) {
		t.Fatalf("a wrong rotation password: %d %s", resp.StatusCode, body)
	}
	form.Set("rotationPassword", "rotator-SECRET-pw")
	resp, _ = b.post(resources+"/new", resources, form)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add resource: %d", resp.StatusCode)
	}
	m := hrefIDRE.FindStringSubmatch(resp.Header.Get("Location"))
	if m == nil {
		t.Fatalf("redirect to %q", resp.Header.Get("Location"))
	}
	rid := m[1]
	page := resources + "/" + rid
	_, body = b.get(page)
	if !regexp.MustCompile(`id="rotation-account">webres_rotator `).MatchString(body) || strings.Contains(body, "rotator-SECRET-pw") ||
		!strings.Contains(body, `id="edit-resource"`) {
		t.Fatalf("the resource page:\n%s", body)
	}

	// Add Account with rotation every day: scheduled, with a next due time.
	acct := url.Values{"name": {"app"}, "username": {"webres_app"}, "password": {"app-SECRET-pw"}, "rotationInterval": {"1d"}}
	if resp, body = b.post(page, page+"/accounts", acct); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add account: %d %s", resp.StatusCode, body)
	}
	_, body = b.get(page)
	if !strings.Contains(body, `every 1d, <span class="rot rot-scheduled">scheduled</span>`) || !strings.Contains(body, "<th>Rotation</th>") {
		t.Fatalf("the accounts table shows no rotation:\n%s", body)
	}
	// An interval that is not offered is refused, clearly.
	bad := url.Values{"name": {"plain"}, "username": {"webres_plain"}, "password": {"plain-SECRET-pw"}, "rotationInterval": {"2d"}}
	if resp, body = b.post(page, page+"/accounts", bad); resp.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(body, "1d, 3d, 7d or 30d") || strings.Contains(body, "plain-SECRET-pw") {
		t.Fatalf("interval 2d: %d %s", resp.StatusCode, body)
	}
	bad.Set("rotationInterval", "off")
	if resp, _ = b.post(page, page+"/accounts", bad); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add account without rotation: %d", resp.StatusCode)
	}
	accounts, err := e.srv.PAM.ListAccounts(api.WithPrincipal(context.Background(), adminPrincipal(t, e)), pid, pamFilter(rid))
	if err != nil || len(accounts) != 2 {
		t.Fatalf("accounts: %v %v", accounts, err)
	}
	var appID, plainID string
	for _, a := range accounts {
		if a.Name == "app" {
			appID = a.ID
		} else {
			plainID = a.ID
		}
	}
	appPage := page + "/accounts/" + appID
	_, body = b.get(appPage)
	for _, want := range []string{`id="rotation-schedule">every 1d`, `id="rotation-status" class="rot rot-scheduled">scheduled`,
		`id="rotation-last">never`, `id="rotate-now"`, `<option value="1d" selected>`} {
		if !strings.Contains(body, want) {
			t.Fatalf("the account page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, `id="rotation-next">-`) {
		t.Fatal("the account page shows no next due time")
	}

	// Rotate now: ok, last rotated shown; the old password no longer logs
	// in; the new one (never shown) is what the account holds.
	if resp, body = b.post(appPage, appPage+"/rotate", url.Values{}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("rotate now: %d %s", resp.StatusCode, body)
	}
	_, body = b.get(resp.Header.Get("Location"))
	if !strings.Contains(body, `id="rotation-status" class="rot rot-ok">ok`) || strings.Contains(body, `id="rotation-last">never`) ||
		!strings.Contains(body, "The password was rotated") {
		t.Fatalf("after Rotate now:\n%s", body)
	}
	if pgLogin(pg, "webres_app", "app-SECRET-pw") {
		t.Fatal("the old password still logs in after the rotation")
	}
	if n := e.auditCount("account.rotate"); n != 1 {
		t.Fatalf("%d account.rotate audit entries, want 1", n)
	}
	// The schedule: 7d, then off.
	if resp, body = b.post(appPage, appPage+"/rotation", url.Values{"rotationInterval": {"7d"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("rotation 7d: %d %s", resp.StatusCode, body)
	}
	if _, body = b.get(appPage); !strings.Contains(body, `id="rotation-schedule">every 7d`) {
		t.Fatal("the interval did not change to 7d")
	}
	if resp, _ = b.post(appPage, appPage+"/rotation", url.Values{"rotationInterval": {"off"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("rotation off: %d", resp.StatusCode)
	}
	if _, body = b.get(appPage); !strings.Contains(body, `id="rotation-schedule">off`) {
		t.Fatal("rotation was not turned off")
	}
	// The rotation account itself cannot rotate yet: the page says so.
	rot := url.Values{"name": {"rot"}, "username": {"webres_rotator"}, "password": {"rotator-SECRET-pw"}, "rotationInterval": {"1d"}}
	if resp, body = b.post(page, page+"/accounts", rot); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "cannot rotate its own password") {
		t.Fatalf("rotating the rotation account: %d %s", resp.StatusCode, body)
	}

	// Edit Resource: the form comes filled in, never with a password.
	edit := page + "/edit"
	_, body = b.get(edit)
	if !strings.Contains(body, `id="name" value="orders-db"`) || !strings.Contains(body, `id="rotationUsername" value="webres_rotator"`) ||
		strings.Contains(body, "SECRET") || !strings.Contains(body, `id="accountPassword-app"`) {
		t.Fatalf("the edit page:\n%s", body)
	}
	ef := url.Values{"name": {"orders-main"}, "gateway": {"gw-web"}, "host": {"127.0.0.1"}, "port": {fmt.Sprint(pg.Cluster.Port)},
		"database": {pg.Name}, "sslEnabled": {"on"}, "sslRejectUnauthorized": {"on"}, "sslCaPem": {string(pg.Cluster.CA.CertPEM)},
		"rotationUsername": {"webres_rotator"}}
	// A taken name: 409, nothing changed.
	if _, err := e.srv.PAM.CreateResource(api.WithPrincipal(context.Background(), adminPrincipal(t, e)), pid, pamPG("taken", pg)); err != nil {
		t.Fatal(err)
	}
	ef.Set("name", "taken")
	if resp, body = b.post(edit, edit, ef); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "another resource of this project is named taken") {
		t.Fatalf("rename onto a taken name: %d %s", resp.StatusCode, body)
	}
	// A new rotation username needs its password; a wrong one is refused.
	ef.Set("name", "orders-main")
	ef.Set("rotationUsername", "webres_plain")
	if resp, body = b.post(edit, edit, ef); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "password too") {
		t.Fatalf("a new rotation username without password: %d %s", resp.StatusCode, body)
	}
	ef.Set("rotationUsername", "webres_rotator")
	ef.Set("rotationPassword", "wrong-SECRET-pw")
	if resp, body = b.post(edit, edit, ef); resp.StatusCode != http.StatusUnprocessableEntity || strings.Contains(body, "wrong-SECRET-pw") {
		t.Fatalf("a wrong rotation password on edit: %d %s", resp.StatusCode, body)
	}
	if _, body = b.get(page); !strings.Contains(body, "<h1>orders-db ") {
		t.Fatal("a refused edit changed the resource")
	}
	ef.Del("rotationPassword")
	if resp, body = b.post(edit, edit, ef); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("rename: %d %s", resp.StatusCode, body)
	}
	if _, body = b.get(page); !strings.Contains(body, "<h1>orders-main ") || !strings.Contains(body, "The resource was saved.") &&
		!strings.Contains(body, "orders-main") {
		t.Fatalf("after the rename:\n%s", body)
	}
	// A project admin (not an organization admin) renames it too: the
	// unchanged settings of the form are no endpoint change, so no
	// password needs re-entering.
	actx := api.WithPrincipal(context.Background(), adminPrincipal(t, e))
	if _, err := e.srv.Auth.CreateUser(actx, "padmin@example.com", "project admin password 1", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Projects.SetMember(actx, pid, "padmin@example.com", "", project.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	pa := e.browser()
	pa.login("padmin@example.com", "project admin password 1")
	if _, body = pa.get(edit); !strings.Contains(body, `id="gateway" value="gw-web"`) {
		t.Fatalf("the project admin's edit page:\n%s", body)
	}
	ef.Set("name", "orders-pa")
	if resp, body = pa.post(edit, edit, ef); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a project admin's rename: %d %s", resp.StatusCode, body)
	}
	ef.Set("name", "orders-main")
	if resp, body = pa.post(edit, edit, ef); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a project admin's rename back: %d %s", resp.StatusCode, body)
	}

	// A re-entered account password is checked through the gateway; a
	// wrong one saves nothing and is never shown.
	ef.Set("accountPassword-"+plainID, "wrong-SECRET-pw")
	ef.Set("name", "orders-other")
	if resp, body = b.post(edit, edit, ef); resp.StatusCode != http.StatusUnprocessableEntity || strings.Contains(body, "wrong-SECRET-pw") {
		t.Fatalf("a wrong re-entered password: %d %s", resp.StatusCode, body)
	}
	if _, body = b.get(page); !strings.Contains(body, "<h1>orders-main ") {
		t.Fatal("a refused edit renamed the resource")
	}

	// The delete page says what goes with the resource.
	if _, body = b.get(page + "/delete"); !strings.Contains(body, `id="accounts-count">2 accounts`) {
		t.Fatalf("the delete page:\n%s", body)
	}

	// A viewer sees the rotation but no controls, and the server refuses
	// the viewer's forms.
	ctx := api.WithPrincipal(context.Background(), adminPrincipal(t, e))
	if _, err := e.srv.Auth.CreateUser(ctx, "viewer@example.com", "viewer password 1", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Projects.SetMember(ctx, pid, "viewer@example.com", "", project.RoleViewer); err != nil {
		t.Fatal(err)
	}
	v := e.browser()
	v.login("viewer@example.com", "viewer password 1")
	_, body = v.get(appPage)
	if !strings.Contains(body, `id="rotation-status"`) || strings.Contains(body, `id="rotate-now"`) || strings.Contains(body, `id="rotation-form"`) {
		t.Fatalf("the viewer's account page:\n%s", body)
	}
	if _, body = v.get(page); strings.Contains(body, `id="edit-resource"`) {
		t.Fatal("the viewer sees Edit resource")
	}
	if resp, _ = v.get(edit); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the viewer's edit page: %d", resp.StatusCode)
	}
	token := v.csrf("/projects")
	for _, p := range []string{appPage + "/rotate", appPage + "/rotation", edit} {
		resp, _ := v.do("POST", p, url.Values{"csrf": {token}, "rotationInterval": {"1d"}, "name": {"x"}}, nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a viewer's POST %s: %d", p, resp.StatusCode)
		}
	}

	// The gateway goes offline: Rotate now says the rotation waits for it,
	// and the account page shows waiting with the reason.
	stopGateway()
	if resp, body = b.post(appPage, appPage+"/rotate", url.Values{}); resp.StatusCode != http.StatusServiceUnavailable ||
		!strings.Contains(body, "waiting for gateway gw-web: it is offline") {
		t.Fatalf("rotate now with the gateway offline: %d %s", resp.StatusCode, body)
	}
	if _, body = b.get(appPage); !strings.Contains(body, `id="rotation-status" class="rot rot-waiting">waiting`) ||
		!strings.Contains(body, `id="rotation-error" class="error">waiting for gateway gw-web`) {
		t.Fatalf("the account page while waiting:\n%s", body)
	}
}

func pamFilter(resourceID string) pam.AccountFilter { return pam.AccountFilter{Resource: resourceID} }

// pamPG is a PostgreSQL resource named name on db, through gw-web.
func pamPG(name string, db testenv.Database) pam.ResourceInput {
	return pam.ResourceInput{Kind: pam.KindPostgres, Name: name, Gateway: "gw-web", Host: "127.0.0.1", Port: db.Cluster.Port,
		Database: db.Name, SSLCAPEM: string(db.Cluster.CA.CertPEM)}
}
