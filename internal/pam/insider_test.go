package pam_test

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

// rogueServer is a database server of the attacker's: it counts the
// connections it gets and closes them.
func rogueServer(t *testing.T) (port int, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, conns
}

// TestRogueEndpointCapture is the attack of a project admin who points a
// resource with accounts at a server of their own and then touches an
// account, so that the gateway logs in there with the stored password. The
// endpoint change is refused unless the accounts' credentials are re-entered
// (and validate against the new endpoint) or an organization admin makes it.
func TestRogueEndpointCapture(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		pg := e.target.Cluster
		owner := e.createUser("owner@example.com")
		pid := owner.project("payments")
		base := "/api/v1/projects/" + pid
		res := base + "/resources/orders-db"
		owner.must(201, "POST", base+"/resources", e.pgResource("orders-db"), nil)
		owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password}, nil)
		rogue, conns := rogueServer(t)
		before := count(t, e.db, `SELECT updated_at FROM resources`)

		// The attack: PATCH the port (and, alone, each other endpoint
		// setting), then touch the account.
		for _, change := range []map[string]any{
			{"port": rogue},
			{"host": "localhost"},
			{"database": "postgres"},
			{"gateway": "gw-2"},
			{"sslEnabled": false},
			{"sslRejectUnauthorized": false},
			{"sslCaPem": ""},
		} {
			p := owner.fails(403, "body.accounts", "PATCH", res, change)
			if !strings.Contains(p.Detail, "re-enter the passwords of accounts app") || !strings.Contains(p.Detail, "organization admin") ||
				!strings.Contains(p.Detail, "Nothing was changed") {
				t.Errorf("%v: the refusal does not name the fix: %s", change, p.raw)
			}
		}
		// Touching the account logs in where it was validated, not at the rogue server.
		owner.fails(422, "", "PATCH", base+"/accounts/app", map[string]any{"username": pg.SCRAMUser.User + "x"})
		owner.must(200, "PATCH", base+"/accounts/app", map[string]any{"username": pg.SCRAMUser.User, "description": "touched"}, nil)
		if n := conns.Load(); n != 0 {
			t.Fatalf("the rogue server got %d connections", n)
		}
		if got := count(t, e.db, `SELECT updated_at FROM resources`); got != before {
			t.Errorf("a refused update changed the resource")
		}
		var r map[string]any
		owner.must(200, "GET", res, nil, &r)
		if r["port"] != float64(pg.Port) || r["sslRejectUnauthorized"] != true || r["gatewayId"] != gw1ID {
			t.Errorf("the resource changed: %v", r)
		}

		// Re-entered credentials are validated against the new endpoint
		// first: the rogue server cannot validate them, so nothing changes.
		owner.fails(503, "", "PATCH", res, map[string]any{"port": rogue,
			"accounts": []map[string]any{{"account": "app", "password": pg.SCRAMUser.Password}}})
		if conns.Load() != 1 {
			t.Errorf("the re-entered password was not validated against the new endpoint (%d connections)", conns.Load())
		}
		owner.must(200, "GET", res, nil, &r)
		if r["port"] != float64(pg.Port) {
			t.Errorf("a failed validation changed the resource: %v", r)
		}
		// A wrong re-entered password saves nothing either.
		owner.fails(422, "", "PATCH", res, map[string]any{"host": "localhost",
			"accounts": []map[string]any{{"account": "app", "password": "wrong-password-xyz"}}})
		// An account of another resource, or none, is refused by field.
		owner.fails(422, "body.accounts[0].account", "PATCH", res, map[string]any{"host": "localhost",
			"accounts": []map[string]any{{"account": "nobody", "password": "x-password"}}})
		owner.must(200, "GET", res, nil, &r)
		if r["host"] != pg.Host {
			t.Errorf("a refused update changed the host: %v", r)
		}

		// The right password for the new endpoint: the change is saved,
		// with the account's new credentials, in one request.
		owner.must(200, "PATCH", res, map[string]any{"host": "localhost", "sslRejectUnauthorized": false,
			"accounts": []map[string]any{{"account": "app", "password": pg.SCRAMUser.Password}}}, &r)
		if r["host"] != "localhost" || r["sslRejectUnauthorized"] != false {
			t.Errorf("a validated update was not saved: %v", r)
		}

		// An organization admin may move the endpoint without the
		// passwords; the audit event says they were not validated there.
		admin := e.admin()
		admin.must(200, "PATCH", res, map[string]any{"host": pg.Host, "sslRejectUnauthorized": true}, nil)
		found := false
		for _, row := range e.auditRows() {
			if strings.HasPrefix(row, "resource.update ") && strings.Contains(row, `"credentialsNotRevalidated":["app"]`) {
				found = true
			}
		}
		if !found {
			t.Errorf("the organization admin's change does not say which credentials were not validated: %v", e.auditRows())
		}

		// Every validation login is audited with its endpoint and outcome,
		// and never with the password.
		var ok, failed int
		rogueEndpoint := fmt.Sprintf(`"endpoint":"%s:%d/%s"`, pg.Host, rogue, e.target.Name)
		for _, row := range e.auditRows() {
			if !strings.HasPrefix(row, "account.validate ") {
				continue
			}
			if strings.Contains(row, pg.SCRAMUser.Password) {
				t.Errorf("an audit row holds the password: %s", row)
			}
			if strings.Contains(row, `"error"`) {
				failed++
			} else {
				ok++
			}
			if strings.Contains(row, `"error"`) && strings.Contains(row, rogueEndpoint) {
				rogueEndpoint = ""
			}
		}
		if ok < 2 || failed < 3 || rogueEndpoint != "" {
			t.Errorf("validation logins: %d successful, %d failed audited; the rogue endpoint audited: %v", ok, failed, rogueEndpoint == "")
		}
		outcomes := count(t, e.db, `SELECT COUNT(*) FROM audit_logs WHERE action = 'account.validate' AND outcome = 'failure'`)
		if outcomes != failed {
			t.Errorf("failed validations are not audited as failures: %d of %d", outcomes, failed)
		}
		e.noneContain(pg.SCRAMUser.Password)
	})
}

// TestAuthMethodsOrgAdminOnly: the gateway answers md5 or cleartext
// password requests of a database only for a resource where an
// organization admin allowed them; a project admin can neither allow them
// nor change them, and the setting is shown and audited.
func TestAuthMethodsOrgAdminOnly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		pg := e.target.Cluster
		owner := e.createUser("owner@example.com")
		admin := e.admin()
		pid := owner.project("payments")
		base := "/api/v1/projects/" + pid + "/resources"

		body := e.pgResource("legacy-db")
		body["allowAuth"] = []string{"md5"}
		owner.fails(403, "body.allowAuth", "POST", base, body)
		body["allowAuth"] = []string{"kerberos"}
		admin.fails(422, "body.allowAuth", "POST", base, body)
		body["allowAuth"] = []string{"password", "md5"}
		var r map[string]any
		admin.must(201, "POST", base, body, &r)
		if got := fmt.Sprint(r["allowAuth"]); got != "[md5 password]" {
			t.Errorf("allowAuth: %s", got)
		}
		owner.must(201, "POST", base, e.pgResource("modern-db"), &r)
		if got := fmt.Sprint(r["allowAuth"]); got != "[]" {
			t.Errorf("default allowAuth: %s", got)
		}
		owner.fails(403, "body.allowAuth", "PATCH", base+"/modern-db", map[string]any{"allowAuth": []string{"password"}})
		owner.fails(403, "body.allowAuth", "PATCH", base+"/legacy-db", map[string]any{"allowAuth": []string{}})
		owner.must(200, "PATCH", base+"/legacy-db", map[string]any{"allowAuth": []string{"password", "md5"}}, nil) // no change

		// The gateway is told, with every target.
		owner.must(201, "POST", "/api/v1/projects/"+pid+"/accounts", map[string]any{"resource": "legacy-db", "name": "app",
			"username": pg.MD5User.User, "password": pg.MD5User.Password}, nil)
		owner.must(201, "POST", "/api/v1/projects/"+pid+"/accounts", map[string]any{"resource": "modern-db", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password}, nil)
		_, _, tgt, err := e.pam.TargetFor(owner.ctx(), pid, "legacy-db", "app")
		if err != nil || fmt.Sprint(tgt.AuthMethods) != "[md5 password]" {
			t.Errorf("legacy target: %v %v", tgt.AuthMethods, err)
		}
		_, _, tgt, err = e.pam.TargetFor(owner.ctx(), pid, "modern-db", "app")
		if err != nil || len(tgt.AuthMethods) != 0 {
			t.Errorf("modern target: %v %v", tgt.AuthMethods, err)
		}
		// Going back to SCRAM-SHA-256 only is an organization admin's
		// change too, audited.
		admin.must(200, "PATCH", base+"/legacy-db", map[string]any{"allowAuth": []string{}}, &r)
		if got := fmt.Sprint(r["allowAuth"]); got != "[]" {
			t.Errorf("cleared allowAuth: %s", got)
		}
		found := 0
		for _, row := range e.auditRows() {
			if strings.Contains(row, `"allowAuth":["md5","password"]`) && strings.HasPrefix(row, "resource.create") {
				found++
			}
			if strings.HasPrefix(row, "resource.update") && strings.Contains(row, `"changed":["allowAuth"]`) {
				found++
			}
		}
		if found != 2 {
			t.Errorf("allowAuth not audited: %v", e.auditRows())
		}
	})
}
