package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/appconn"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/secrets"
	"github.com/airlockpam/airlock/internal/server"
	"github.com/airlockpam/airlock/internal/testenv"
)

// newProject creates a project through the UI and returns its id.
func (b *browser) newProject(name string) string {
	b.e.t.Helper()
	resp, body := b.do("POST", "/projects", url.Values{"csrf": {b.csrf("/projects")}, "name": {name}}, nil)
	loc := resp.Header.Get("Location")
	m := regexp.MustCompile(`^/projects/([^/?]+)/`).FindStringSubmatch(loc)
	if resp.StatusCode != http.StatusSeeOther || m == nil {
		b.e.t.Fatalf("creating project %s: %d %q %.300s", name, resp.StatusCode, loc, body)
	}
	return m[1]
}

// post sends a form with the CSRF token of page.
func (b *browser) post(page, path string, form url.Values) (*http.Response, string) {
	b.e.t.Helper()
	form.Set("csrf", b.csrf(page))
	return b.do("POST", path, form, nil)
}

func (e *env) auditCount(action string) int {
	e.t.Helper()
	list, err := e.srv.Audit.List(context.Background(), audit.Filter{OrgID: adminPrincipal(e.t, e).OrgID, Action: action, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(list)
}

// TestSecretsDashboard: environments, folders, secrets with hidden values,
// a reveal that is audited as a read, edit as a new version, history and
// restore; bad input names the field, keeps the key (never the value)
// and saves nothing.
func TestSecretsDashboard(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	b.login(adminEmail, adminPassword)
	pid := b.newProject("shop")
	dash := "/projects/" + pid + "/secrets"

	resp, body := b.get(dash)
	if resp.StatusCode != 200 {
		t.Fatalf("dashboard: %d %.300s", resp.StatusCode, body)
	}
	for _, want := range []string{`data-env="dev"`, `data-env="staging"`, `data-env="prod"`, `id="tab-secrets"`, "This folder is empty."} {
		if !strings.Contains(body, want) {
			t.Fatalf("dashboard lacks %q", want)
		}
	}

	// Bad key: the field is named, the key kept, the value not echoed.
	resp, body = b.post(dash, dash, url.Values{"env": {"dev"}, "path": {"/"}, "name": {"9 bad"}, "value": {"v-SECRET-0"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "Key: the secret name must start") ||
		!strings.Contains(body, `value="9 bad"`) || strings.Contains(body, "v-SECRET-0") {
		t.Fatalf("bad key: %d %s", resp.StatusCode, body)
	}

	// A folder, then a secret in it.
	resp, body = b.post(dash, dash+"/folders", url.Values{"env": {"dev"}, "path": {"/"}, "folder": {"bad folder"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "Folder: a folder path") || !strings.Contains(body, `value="bad folder"`) {
		t.Fatalf("bad folder: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.post(dash, dash+"/folders", url.Values{"env": {"dev"}, "path": {"/"}, "folder": {"db"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "path=%2Fdb") {
		t.Fatalf("folder: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	folder := dash + "?env=dev&path=/db"
	resp, _ = b.post(folder, dash, url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"API_KEY"}, "value": {"first-SECRET-1"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("set: %d", resp.StatusCode)
	}
	_, body = b.get(folder)
	if !strings.Contains(body, `data-secret="API_KEY"`) || strings.Contains(body, "first-SECRET-1") || !strings.Contains(body, `id="reveal-API_KEY"`) {
		t.Fatalf("the folder page shows a value or no row:\n%s", body)
	}
	if _, root := b.get(dash + "?env=dev&path=/"); !strings.Contains(root, `data-folder="db"`) {
		t.Fatal("the root does not list folder db")
	}

	// Reveal: a POST, audited as a read.
	reads := e.auditCount("secret.read")
	resp, body = b.post(folder, dash+"/reveal", url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"API_KEY"}})
	if resp.StatusCode != 200 || !strings.Contains(body, `id="value-API_KEY">first-SECRET-1<`) {
		t.Fatalf("reveal: %d %s", resp.StatusCode, body)
	}
	if got := e.auditCount("secret.read"); got != reads+1 {
		t.Fatalf("reveal audited %d reads, want 1", got-reads)
	}

	// Edit: a new version; history; restore version 1.
	edit := dash + "/edit?env=dev&path=/db&name=API_KEY"
	if resp, body = b.get(edit); resp.StatusCode != 200 || strings.Contains(body, "first-SECRET-1") {
		t.Fatalf("edit page: %d (it must not show the value)", resp.StatusCode)
	}
	resp, _ = b.post(edit, dash, url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"API_KEY"}, "value": {"second-SECRET-2"}, "edit": {"1"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("edit: %d", resp.StatusCode)
	}
	hist := dash + "/history?env=dev&path=/db&name=API_KEY"
	_, body = b.get(hist)
	if !strings.Contains(body, `data-version="2"`) || !strings.Contains(body, `data-version="1"`) || !strings.Contains(body, `id="restore-v1"`) ||
		strings.Contains(body, "SECRET-") {
		t.Fatalf("history:\n%s", body)
	}
	resp, body = b.post(hist, dash+"/reveal", url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"API_KEY"}, "version": {"1"}})
	if resp.StatusCode != 200 || !strings.Contains(body, `id="value-v1">first-SECRET-1<`) || strings.Contains(body, "second-SECRET-2") {
		t.Fatalf("reveal of version 1: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.post(hist, dash+"/restore", url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"API_KEY"}, "version": {"1"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("restore: %d", resp.StatusCode)
	}
	_, body = b.post(folder, dash+"/reveal", url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"API_KEY"}})
	if !strings.Contains(body, `id="value-API_KEY">first-SECRET-1<`) || !strings.Contains(body, "<td>3</td>") {
		t.Fatalf("after restore:\n%s", body)
	}

	// Delete; an environment.
	resp, _ = b.post(folder, dash+"/delete", url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"API_KEY"}})
	if _, body = b.get(folder); resp.StatusCode != http.StatusSeeOther || strings.Contains(body, `data-secret="API_KEY"`) {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	resp, body = b.post(dash, dash+"/environments", url.Values{"slug": {"QA!"}, "envName": {"Quality"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "slug holds up to 32") || !strings.Contains(body, `value="Quality"`) {
		t.Fatalf("bad environment: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.post(dash, dash+"/environments", url.Values{"slug": {"qa"}, "envName": {"Quality"}})
	if _, body = b.get(dash); resp.StatusCode != http.StatusSeeOther || !strings.Contains(body, `data-env="qa"`) {
		t.Fatalf("environment: %d", resp.StatusCode)
	}

	// Rename and delete an environment; one that holds a folder is not deleted.
	qa := dash + "?env=qa&path=/"
	resp, body = b.post(qa, dash+"/environments/rename", url.Values{"env": {"qa"}, "path": {"/"}, "envName": {""}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "Name: an environment&#39;s name holds 1 to 64") {
		t.Fatalf("an empty environment name: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.post(qa, dash+"/environments/rename", url.Values{"env": {"qa"}, "path": {"/"}, "envName": {"QA team"}})
	if _, body = b.get(qa); resp.StatusCode != http.StatusSeeOther || !strings.Contains(body, "QA team") {
		t.Fatalf("rename: %d", resp.StatusCode)
	}
	resp, body = b.post(dash, dash+"/environments/delete", url.Values{"env": {"dev"}, "path": {"/"}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "still holds") {
		t.Fatalf("deleting an environment with a folder: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.post(qa, dash+"/environments/delete", url.Values{"env": {"qa"}, "path": {"/"}})
	if _, body = b.get(dash); resp.StatusCode != http.StatusSeeOther || strings.Contains(body, `data-env="qa"`) {
		t.Fatalf("deleting an empty environment: %d", resp.StatusCode)
	}

	// A viewer sees names, not values, and no controls; forged forms are refused.
	b.post(folder, dash, url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"SEEN"}, "value": {"seen-SECRET-3"}})
	ctx := api.WithPrincipal(context.Background(), adminPrincipal(t, e))
	if _, err := e.srv.Auth.CreateUser(ctx, "viewer@example.com", "viewer password 1", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Projects.SetMember(ctx, pid, "viewer@example.com", "", project.RoleViewer); err != nil {
		t.Fatal(err)
	}
	v := e.browser()
	v.login("viewer@example.com", "viewer password 1")
	_, body = v.get(folder)
	if !strings.Contains(body, `data-secret="SEEN"`) {
		t.Fatalf("the viewer does not see the secret's name:\n%s", body)
	}
	for _, control := range []string{`id="reveal-SEEN"`, `id="edit-SEEN"`, `id="secret-form"`, `id="folder-form"`, `id="environment-form"`, `id="add-secret-rotation"`} {
		if strings.Contains(body, control) {
			t.Fatalf("the viewer sees %s", control)
		}
	}
	for path, form := range map[string]url.Values{
		dash + "/reveal": {"env": {"dev"}, "path": {"/db"}, "name": {"SEEN"}},
		dash:             {"env": {"dev"}, "path": {"/db"}, "name": {"SEEN"}, "value": {"mine"}},
		"/projects/" + pid + "/secret-rotations/new": {"step": {"2"}, "go": {"next"}, "connection": {"x"}, "username1": {"a"}, "username2": {"b"}},
		"/projects/" + pid + "/app-connections":      {"name": {"x"}, "host": {"db.example.com"}, "database": {"d"}, "username": {"u"}, "password": {"p"}},
	} {
		resp, body := v.post(folder, path, form)
		if resp.StatusCode != http.StatusForbidden || strings.Contains(body, "seen-SECRET-3") {
			t.Fatalf("a viewer's POST %s: %d %.300s", path, resp.StatusCode, body)
		}
	}
	// A folder that holds a secret is not deleted; an empty one is.
	resp, body = b.post(folder, dash+"/folders/delete", url.Values{"env": {"dev"}, "path": {"/db"}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "still holds 1 secrets") {
		t.Fatalf("deleting a folder with a secret: %d %s", resp.StatusCode, body)
	}
	b.post(folder, dash+"/delete", url.Values{"env": {"dev"}, "path": {"/db"}, "name": {"SEEN"}})
	resp, _ = b.post(folder, dash+"/folders/delete", url.Values{"env": {"dev"}, "path": {"/db"}})
	if _, body = b.get(dash + "?env=dev&path=/"); resp.StatusCode != http.StatusSeeOther || strings.Contains(body, `data-folder="db"`) {
		t.Fatalf("deleting an empty folder: %d", resp.StatusCode)
	}
}

// TestAppConnectionAndRotationPages: against a real PostgreSQL, a wrong
// password is shown next to the form and nothing is saved; the wizard
// checks each step, reviews and creates a rotation whose mapped secrets
// log in; Rotate now switches the user; a mapped secret cannot be edited
// and the connection cannot be deleted while the rotation uses it.
func TestAppConnectionAndRotationPages(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	t.Setenv(appconn.AllowInternalEnv, "true")
	e := startWith(t, func(*server.Config) {})
	for _, stmt := range []string{
		`CREATE ROLE web_rotator LOGIN CREATEROLE PASSWORD 'rotator-SECRET-pw'`,
		`CREATE ROLE web_app_a LOGIN PASSWORD 'a-initial'`, `CREATE ROLE web_app_b LOGIN PASSWORD 'a-initial'`,
	} {
		pgExec(t, pg.SuperURL(), stmt)
	}
	b := e.browser()
	b.login(adminEmail, adminPassword)
	pid := b.newProject("orders")
	conns := "/projects/" + pid + "/app-connections"
	form := url.Values{"name": {"orders-db"}, "host": {"127.0.0.1"}, "port": {fmt.Sprint(pg.Cluster.Port)}, "database": {pg.Name},
		"username": {"web_rotator"}, "password": {"wrong-SECRET-pw"}, "sslEnabled": {"on"}, "sslRejectUnauthorized": {"on"},
		"sslCertificate": {string(pg.Cluster.CA.CertPEM)}}
	if _, body := b.get(conns + "/new"); !strings.Contains(body, `id="port" value="5432"`) {
		t.Fatal("the port does not come filled in with 5432")
	}
	resp, body := b.post(conns+"/new", conns, form)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "logging in failed") || !strings.Contains(body, `value="web_rotator"`) ||
		strings.Contains(body, "wrong-SECRET-pw") {
		t.Fatalf("wrong password: %d %s", resp.StatusCode, body)
	}
	if _, body = b.get(conns); !strings.Contains(body, `id="no-connections"`) {
		t.Fatal("a connection that could not log in was saved")
	}
	form.Set("password", "rotator-SECRET-pw")
	if resp, _ = b.post(conns+"/new", conns, form); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create connection: %d", resp.StatusCode)
	}
	if _, body = b.get(conns); !strings.Contains(body, `data-connection="orders-db"`) || strings.Contains(body, "rotator-SECRET-pw") {
		t.Fatalf("connections:\n%s", body)
	}

	// A platform-managed connection: its user's original password no longer logs in.
	pgExec(t, pg.SuperURL(), `CREATE ROLE web_managed LOGIN PASSWORD 'managed-SECRET-pw'`)
	pm := url.Values{"name": {"managed-db"}, "host": {"127.0.0.1"}, "port": {fmt.Sprint(pg.Cluster.Port)}, "database": {pg.Name},
		"username": {"web_managed"}, "password": {"managed-SECRET-pw"}, "sslEnabled": {"on"}, "sslRejectUnauthorized": {"on"},
		"sslCertificate": {string(pg.Cluster.CA.CertPEM)}, "platformManaged": {"on"}}
	if resp, _ = b.post(conns+"/new", conns, pm); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create a platform-managed connection: %d", resp.StatusCode)
	}
	if _, body = b.get(conns); !strings.Contains(body, "platform-managed (nobody knows the password)") || pgLogin(pg, "web_managed", "managed-SECRET-pw") {
		t.Fatal("the platform-managed connection is not marked, or its original password still logs in")
	}

	// The wizard.
	dash := "/projects/" + pid + "/secrets"
	b.post(dash, dash+"/folders", url.Values{"env": {"prod"}, "path": {"/"}, "folder": {"/db/orders"}})
	wiz := "/projects/" + pid + "/secret-rotations/new"
	z := url.Values{"step": {"1"}, "go": {"next"}, "connection": {"orders-db"}, "interval": {"0"}, "rotateAt": {"02:00"},
		"timeZone": {"Europe/Berlin"}, "autoRotation": {"on"}}
	step := func(want int, wantErr string) string {
		t.Helper()
		resp, body := b.post(wiz, wiz, z)
		if wantErr != "" {
			if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, wantErr) {
				t.Fatalf("step %s: %d, want error %q:\n%s", z.Get("step"), resp.StatusCode, wantErr, body)
			}
			return body
		}
		if resp.StatusCode != 200 || !strings.Contains(body, fmt.Sprintf(`data-step="%d"`, want)) {
			t.Fatalf("step %s: %d, want step %d:\n%s", z.Get("step"), resp.StatusCode, want, body)
		}
		z.Set("step", fmt.Sprint(want))
		return body
	}
	step(0, "Rotation Interval: give a number of days from 1 to 365")
	z.Set("interval", "7")
	z.Set("rotateAt", "2am")
	step(0, "Rotate At: give a time of day as HH:MM")
	z.Set("rotateAt", "02:00")
	z.Set("timeZone", "Mars/Base")
	step(0, "Time zone: unknown time zone")
	z.Set("timeZone", "Europe/Berlin")
	step(2, "")
	z.Del("autoRotation")
	z.Set("auto", "true")
	z.Set("username1", "web_app_a")
	z.Set("username2", "web_app_a")
	step(0, "Database Username 2: give a different user")
	z.Set("username2", "web_nobody")
	step(0, "does not exist")
	z.Set("username2", "web_app_b")
	step(3, "")
	z.Set("env", "prod")
	z.Set("path", "/db/missing")
	z.Set("usernameSecret", "PGUSER")
	z.Set("passwordSecret", "PGPASSWORD")
	step(0, "Environment and path: environment prod has no folder /db/missing")
	z.Set("path", "/db/orders")
	step(4, "")
	z.Set("name", "Orders Creds")
	step(0, "Name: a slug")
	z.Set("name", "orders-creds")
	body = step(5, "")
	for _, want := range []string{"every 7 days at 02:00 (Europe/Berlin)", "web_app_a", "web_app_b", "prod:/db/orders", "PGUSER", "PGPASSWORD", "orders-creds", "Create Secret Rotation"} {
		if !strings.Contains(body, want) {
			t.Fatalf("the review lacks %q:\n%s", want, body)
		}
	}
	// Back keeps the answers.
	z.Set("go", "back")
	if _, body = b.post(wiz, wiz, z); !strings.Contains(body, `data-step="4"`) || !strings.Contains(body, `value="orders-creds"`) {
		t.Fatalf("back:\n%s", body)
	}
	z.Set("go", "create")
	resp, body = b.post(wiz, "/projects/"+pid+"/secret-rotations", z)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create rotation: %d %s", resp.StatusCode, body)
	}
	rots := "/projects/" + pid + "/secret-rotations"
	if _, body = b.get(rots); !strings.Contains(body, `data-rotation="orders-creds"`) || !strings.Contains(body, `id="rotate-orders-creds"`) {
		t.Fatalf("rotations:\n%s", body)
	}
	published := func() (string, string) {
		t.Helper()
		sec, err := e.srv.Secrets.Reveal(api.WithPrincipal(context.Background(), adminPrincipal(t, e)), pid, secrets.Place{Environment: "prod", Path: "/db/orders"})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, s := range sec {
			m[s.Name] = *s.Value
		}
		return m["PGUSER"], m["PGPASSWORD"]
	}
	u, p := published()
	if u != "web_app_a" || !pgLogin(pg, u, p) {
		t.Fatalf("after create: %s does not log in", u)
	}
	// Rotate now.
	id := regexp.MustCompile(`/secret-rotations/([^/]+)/rotate`).FindStringSubmatch(body)[1]
	// The schedule: a bad interval is refused, naming the field; a good one is saved.
	resp, body = b.post(rots, rots+"/"+id+"/update", url.Values{"interval": {"400"}, "rotateAt": {"03:30"}, "timeZone": {"UTC"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "Rotation Interval: the rotation interval is a number of days from 1 to 365") {
		t.Fatalf("interval 400: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.post(rots, rots+"/"+id+"/update", url.Values{"interval": {"14"}, "rotateAt": {"03:30"}, "timeZone": {"UTC"}, "description": {"orders"}})
	if _, body = b.get(rots); resp.StatusCode != http.StatusSeeOther || !strings.Contains(body, "every 14 days at 03:30 UTC") ||
		!strings.Contains(body, "auto-rotation off") || !strings.Contains(body, `id="next-orders-creds">only by hand`) {
		t.Fatalf("the saved schedule: %d\n%s", resp.StatusCode, body)
	}
	resp, _ = b.post(rots, rots+"/"+id+"/rotate", url.Values{})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("rotate now: %d", resp.StatusCode)
	}
	u2, p2 := published()
	if u2 != "web_app_b" || !pgLogin(pg, u2, p2) || !pgLogin(pg, u, p) {
		t.Fatalf("after Rotate now: published %s; the new or the previous credentials do not log in", u2)
	}
	// A failing rotation: the error shows, the status says failed, and the
	// published credentials stay as they were.
	pgExec(t, pg.SuperURL(), `ALTER ROLE web_app_a NOLOGIN`)
	resp, body = b.post(rots, rots+"/"+id+"/rotate", url.Values{})
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `id="error"`) || !strings.Contains(body, "the rotation failed") {
		t.Fatalf("a failing Rotate now: %d %s", resp.StatusCode, body)
	}
	_, body = b.get(rots)
	status := regexp.MustCompile(`(?s)id="status-orders-creds">(.*?)</td>`).FindStringSubmatch(body)
	if status == nil || !strings.Contains(status[1], "failed") || !strings.Contains(status[1], "last-error") {
		t.Fatalf("the failed rotation's status:\n%s", body)
	}
	if u3, p3 := published(); u3 != u2 || p3 != p2 || !pgLogin(pg, u2, p2) {
		t.Fatal("a failed rotation changed or broke the published credentials")
	}
	pgExec(t, pg.SuperURL(), `ALTER ROLE web_app_a LOGIN`)

	// Mapped secrets and the used connection are refused.
	folder := dash + "?env=prod&path=/db/orders"
	if _, body = b.get(folder); !strings.Contains(body, "rotated by orders-creds") || strings.Contains(body, `id="edit-PGPASSWORD"`) {
		t.Fatalf("the dashboard does not mark the mapped secrets:\n%s", body)
	}
	resp, body = b.post(folder, dash, url.Values{"env": {"prod"}, "path": {"/db/orders"}, "name": {"PGPASSWORD"}, "value": {"mine"}, "edit": {"1"}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "secret rotation orders-creds") {
		t.Fatalf("editing a mapped secret: %d %s", resp.StatusCode, body)
	}
	if u3, p3 := published(); u3 != u2 || p3 != p2 {
		t.Fatal("a refused edit changed a mapped secret")
	}
	_, body = b.get(conns)
	cid := regexp.MustCompile(`(?s)data-connection="orders-db".*?/app-connections/([^/]+)/delete`).FindStringSubmatch(body)[1]
	resp, body = b.post(conns, conns+"/"+cid+"/delete", url.Values{})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "secret rotation orders-creds") {
		t.Fatalf("deleting a used connection: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.post(rots, rots+"/"+id+"/delete", url.Values{"deleteSecrets": {"on"}})
	if _, body = b.get(rots); resp.StatusCode != http.StatusSeeOther || !strings.Contains(body, `id="no-rotations"`) {
		t.Fatalf("delete rotation: %d", resp.StatusCode)
	}
	if resp, _ = b.post(conns, conns+"/"+cid+"/delete", url.Values{}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete connection: %d", resp.StatusCode)
	}
}

func pgExec(t *testing.T, dsn, stmt string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), stmt); err != nil {
		t.Fatal(err)
	}
}

// pgLogin says whether user logs in to db with password.
func pgLogin(db testenv.Database, user, password string) bool {
	cfg, err := pgx.ParseConfig(db.SuperURL())
	if err != nil {
		return false
	}
	cfg.User, cfg.Password = user, password
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		return false
	}
	conn.Close(context.Background())
	return true
}
