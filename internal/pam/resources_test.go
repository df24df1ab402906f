package pam_test

import (
	"strings"
	"testing"
)

func TestResources(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		owner := e.createUser("owner@example.com")
		pid := owner.project("payments")
		base := "/api/v1/projects/" + pid + "/resources"

		// Create: TLS is on and verified unless said otherwise.
		var r map[string]any
		owner.must(201, "POST", base, e.pgResource("orders-db"), &r)
		id := r["id"].(string)
		if r["sslEnabled"] != true || r["sslRejectUnauthorized"] != true || r["gatewayId"] != gw1ID || r["gatewayName"] != "gw-1" ||
			r["hasRotationCredentials"] != false || r["kind"] != "postgres" || r["database"] != e.target.Name {
			t.Errorf("new resource: %v", r)
		}
		var def map[string]any
		owner.must(201, "POST", base, map[string]any{"kind": "postgres", "name": "defaults", "gateway": gw2ID,
			"host": "db.internal.example.com", "database": "postgres"}, &def)
		if def["port"] != float64(5432) || def["sslEnabled"] != true || def["sslRejectUnauthorized"] != true || def["gatewayName"] != "gw-2" {
			t.Errorf("defaults: %v", def)
		}
		owner.must(201, "POST", base, map[string]any{"kind": "postgres", "name": "plain", "gateway": "gw-1",
			"host": "10.0.0.7", "database": "postgres", "sslEnabled": false, "sslRejectUnauthorized": false}, &def)
		if def["sslEnabled"] != false || def["sslRejectUnauthorized"] != false {
			t.Errorf("explicit false: %v", def)
		}

		// Names are slugs, unique in the project, and never look like ids.
		for _, name := range []string{"Orders", "-orders", "orders_db", "", strings.Repeat("a", 64), "0197a000-0000-7000-8000-00000000beef"} {
			body := e.pgResource(name)
			owner.fails(422, "body.name", "POST", base, body)
		}
		owner.fails(409, "body.name", "POST", base, e.pgResource("orders-db"))

		// Bad settings are refused by field.
		bad := []struct {
			field  string
			change map[string]any
		}{
			{"body.sslCaPem", map[string]any{"sslCaPem": "not a certificate"}},
			{"body.sslCaPem", map[string]any{"sslCaPem": "-----BEGIN PRIVATE KEY-----\nMIIBVQ==\n-----END PRIVATE KEY-----\n"}},
			{"body.sslCaPem", map[string]any{"sslCaPem": "-----BEGIN CERTIFICATE-----\nMIIBVQ==\n-----END CERTIFICATE-----\n"}},
			{"body.port", map[string]any{"port": 70000}},
			{"body.port", map[string]any{"port": -1}},
			{"body.host", map[string]any{"host": ""}},
			{"body.host", map[string]any{"host": "db.example.com:5432"}},
			{"body.database", map[string]any{"database": ""}},
			{"body.gateway", map[string]any{"gateway": "no-such-gateway"}},
			{"body.gateway", map[string]any{"gateway": ""}},
			{"body.connectionString", map[string]any{"connectionString": "mongodb://db.example.com"}},
			{"body.rotationPassword", map[string]any{"rotationUsername": "rotator"}},
		}
		for _, tc := range bad {
			body := e.pgResource("bad-one")
			for k, v := range tc.change {
				body[k] = v
			}
			owner.fails(422, tc.field, "POST", base, body)
		}
		owner.fails(422, "body.kind", "POST", base, map[string]any{"kind": "mysql", "name": "x", "gateway": "gw-1"})

		// MongoDB: the connection string holds neither credentials nor a database.
		mongo := func(uri string) map[string]any {
			return map[string]any{"kind": "mongodb", "name": "sales-mongo", "gateway": "gw-1", "connectionString": uri}
		}
		p := owner.fails(422, "body.connectionString", "POST", base, mongo("mongodb://alice:s3cr3t-pw@db1.example.com:27017,db2.example.com:27017/?replicaSet=rs0"))
		if !strings.Contains(p.Detail, "account") || strings.Contains(p.raw, "s3cr3t-pw") {
			t.Errorf("credentials in the URI: %s", p.raw)
		}
		p = owner.fails(422, "body.connectionString", "POST", base, mongo("mongodb://db.example.com:27017/sales"))
		if !strings.Contains(p.Detail, "`database` field") {
			t.Errorf("database in the URI: %s", p.raw)
		}
		for _, uri := range []string{"http://db.example.com", "mongodb://", "mongodb+srv://a.example.com:27017", "mongodb://db/?authSource=admin",
			"mongodb://db/?tls=true", "mongodb://db/?tlsInsecure=true"} {
			owner.fails(422, "body.connectionString", "POST", base, mongo(uri))
		}
		host := mongo("mongodb://db.example.com")
		host["host"] = "db.example.com"
		owner.fails(422, "body.host", "POST", base, host)
		var m map[string]any
		owner.must(201, "POST", base, mongo("mongodb+srv://cluster0.example.net/?retryWrites=true&w=majority"), &m)
		if m["database"] != "admin" || m["sslEnabled"] != true || m["sslRejectUnauthorized"] != true || m["kind"] != "mongodb" {
			t.Errorf("mongodb resource: %v", m)
		}
		owner.must(201, "POST", base, map[string]any{"kind": "mongodb", "name": "rs-mongo", "gateway": "gw-1",
			"connectionString": "mongodb://db1.example.com:27017,db2.example.com:27017/?replicaSet=rs0", "database": "users"}, &m)
		if m["database"] != "users" {
			t.Errorf("auth database: %v", m)
		}

		// Read by name or id; listings are sorted by name.
		var got map[string]any
		owner.must(200, "GET", base+"/orders-db", nil, &got)
		if got["id"] != id || got["sslCaPem"] == "" {
			t.Errorf("get by name: %v", got)
		}
		owner.must(200, "GET", base+"/"+id, nil, &got)
		if got["name"] != "orders-db" {
			t.Errorf("get by id: %v", got)
		}
		owner.fails(404, "", "GET", base+"/missing", nil)
		var list []map[string]any
		owner.must(200, "GET", base, nil, &list)
		var names []string
		for _, x := range list {
			names = append(names, x["name"].(string))
		}
		if strings.Join(names, ",") != "defaults,orders-db,plain,rs-mongo,sales-mongo" {
			t.Errorf("list: %v", names)
		}

		// Update.
		owner.must(200, "PATCH", base+"/orders-db", map[string]any{"sslRejectUnauthorized": false, "gateway": "gw-2"}, &got)
		if got["sslRejectUnauthorized"] != false || got["sslEnabled"] != true || got["gatewayId"] != gw2ID || got["gatewayName"] != "gw-2" {
			t.Errorf("update: %v", got)
		}
		owner.must(200, "PATCH", base+"/defaults", map[string]any{"port": 6432, "host": "db2.internal.example.com", "database": "app"}, &got)
		if got["port"] != float64(6432) || got["host"] != "db2.internal.example.com" || got["database"] != "app" {
			t.Errorf("update: %v", got)
		}
		owner.fails(422, "body.sslCaPem", "PATCH", base+"/orders-db", map[string]any{"sslCaPem": "garbage"})
		owner.fails(422, "body.port", "PATCH", base+"/orders-db", map[string]any{"port": 0})
		owner.fails(422, "body.host", "PATCH", base+"/sales-mongo", map[string]any{"host": "x.example.com"})
		owner.fails(422, "body.connectionString", "PATCH", base+"/sales-mongo", map[string]any{"connectionString": "mongodb://u:p@h/"})
		owner.fails(422, "body.gateway", "PATCH", base+"/orders-db", map[string]any{"gateway": "nope"})
		// A rename: a taken name is a Conflict that changes nothing; a bad
		// one is refused; a free one works and the old name is gone.
		if p := owner.fails(409, "body.name", "PATCH", base+"/orders-db", map[string]any{"name": "defaults", "port": 7000}); !strings.Contains(p.raw, "another resource of this project is named defaults") {
			t.Errorf("renaming onto a taken name: %s", p.raw)
		}
		owner.fails(422, "body.name", "PATCH", base+"/orders-db", map[string]any{"name": "Not A Slug"})
		owner.must(200, "PATCH", base+"/orders-db", map[string]any{"name": "orders-db-renamed"}, &got)
		if got["name"] != "orders-db-renamed" {
			t.Errorf("rename: %v", got)
		}
		owner.fails(404, "", "GET", base+"/orders-db", nil)
		owner.must(200, "PATCH", base+"/orders-db-renamed", map[string]any{"name": "orders-db"}, &got)
		owner.must(200, "GET", base+"/orders-db", nil, &got)
		if got["sslCaPem"] == "" || got["gatewayId"] != gw2ID {
			t.Errorf("a refused update changed the resource: %v", got)
		}

		// Rotation credentials: both or neither; only their presence shows.
		owner.fails(422, "body.rotationPassword", "PATCH", base+"/orders-db", map[string]any{"rotationUsername": "rotator"})
		owner.must(200, "PATCH", base+"/orders-db", map[string]any{"rotationUsername": "rotator", "rotationPassword": "rotation-Pa55-zebra-91"}, &got)
		if got["hasRotationCredentials"] != true || got["rotationUsername"] != "rotator" {
			t.Errorf("rotation credentials: %v", got)
		}
		// A username alone is checked with the stored password: rotator2
		// does not log in with it, so nothing changes.
		owner.fails(422, "", "PATCH", base+"/orders-db", map[string]any{"rotationUsername": "rotator2"})
		owner.must(200, "GET", base+"/orders-db", nil, &got)
		if got["hasRotationCredentials"] != true || got["rotationUsername"] != "rotator" {
			t.Errorf("a refused rotation username alone changed: %v", got)
		}
		owner.must(200, "PATCH", base+"/orders-db", map[string]any{"rotationUsername": ""}, &got)
		if got["hasRotationCredentials"] != false || got["rotationUsername"] != nil {
			t.Errorf("removing rotation credentials: %v", got)
		}
		var withRot map[string]any
		// The rotation account logs in before it is saved: a wrong password
		// saves nothing.
		rotating := e.pgResource("rotating")
		rotating["rotationUsername"], rotating["rotationPassword"] = rotatorUser, "not-the-rotation-password"
		owner.fails(422, "", "POST", base, rotating)
		rotating["rotationPassword"] = rotatorPassword
		owner.must(201, "POST", base, rotating, &withRot)
		if withRot["hasRotationCredentials"] != true {
			t.Errorf("create with rotation credentials: %v", withRot)
		}

		// Delete.
		owner.must(204, "DELETE", base+"/plain", nil, nil)
		owner.fails(404, "", "GET", base+"/plain", nil)
		owner.fails(404, "", "DELETE", base+"/plain", nil)

		acts := e.auditActions()
		for _, a := range []string{"resource.create", "resource.update", "resource.delete"} {
			if !contains(acts, a) {
				t.Errorf("audit log lacks %s: %v", a, acts)
			}
		}
		for _, row := range e.auditRows() {
			if strings.Contains(row, "rotation-Pa55-zebra-91") || strings.Contains(row, "s3cr3t-pw") {
				t.Errorf("a password in the audit log: %s", row)
			}
		}
		e.noneContain("rotation-Pa55-zebra-91", "s3cr3t-pw")
	})
}

// TestRoles: viewers and members read, only admins write, non-members see
// nothing, and only members and admins get an account's credentials.
func TestRoles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		owner := e.createUser("owner@example.com")
		viewer := e.createUser("viewer@example.com")
		member := e.createUser("member@example.com")
		outsider := e.createUser("outsider@example.com")
		pid := owner.project("payments")
		owner.addMember(pid, "viewer@example.com", "viewer")
		owner.addMember(pid, "member@example.com", "member")
		base := "/api/v1/projects/" + pid
		owner.must(201, "POST", base+"/resources", e.pgResource("orders-db"), nil)
		pg := e.target.Cluster
		owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password, "metadata": map[string]string{"env": "prod"}}, nil)

		reads := []string{base + "/resources", base + "/resources/orders-db", base + "/accounts", base + "/accounts/app",
			base + "/accounts?metadata=env=prod"}
		writes := []struct {
			method, path string
			body         any
		}{
			{"POST", base + "/resources", e.pgResource("other-db")},
			{"PATCH", base + "/resources/orders-db", map[string]any{"port": 6432}},
			{"DELETE", base + "/resources/orders-db", nil},
			{"POST", base + "/accounts", map[string]any{"resource": "orders-db", "name": "app2", "username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password}},
			{"PATCH", base + "/accounts/app", map[string]any{"description": "x"}},
			{"DELETE", base + "/accounts/app", nil},
		}
		for _, c := range []*client{viewer, member} {
			for _, path := range reads {
				c.must(200, "GET", path, nil, nil)
			}
			for _, w := range writes {
				c.fails(403, "", w.method, w.path, w.body)
			}
		}
		for _, path := range reads {
			outsider.fails(404, "", "GET", path, nil)
		}
		for _, w := range writes {
			outsider.fails(404, "", w.method, w.path, w.body)
		}
		// Nothing changed.
		var r map[string]any
		owner.must(200, "GET", base+"/resources/orders-db", nil, &r)
		if r["port"] != float64(pg.Port) {
			t.Errorf("a refused write changed the resource: %v", r)
		}
		var accts []map[string]any
		owner.must(200, "GET", base+"/accounts", nil, &accts)
		if len(accts) != 1 || accts[0]["description"] != "" {
			t.Errorf("a refused write changed the accounts: %v", accts)
		}

		// TargetFor needs the member role: members get the credentials, viewers do not.
		_, _, tgt, err := e.pam.TargetFor(member.ctx(), pid, "orders-db", "app")
		if err != nil || tgt.Password != pg.SCRAMUser.Password || tgt.Username != pg.SCRAMUser.User {
			t.Errorf("member TargetFor: %v %v", tgt, err)
		}
		if _, _, _, err := e.pam.TargetFor(viewer.ctx(), pid, "orders-db", "app"); err == nil || !strings.Contains(err.Error(), "member role") {
			t.Errorf("viewer TargetFor: %v", err)
		}
		if _, _, _, err := e.pam.TargetFor(outsider.ctx(), pid, "orders-db", "app"); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("outsider TargetFor: %v", err)
		}
	})
}
