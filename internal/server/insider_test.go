package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/server/apidocs"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestGatewayProjects is the attack of a user who creates a project of
// their own and names the organization's gateway in a resource, to reach
// the gateway's network. An organization admin decides which projects may
// use a gateway; a project that may not gets the same answer as for a
// gateway that does not exist.
func TestGatewayProjects(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		mallory := f.e.createUser("mallory@example.com")
		var p struct{ ID string }
		if st := mallory.call("POST", "/api/v1/projects", map[string]any{"name": "scanner"}, &p); st != 201 {
			t.Fatalf("create project: %d %s", st, mallory.problem().raw)
		}
		res := "/api/v1/projects/" + p.ID + "/resources"
		body := func(gateway string) map[string]any {
			return map[string]any{"kind": "postgres", "name": "probe", "gateway": gateway, "host": "10.0.0.1", "port": 22,
				"database": "postgres"}
		}
		var unknown, refused string
		for _, gw := range []string{"dc1", f.gateway, "no-such-gateway"} {
			if st := mallory.call("POST", res, body(gw), nil); st != 422 {
				t.Fatalf("a resource on gateway %s of a project not allowed to use it: status %d", gw, st)
			}
			pr := mallory.problem()
			if len(pr.Errors) != 1 || pr.Errors[0].Location != "body.gateway" || !strings.Contains(pr.Detail, "allow-project") {
				t.Errorf("the refusal does not name the field and the fix: %s", pr.raw)
			}
			if strings.Contains(pr.raw, gw) {
				t.Errorf("the refusal echoes the gateway given: %s", pr.raw)
			}
			if gw == "no-such-gateway" {
				unknown = pr.Detail
			} else {
				refused = pr.Detail
			}
		}
		if unknown != refused {
			t.Errorf("an unknown gateway and a refused one answer differently:\n%s\n%s", unknown, refused)
		}
		var n int
		if err := f.e.sqlDB().QueryRow(`SELECT COUNT(*) FROM resources WHERE project_id = $1`, p.ID).Scan(&n); err != nil || n != 0 {
			t.Fatalf("a refused resource was saved: %d %v", n, err)
		}

		// Only an organization admin allows (and disallows) a project.
		gwProjects := "/api/v1/gateways/dc1/projects/" + p.ID
		if st := mallory.call("PUT", gwProjects, nil, nil); st != 403 {
			t.Errorf("a user allowed their own project: %d", st)
		}
		if st := mallory.call("GET", "/api/v1/gateways/dc1/projects", nil, nil); st != 403 {
			t.Errorf("a user listed a gateway's projects: %d", st)
		}
		if st := f.admin.call("PUT", gwProjects, nil, nil); st != 204 {
			t.Fatalf("allow: %d %s", st, f.admin.problem().raw)
		}
		if st := f.admin.call("PUT", gwProjects, nil, nil); st != 204 {
			t.Fatalf("allow again: %d %s", st, f.admin.problem().raw)
		}
		var list []struct{ ProjectID, ProjectName string }
		if st := f.admin.call("GET", "/api/v1/gateways/dc1/projects", nil, &list); st != 200 || len(list) != 2 {
			t.Errorf("the gateway's projects: %d %v", st, list)
		}
		if st := mallory.call("POST", res, body("dc1"), nil); st != 201 {
			t.Fatalf("a resource of an allowed project: %d %s", st, mallory.problem().raw)
		}
		if acts := f.admin.auditActions("action=gateway.allow_project"); len(acts) != 1 || acts[0] != "gateway.allow_project:success" {
			t.Errorf("allow audited: %v", acts)
		}
		// Listing the organization's gateways (names, addresses, versions)
		// is for organization admins; a project admin sees the gateway of
		// each of their resources.
		if st := mallory.call("GET", "/api/v1/gateways", nil, nil); st != 403 {
			t.Errorf("a user listed the gateways: %d", st)
		}
		var gws []map[string]any
		if st := f.admin.call("GET", "/api/v1/gateways", nil, &gws); st != 200 || len(gws) != 1 {
			t.Errorf("an organization admin lists the gateways: %d %v", st, gws)
		}
		var rs []map[string]any
		if st := mallory.call("GET", res, nil, &rs); st != 200 || len(rs) != 1 || rs[0]["gatewayName"] != "dc1" {
			t.Errorf("a project admin's resources: %d %v", st, rs)
		}

		// Disallowing ends the project's sessions through the gateway and
		// refuses new ones, with a message naming the fix.
		live := f.session(f.admin)
		if st := f.admin.call("DELETE", "/api/v1/gateways/dc1/projects/"+f.project, nil, nil); st != 204 {
			t.Fatalf("disallow: %d %s", st, f.admin.problem().raw)
		}
		if status, reason, msg := f.state(live); status != "ended" || reason != "revoked" || !strings.Contains(msg, "gateway") {
			t.Errorf("a session on a disallowed gateway: %s/%s %q", status, reason, msg)
		}
		if _, _, _, err := f.e.srv.PAM.SessionTarget(context.Background(), f.project, f.resource, f.account); err == nil ||
			!strings.Contains(err.Error(), "allow-project") {
			t.Errorf("a target on a disallowed gateway: %v", err)
		}
		if acts := f.admin.auditActions("action=gateway.disallow_project"); len(acts) != 1 {
			t.Errorf("disallow audited: %v", acts)
		}
		// An organization admin naming the gateway for a project allows it,
		// audited in the same transaction.
		if st := f.admin.call("POST", "/api/v1/projects/"+f.project+"/resources",
			map[string]any{"kind": "postgres", "name": "second", "gateway": "dc1", "host": "127.0.0.1", "database": "app"}, nil); st != 201 {
			t.Fatalf("an organization admin's change: %d %s", st, f.admin.problem().raw)
		}
		if acts := f.admin.auditActions("action=gateway.allow_project"); len(acts) != 2 {
			t.Errorf("allow by an admin's change audited: %v", acts)
		}
	})
}

// TestGatewayProjectsMigration: the migration that introduces gateway
// assignments allows every project that already used a gateway, so that
// existing resources keep working, and no other.
func TestGatewayProjectsMigration(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		idle := f.newProject("idle")
		ctx := context.Background()
		dialect := goose.DialectSQLite3
		if f.e.srv.DB.Dialect == store.Postgres {
			dialect = goose.DialectPostgres
		}
		p, err := goose.NewProvider(dialect, f.e.sqlDB(), os.DirFS("../store/migrations"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 8); err != nil {
			t.Fatalf("migrating down: %v", err)
		}
		if _, err := p.UpTo(ctx, 9); err != nil {
			t.Fatalf("migrating up: %v", err)
		}
		allowed := func(project string) bool {
			var n int
			if err := f.e.sqlDB().QueryRow(`SELECT COUNT(*) FROM gateway_projects WHERE gateway_id = $1 AND project_id = $2`,
				f.gateway, project).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 1
		}
		if !allowed(f.project) || allowed(idle) {
			t.Errorf("after the migration: the project using the gateway allowed %v, the idle one %v", allowed(f.project), allowed(idle))
		}
		// The later migrations again, as the server runs them.
		if _, err := p.Up(ctx); err != nil {
			t.Fatalf("migrating up to the latest: %v", err)
		}
		if _, _, _, err := f.e.srv.PAM.SessionTarget(ctx, f.project, f.resource, f.account); err != nil {
			t.Errorf("an existing resource stopped working: %v", err)
		}
	})
}

// TestStatementLimitSettings: a project's limit on recorded statements and
// what happens to a longer one are project settings, validated, audited,
// sent with every new connection and pushed to live sessions' gateways.
func TestStatementLimitSettings(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		g := f.attachGateway()
		path := "/api/v1/projects/" + f.project
		var p map[string]any
		if st := f.admin.call("GET", path, nil, &p); st != 200 || p["maxStatementBytes"] != float64(1<<20) || p["oversizeStatements"] != "refuse" {
			t.Fatalf("defaults: %d %v", st, p)
		}
		for _, bad := range []map[string]any{
			{"maxStatementBytes": 100}, {"maxStatementBytes": 65 << 20}, {"oversizeStatements": "truncate"},
		} {
			if st := f.admin.call("PATCH", path, bad, nil); st != 422 {
				t.Errorf("%v: status %d", bad, st)
			}
		}
		viewer := f.member("viewer@example.com", "viewer")
		if st := viewer.call("PATCH", path, map[string]any{"oversizeStatements": "record_ends"}, nil); st != 403 {
			t.Errorf("a viewer changed the oversize rule: %d", st)
		}
		live := f.session(f.admin)
		f.mustCall(f.admin, "PATCH", path, map[string]any{"maxStatementBytes": 2 << 20, "oversizeStatements": "record_ends"}, 200)
		cs, err := f.e.srv.Sessions.AuthorizeConnection(context.Background(), live)
		if err != nil || cs.MaxStatementBytes != 2<<20 || cs.OversizeStatements != "record_ends" {
			t.Fatalf("a new connection's settings: %v %+v", err, cs)
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(g.got(tunnel.TypeUpdate, live)) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		up := g.got(tunnel.TypeUpdate, live)
		if len(up) != 1 || up[0].MaxStatementBytes != 2<<20 || up[0].OversizeStatements != "record_ends" {
			t.Fatalf("the push to the live session's gateway: %+v", up)
		}
		if acts := f.admin.auditActions("action=project.update"); len(acts) != 1 {
			t.Errorf("audited: %v", acts)
		}
	})
}

// TestGatewayCertificateRenewal: a connected gateway sends a CSR on a renew
// stream and gets a new certificate for the same gateway id, signed by the
// organization's CA with an enrollment's lifetime; from then on only the new
// certificate is accepted, and the renewal is audited.
func TestGatewayCertificateRenewal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		var g struct {
			ID              string `json:"id"`
			EnrollmentToken string `json:"enrollmentToken"`
		}
		if st := f.admin.call("POST", "/api/v1/gateways", map[string]any{"name": "dc2"}, &g); st != 201 {
			t.Fatalf("create gateway: %d %s", st, f.admin.problem().raw)
		}
		_, csr1, err := pki.NewKeyAndCSR("gateway")
		if err != nil {
			t.Fatal(err)
		}
		var enrolled struct{ Certificate, CACertificate string }
		if st := f.e.anon().call("POST", "/api/v1/gateways/enroll", map[string]any{"token": g.EnrollmentToken, "csr": string(csr1)}, &enrolled); st != 200 {
			t.Fatalf("enroll: %d %s", st, f.e.anon().problem().raw)
		}
		old := insParseCert(t, enrolled.Certificate)

		a, bb := net.Pipe()
		srvSide, _ := tunnel.MuxClient(a)
		gwSide, _ := tunnel.MuxServer(bb)
		go f.e.srv.Relay.AttachGateway(g.ID, "test", srvSide)
		t.Cleanup(func() { gwSide.Close() })
		renew := func(csr string) tunnel.Result {
			st, err := gwSide.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := tunnel.WriteFrame(st, tunnel.Header{Type: tunnel.TypeRenew, CSR: csr}); err != nil {
				t.Fatal(err)
			}
			var res tunnel.Result
			if err := tunnel.ReadFrame(st, &res); err != nil {
				t.Fatal(err)
			}
			return res
		}
		serial := func() (s string, notAfter int64) {
			if err := f.e.sqlDB().QueryRow(`SELECT cert_serial, cert_not_after FROM gateways WHERE id = $1`, g.ID).Scan(&s, &notAfter); err != nil {
				t.Fatal(err)
			}
			return
		}
		// A malformed request is refused and changes nothing.
		if res := renew("not a CSR"); res.OK || res.Code != tunnel.CodeInvalid || res.Certificate != "" {
			t.Errorf("a bad CSR: %+v", res)
		}
		if s, _ := serial(); s != old.SerialNumber.Text(16) {
			t.Errorf("a refused renewal replaced the certificate")
		}

		f.e.clock.Advance(300 * 24 * time.Hour)
		_, csr2, err := pki.NewKeyAndCSR("gateway")
		if err != nil {
			t.Fatal(err)
		}
		res := renew(string(csr2))
		if !res.OK || res.Certificate == "" {
			t.Fatalf("renewal: %+v", res)
		}
		cert := insParseCert(t, res.Certificate)
		pool, err := pki.PoolFromPEM([]byte(enrolled.CACertificate))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: f.e.clock.Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("the new certificate is not the organization CA's: %v", err)
		}
		if id := pki.IDFromCert(cert, "gateway"); id != g.ID {
			t.Errorf("the new certificate names gateway %q, want %q", id, g.ID)
		}
		if !cert.NotAfter.After(old.NotAfter) || cert.NotAfter.After(f.e.clock.Now().Add(366*24*time.Hour)) {
			t.Errorf("the new certificate ends %v (old %v, now %v)", cert.NotAfter, old.NotAfter, f.e.clock.Now())
		}
		s, notAfter := serial()
		if s != cert.SerialNumber.Text(16) || s == old.SerialNumber.Text(16) || store.Time(notAfter).Unix() != cert.NotAfter.Unix() {
			t.Errorf("the store accepts serial %s until %v; the new certificate is %s until %v",
				s, store.Time(notAfter), cert.SerialNumber.Text(16), cert.NotAfter)
		}
		if acts := f.e.admin().auditActions("action=gateway.renew"); len(acts) != 1 || acts[0] != "gateway.renew:success" {
			t.Errorf("renewal audited: %v", acts)
		}
	})
}

func insParseCert(t *testing.T, certPEM string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDuplicateProjectNameRevealsNothing: a user probing for the names of
// projects they cannot see gets, for a taken name, the very answer they get
// for a name of their own project, which names no project.
func TestDuplicateProjectNameRevealsNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		admin := e.admin()
		var hidden struct{ ID string }
		if st := admin.call("POST", "/api/v1/projects", map[string]any{"name": "acquisition-x"}, &hidden); st != 201 {
			t.Fatalf("create: %d", st)
		}
		mallory := e.createUser("mallory@example.com")
		if st := mallory.call("POST", "/api/v1/projects", map[string]any{"name": "mine"}, nil); st != 201 {
			t.Fatalf("create: %d", st)
		}
		var answers []string
		for _, name := range []string{"acquisition-x", "mine"} {
			st := mallory.call("POST", "/api/v1/projects", map[string]any{"name": name}, nil)
			p := mallory.problem()
			if st != 409 || len(p.Errors) != 1 || p.Errors[0].Location != "body.name" {
				t.Errorf("%s: %d %s", name, st, p.raw)
			}
			if strings.Contains(p.raw, name) || strings.Contains(p.raw, hidden.ID) {
				t.Errorf("%s: the answer names the project: %s", name, p.raw)
			}
			answers = append(answers, p.raw)
		}
		if answers[0] != answers[1] {
			t.Errorf("a hidden project's name answers differently from one's own:\n%s\n%s", answers[0], answers[1])
		}
	})
}

// TestProjectAdminCannotTouchOrgAdminMembership: a project admin can
// neither add an organization admin to their project (with any role), nor
// change or remove the membership an organization admin holds there; an
// organization admin can.
func TestProjectAdminCannotTouchOrgAdminMembership(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		admin := e.admin()
		owner := e.createUser("owner@example.com")
		var p struct{ ID string }
		if st := owner.call("POST", "/api/v1/projects", map[string]any{"name": "payments"}, &p); st != 201 {
			t.Fatalf("create: %d", st)
		}
		members := "/api/v1/projects/" + p.ID + "/members"
		for _, role := range []string{"admin", "member", "viewer"} {
			if st := owner.call("PUT", members, map[string]any{"email": adminEmail, "role": role}, nil); st != 403 ||
				!strings.Contains(owner.problem().Detail, "organization admin") {
				t.Errorf("a project admin added an org admin as %s: %d %s", role, st, owner.problem().raw)
			}
		}
		var me map[string]any
		admin.call("GET", "/api/v1/auth/me", nil, &me)
		adminID := me["id"].(string)
		if st := admin.call("PUT", members, map[string]any{"email": adminEmail, "role": "viewer"}, nil); st != 200 {
			t.Fatalf("an org admin joins: %d %s", st, admin.problem().raw)
		}
		if st := owner.call("PUT", members, map[string]any{"email": adminEmail, "role": "admin"}, nil); st != 403 {
			t.Errorf("a project admin changed an org admin's role: %d", st)
		}
		if st := owner.call("DELETE", members+"/user/"+adminID, nil, nil); st != 403 {
			t.Errorf("a project admin removed an org admin: %d", st)
		}
		var list []map[string]any
		owner.call("GET", members, nil, &list)
		found := false
		for _, m := range list {
			found = found || (m["id"] == adminID && m["role"] == "viewer")
		}
		if !found {
			t.Errorf("the org admin's membership changed: %v", list)
		}
		// Ordinary members stay the project admin's to manage.
		e.createUser("dev@example.com")
		if st := owner.call("PUT", members, map[string]any{"email": "dev@example.com", "role": "admin"}, nil); st != 200 {
			t.Errorf("a project admin adds a user: %d %s", st, owner.problem().raw)
		}
		if st := admin.call("DELETE", members+"/user/"+adminID, nil, nil); st != 204 {
			t.Errorf("an org admin leaves: %d %s", st, admin.problem().raw)
		}
	})
}

// TestErrorsDoNotEchoInput: no problem document repeats a name, id or value
// the caller sent (a probe, a mistyped secret, markup), wherever it went:
// path, query, body field or broken JSON.
func TestErrorsDoNotEchoInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		const m = "zqmarker"
		pid := f.project
		cases := []struct {
			method, path string
			body         any
		}{
			{"GET", "/api/v1/projects/" + m, nil},
			{"GET", "/api/v1/projects/0197a000-0000-7000-8000-" + "00000" + "0" + m[:2] + "0000", nil},
			{"GET", "/api/v1/projects/" + pid + "/resources/" + m, nil},
			{"GET", "/api/v1/projects/" + pid + "/accounts/" + m, nil},
			{"GET", "/api/v1/projects/" + pid + "/accounts?metadata=" + m, nil},
			{"GET", "/api/v1/projects/" + pid + "/accounts?resource=" + m, nil},
			{"GET", "/api/v1/sessions/" + m, nil},
			{"DELETE", "/api/v1/gateways/" + m, nil},
			{"PUT", "/api/v1/gateways/" + m + "/projects/" + pid, nil},
			{"PUT", "/api/v1/gateways/dc1/projects/" + m, nil},
			{"POST", "/api/v1/projects", map[string]any{"name": "x", "maxSessionDuration": m}},
			{"PATCH", "/api/v1/projects/" + pid, map[string]any{"oversizeStatements": m}},
			{"POST", "/api/v1/projects/" + pid + "/resources", map[string]any{"kind": "postgres", "name": "Bad-" + m, "gateway": "dc1",
				"host": "h", "database": "d"}},
			{"POST", "/api/v1/projects/" + pid + "/resources", map[string]any{"kind": "postgres", "name": "ok", "gateway": m,
				"host": "h", "database": "d"}},
			{"POST", "/api/v1/projects/" + pid + "/resources", map[string]any{"kind": "mongodb", "name": "ok", "gateway": "dc1",
				"connectionString": "mongodb://h/" + m}},
			{"POST", "/api/v1/projects/" + pid + "/resources", map[string]any{"kind": "mongodb", "name": "ok", "gateway": "dc1",
				"connectionString": "mongodb://h/?tlsInsecure=" + m}},
			{"POST", "/api/v1/projects/" + pid + "/accounts", map[string]any{"resource": m, "name": "a", "username": "u", "password": "p-" + m}},
			{"POST", "/api/v1/projects/" + pid + "/sessions", map[string]any{"resource": "main-db", "account": "app", "duration": m, "csr": "x"}},
			{"POST", "/api/v1/auth/login", map[string]any{"email": m + "@example.com", "password": m}},
			{"PATCH", "/api/v1/projects/" + pid, `{"description": "` + m},
			{"PATCH", "/api/v1/projects/" + pid, map[string]any{m: 1}},
			{"GET", "/api/v1/projects/" + pid + "/resources?" + m + "=1", nil},
		}
		for _, c := range cases {
			st := f.admin.call(c.method, c.path, c.body, nil)
			if st < 400 {
				t.Errorf("%s %s: status %d, want a refusal", c.method, c.path, st)
				continue
			}
			if raw := f.admin.problem().raw; strings.Contains(strings.ToLower(raw), m) {
				t.Errorf("%s %s: the answer echoes the input: %s", c.method, c.path, raw)
			}
		}
	})
}

// TestAPIDocsAreEmbedded: /api/docs loads its viewer from this server, the
// pinned copy embedded in the binary, and tells the browser to load nothing
// from anywhere else.
func TestAPIDocsAreEmbedded(t *testing.T) {
	e := start(t, backends()[0])
	anon := e.anon()
	st, page := anon.raw("GET", "/api/docs", nil, "")
	if st != 200 {
		t.Fatalf("/api/docs: %d", st)
	}
	for _, bad := range []string{"http://", "https://", "//unpkg", "//cdn"} {
		if strings.Contains(string(page), bad) {
			t.Errorf("the docs page refers to another host (%s):\n%s", bad, page)
		}
	}
	if !strings.Contains(string(page), `<script src="/api/docs/redoc.standalone.js">`) ||
		!strings.Contains(string(page), `spec-url="/api/openapi.json"`) {
		t.Errorf("the docs page does not load the embedded viewer and the API document:\n%s", page)
	}
	req, _ := http.NewRequest("GET", e.http.URL+"/api/docs", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy: %q", csp)
	}
	st, js := anon.raw("GET", "/api/docs/redoc.standalone.js", nil, "")
	sum := sha256.Sum256(js)
	if st != 200 || hex.EncodeToString(sum[:]) != apidocs.ViewerSHA256 || apidocs.ViewerHash() != apidocs.ViewerSHA256 {
		t.Errorf("the viewer: %d, %d bytes, sha256 %x, want %s", st, len(js), sum, apidocs.ViewerSHA256)
	}
	st, spec := anon.raw("GET", "/api/openapi.json", nil, "")
	if st != 200 {
		t.Fatalf("/api/openapi.json: %d", st)
	}
	// The document generated from the code describes this API.
	for _, want := range []string{`"allowAuth"`, `"AccountCredentials"`, `"maxStatementBytes"`, `"oversizeStatements"`,
		`"allow-gateway-project"`, `"disallow-gateway-project"`, `"list-gateway-projects"`, `"/api/v1/gateways/{gateway}/projects/{projectId}"`} {
		if !strings.Contains(string(spec), want) {
			t.Errorf("the OpenAPI document lacks %s", want)
		}
	}
}

// insAttachGateway connects, as the fixture's gateway, one that answers
// every request stream with answer.
func insAttachGateway(f *fixture, answer tunnel.Result) {
	f.t.Helper()
	a, b := net.Pipe()
	srvSide, _ := tunnel.MuxClient(a)
	gwSide, _ := tunnel.MuxServer(b)
	go f.e.srv.Relay.AttachGateway(f.gateway, "test", srvSide)
	go func() {
		for {
			st, err := gwSide.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				var h tunnel.Header
				if tunnel.ReadFrame(st, &h) == nil {
					_ = tunnel.WriteFrame(st, answer)
				}
			}()
		}
	}()
	f.t.Cleanup(func() { gwSide.Close() })
	for !f.e.srv.Relay.Connected(f.gateway) {
		time.Sleep(10 * time.Millisecond)
	}
}

// TestValidationRevealsNoBanner: a project admin who points a resource at
// an internal service learns that it cannot be reached, not what the
// gateway saw there (a banner, a TLS certificate's details); an
// organization admin gets the gateway's whole answer.
func TestValidationRevealsNoBanner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, c := range []tunnel.Result{
			{Code: tunnel.CodeUnreachable, Message: "the server at 127.0.0.1:5432 sent SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"},
			{Code: tunnel.CodeTLS, Message: "x509: certificate is valid for vault.internal.example.com, not 127.0.0.1"},
			{Code: tunnel.CodeInvalid, Message: "HTTP/1.1 400 Bad Request Server: nginx/1.22.1"},
		} {
			// A fresh fixture each: one gateway connection answers alike.
			f := newFixture(t, b)
			owner := f.member("owner@example.com", "admin")
			insAttachGateway(f, c)
			body := map[string]any{"resource": "main-db", "name": "probe", "username": "u", "password": "a password"}
			st := owner.call("POST", "/api/v1/projects/"+f.project+"/accounts", body, nil)
			p := owner.problem()
			if st < 400 || !strings.Contains(p.Detail, "cannot reach 127.0.0.1:5432") {
				t.Errorf("%s: a project admin's refusal: %d %s", c.Code, st, p.raw)
			}
			for _, leak := range []string{"SSH", "vault", "nginx", "x509", "HTTP"} {
				if strings.Contains(p.raw, leak) {
					t.Errorf("%s: a project admin learns %q: %s", c.Code, leak, p.raw)
				}
			}
			if st := f.admin.call("POST", "/api/v1/projects/"+f.project+"/accounts", body, nil); st < 400 ||
				!strings.Contains(f.admin.problem().Detail, c.Message) {
				t.Errorf("%s: an organization admin's refusal: %d %s", c.Code, st, f.admin.problem().raw)
			}
		}
	})
}
