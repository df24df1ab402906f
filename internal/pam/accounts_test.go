package pam_test

import (
	"net/url"
	"sort"
	"strings"
	"testing"
)

func TestAccounts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		pg := e.target.Cluster
		owner := e.createUser("owner@example.com")
		pid := owner.project("payments")
		base := "/api/v1/projects/" + pid
		var res map[string]any
		owner.must(201, "POST", base+"/resources", e.pgResource("orders-db"), &res)
		resID := res["id"].(string)

		// A wrong password is refused by the real database, and nothing is saved.
		calls := e.validator.calls.Load()
		p := owner.fails(422, "", "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app",
			"username": pg.SCRAMUser.User, "password": "wrong-password-xyz"})
		if !strings.Contains(p.Detail, "password is wrong") {
			t.Errorf("wrong password: %s", p.raw)
		}
		if e.validator.calls.Load() != calls+1 {
			t.Errorf("the validator was not asked")
		}
		if n := count(t, e.db, `SELECT COUNT(*) FROM accounts`); n != 0 {
			t.Fatalf("a refused account was saved: %d rows", n)
		}
		if contains(e.auditActions(), "account.create") {
			t.Errorf("a refused account was audited as created")
		}

		// The right password is accepted (SCRAM over verified TLS).
		var app map[string]any
		owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password, "description": "the application",
			"metadata": map[string]string{"env": "prod", "team": "web"}, "requireMfa": true}, &app)
		if app["resourceId"] != resID || app["resourceName"] != "orders-db" || app["username"] != pg.SCRAMUser.User ||
			app["requireMfa"] != true || app["description"] != "the application" || app["password"] != nil {
			t.Errorf("new account: %v", app)
		}
		if md := app["metadata"].(map[string]any); md["env"] != "prod" || md["team"] != "web" {
			t.Errorf("metadata: %v", md)
		}
		appID := app["id"].(string)
		// An MD5 account on the same resource, by resource id.
		var rep map[string]any
		owner.must(201, "POST", base+"/accounts", map[string]any{"resource": resID, "name": "reporting",
			"username": pg.MD5User.User, "password": pg.MD5User.Password, "metadata": map[string]string{"env": "prod", "team": "data"}}, &rep)
		if rep["requireMfa"] != false || rep["description"] != "" {
			t.Errorf("defaults: %v", rep)
		}

		// Names: slugs, unique per resource; the same name on another resource is fine.
		owner.fails(409, "body.name", "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password})
		owner.fails(422, "body.name", "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "App",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password})
		owner.fails(422, "body.resource", "POST", base+"/accounts", map[string]any{"resource": "nope", "name": "x",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password})
		owner.fails(422, "body.metadata", "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "x",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password, "metadata": map[string]string{"bad key": "v"}})
		tooMany := map[string]string{}
		for i := 0; i < 33; i++ {
			tooMany["k"+strings.Repeat("x", i)] = "v"
		}
		owner.fails(422, "body.metadata", "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "x",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password, "metadata": tooMany})
		owner.fails(422, "body.metadata", "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "x",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password, "metadata": map[string]string{"k": strings.Repeat("v", 257)}})
		owner.fails(422, "body.password", "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "x",
			"username": pg.SCRAMUser.User, "password": ""})

		// TLS failure: the database's certificate is not trusted without the CA.
		noCA := e.pgResource("no-ca")
		delete(noCA, "sslCaPem")
		owner.must(201, "POST", base+"/resources", noCA, nil)
		p = owner.fails(422, "", "POST", base+"/accounts", map[string]any{"resource": "no-ca", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password})
		if !strings.Contains(p.Detail, "TLS certificate") {
			t.Errorf("TLS failure: %s", p.raw)
		}
		// A missing database and an offline gateway.
		missing := e.pgResource("missing-db")
		missing["database"] = "no_such_database"
		owner.must(201, "POST", base+"/resources", missing, nil)
		p = owner.fails(422, "", "POST", base+"/accounts", map[string]any{"resource": "missing-db", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password})
		if !strings.Contains(p.Detail, "does not exist") {
			t.Errorf("missing database: %s", p.raw)
		}
		offline := e.pgResource("offline")
		offline["gateway"] = "gw-offline"
		owner.must(201, "POST", base+"/resources", offline, nil)
		p = owner.fails(503, "", "POST", base+"/accounts", map[string]any{"resource": "offline", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password})
		if !strings.Contains(p.Detail, "offline") {
			t.Errorf("offline gateway: %s", p.raw)
		}
		if n := count(t, e.db, `SELECT COUNT(*) FROM accounts`); n != 2 {
			t.Fatalf("refused accounts were saved: %d rows", n)
		}
		// An account named app on a second resource (a real one, so it validates).
		owner.must(201, "POST", base+"/resources", e.pgResource("orders-replica"), nil)
		owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-replica", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password, "metadata": map[string]string{"env": "staging", "team": "web"}}, nil)

		// Metadata filters are AND-combined.
		list := func(query string) []string {
			t.Helper()
			var accts []map[string]any
			owner.must(200, "GET", base+"/accounts"+query, nil, &accts)
			var out []string
			for _, a := range accts {
				out = append(out, a["resourceName"].(string)+"/"+a["name"].(string))
			}
			sort.Strings(out)
			return out
		}
		q := func(filters ...string) string {
			v := url.Values{}
			for _, f := range filters {
				v.Add("metadata", f)
			}
			return "?" + v.Encode()
		}
		for _, tc := range []struct {
			query string
			want  string
		}{
			{"", "orders-db/app,orders-db/reporting,orders-replica/app"},
			{q("env=prod"), "orders-db/app,orders-db/reporting"},
			{q("team=web"), "orders-db/app,orders-replica/app"},
			{q("env=prod", "team=web"), "orders-db/app"},
			{q("env=prod", "team=data"), "orders-db/reporting"},
			{q("env=staging", "team=data"), ""},
			{q("env=dev"), ""},
			{q("owner=x"), ""},
			{"?resource=orders-replica", "orders-replica/app"},
			{"?resource=orders-db&" + q("team=web")[1:], "orders-db/app"},
		} {
			if got := strings.Join(list(tc.query), ","); got != tc.want {
				t.Errorf("list%s: %q, want %q", tc.query, got, tc.want)
			}
		}
		for _, bad := range []string{q("env"), q("bad key=v"), q("=v"), q("k=" + strings.Repeat("v", 257))} {
			owner.fails(422, "query.metadata", "GET", base+"/accounts"+bad, nil)
		}
		owner.fails(404, "", "GET", base+"/accounts?resource=nope", nil)
		owner.fails(422, "", "GET", base+"/accounts?unknown=1", nil)

		// Get by id, or by name (with the resource when the name is ambiguous).
		var got map[string]any
		owner.must(200, "GET", base+"/accounts/"+appID, nil, &got)
		if got["name"] != "app" || got["resourceName"] != "orders-db" {
			t.Errorf("get by id: %v", got)
		}
		owner.must(200, "GET", base+"/accounts/reporting", nil, &got)
		if got["username"] != pg.MD5User.User {
			t.Errorf("get by name: %v", got)
		}
		owner.fails(422, "query.resource", "GET", base+"/accounts/app", nil)
		owner.must(200, "GET", base+"/accounts/app?resource=orders-replica", nil, &got)
		if got["resourceName"] != "orders-replica" {
			t.Errorf("get by name on a resource: %v", got)
		}
		owner.fails(404, "", "GET", base+"/accounts/nobody", nil)

		// Update: a wrong new password, or a username the stored password
		// does not fit, is refused and changes nothing.
		acct := base + "/accounts/app?resource=orders-db"
		owner.fails(422, "", "PATCH", acct, map[string]any{"password": "wrong-password-xyz", "description": "changed"})
		owner.fails(422, "", "PATCH", acct, map[string]any{"username": pg.MD5User.User})
		_, _, tgt, err := e.pam.TargetFor(owner.ctx(), pid, "orders-db", "app")
		if err != nil || tgt.Username != pg.SCRAMUser.User || tgt.Password != pg.SCRAMUser.Password {
			t.Fatalf("a refused update changed the credentials: %s %v", tgt, err)
		}
		owner.must(200, "GET", acct, nil, &got)
		if got["description"] != "the application" || got["username"] != pg.SCRAMUser.User {
			t.Errorf("a refused update changed the account: %v", got)
		}
		// Username and password together, checked and saved.
		owner.must(200, "PATCH", acct, map[string]any{"username": pg.MD5User.User, "password": pg.MD5User.Password}, &got)
		_, _, tgt, err = e.pam.TargetFor(owner.ctx(), pid, "orders-db", appID)
		if err != nil || tgt.Username != pg.MD5User.User || tgt.Password != pg.MD5User.Password {
			t.Errorf("new credentials: %s %v", tgt, err)
		}
		owner.must(200, "PATCH", acct, map[string]any{"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password}, nil)
		// Metadata is replaced as a whole; description and MFA change alone.
		owner.must(200, "PATCH", acct, map[string]any{"metadata": map[string]string{"env": "dev"}, "requireMfa": false, "description": "d2"}, &got)
		if md := got["metadata"].(map[string]any); len(md) != 1 || md["env"] != "dev" || got["requireMfa"] != false || got["description"] != "d2" {
			t.Errorf("update: %v", got)
		}
		if l := list(q("team=web")); strings.Join(l, ",") != "orders-replica/app" {
			t.Errorf("old metadata still matches: %v", l)
		}
		owner.must(200, "PATCH", acct, map[string]any{"metadata": map[string]string{}}, &got)
		if md := got["metadata"].(map[string]any); len(md) != 0 {
			t.Errorf("clearing metadata: %v", got)
		}
		calls = e.validator.calls.Load()
		owner.must(200, "PATCH", acct, map[string]any{"description": "no login needed"}, nil)
		if e.validator.calls.Load() != calls {
			t.Errorf("a description change asked the gateway to log in")
		}

		// TargetFor hands the gateway everything it needs.
		r, a, tgt, err := e.pam.TargetFor(owner.ctx(), pid, resID, "app")
		if err != nil {
			t.Fatal(err)
		}
		if r.Name != "orders-db" || a.ID != appID || tgt.Kind != "postgres" || tgt.Host != pg.Host || tgt.Port != pg.Port ||
			tgt.Database != e.target.Name || !tgt.TLS.Enabled || !tgt.TLS.RejectUnauthorized || tgt.TLS.CAPEM != string(pg.CA.CertPEM) ||
			tgt.ResourceID != resID || tgt.AccountID != appID || r.GatewayID != gw1ID {
			t.Errorf("TargetFor: %+v %+v %s", r, a, tgt)
		}
		if _, _, _, err := e.pam.TargetFor(owner.ctx(), pid, "orders-db", "nobody"); err == nil {
			t.Errorf("TargetFor found a missing account")
		}

		// Delete.
		owner.must(204, "DELETE", base+"/accounts/reporting", nil, nil)
		owner.fails(404, "", "GET", base+"/accounts/reporting", nil)
		acts := e.auditActions()
		for _, a := range []string{"account.create", "account.update", "account.delete"} {
			if !contains(acts, a) {
				t.Errorf("audit log lacks %s: %v", a, acts)
			}
		}
		e.noneContain(pg.SCRAMUser.Password, pg.MD5User.Password, "wrong-password-xyz")
	})
}
