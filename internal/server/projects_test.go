package server_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestProjectRoles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		admin := e.admin()
		owner := e.createUser("owner@example.com")
		viewer := e.createUser("viewer@example.com")
		memberC := e.createUser("member@example.com")
		outsider := e.createUser("outsider@example.com")

		var p map[string]any
		if st := owner.call("POST", "/api/v1/projects", map[string]any{"name": "payments", "description": "prod payments"}, &p); st != 201 {
			t.Fatalf("create project: %d %s", st, owner.problem().raw)
		}
		pid := p["id"].(string)
		if p["role"] != "admin" || p["maxSessionDuration"] != "8h0m0s" {
			t.Fatalf("new project: %v", p)
		}
		for email, role := range map[string]string{"viewer@example.com": "viewer", "member@example.com": "member"} {
			if st := owner.call("PUT", "/api/v1/projects/"+pid+"/members", map[string]any{"email": email, "role": role}, nil); st != 200 {
				t.Fatalf("add %s: %d %s", email, st, owner.problem().raw)
			}
		}

		// Everyone in the project sees it; the outsider learns nothing: the
		// answer is the same as for a project that does not exist.
		for _, c := range []*client{owner, viewer, memberC, admin} {
			if st := c.call("GET", "/api/v1/projects/"+pid, nil, nil); st != 200 {
				t.Errorf("member cannot see the project: %d", st)
			}
		}
		st := outsider.call("GET", "/api/v1/projects/"+pid, nil, nil)
		outsiderMsg := outsider.problem().Detail
		if st != 404 {
			t.Fatalf("outsider: %d", st)
		}
		missing := "01a20a15-0000-7000-8000-000000000000"
		outsider.call("GET", "/api/v1/projects/"+missing, nil, nil)
		if strings.ReplaceAll(outsiderMsg, pid, "X") != strings.ReplaceAll(outsider.problem().Detail, missing, "X") {
			t.Errorf("outsider can tell a hidden project from a missing one: %q vs %q", outsiderMsg, outsider.problem().Detail)
		}
		var list []map[string]any
		outsider.call("GET", "/api/v1/projects", nil, &list)
		if len(list) != 0 {
			t.Fatalf("outsider lists %v", list)
		}
		for _, path := range []string{"/members", "/secrets"} {
			if st := outsider.call("GET", "/api/v1/projects/"+pid+path, nil, nil); st != 404 {
				t.Errorf("outsider GET %s: %d", path, st)
			}
		}
		if acts := outsider.call("GET", "/api/v1/audit-logs?projectId="+pid, nil, nil); acts != 404 {
			t.Errorf("outsider reads the project's audit log: %d", acts)
		}

		// A viewer changes nothing.
		for _, req := range []struct{ method, path, body string }{
			{"PATCH", "", `{"description":"x"}`},
			{"DELETE", "", ""},
			{"PUT", "/members", `{"email":"outsider@example.com","role":"admin"}`},
			{"PUT", "/secrets/DB_PASSWORD", `{"value":"x"}`},
		} {
			var body any
			if req.body != "" {
				body = req.body
			}
			if st := viewer.call(req.method, "/api/v1/projects/"+pid+req.path, body, nil); st != 403 {
				t.Errorf("viewer %s %s: %d, want 403", req.method, req.path, st)
			}
		}
		// A member uses (secrets) but does not administer.
		if st := memberC.call("PUT", "/api/v1/projects/"+pid+"/secrets/API_KEY", map[string]any{"value": "v1"}, nil); st != 200 {
			t.Errorf("member cannot write a secret: %d %s", st, memberC.problem().raw)
		}
		if st := memberC.call("PATCH", "/api/v1/projects/"+pid, map[string]any{"description": "x"}, nil); st != 403 {
			t.Errorf("member changed settings: %d", st)
		}
		// A viewer lists secret names but cannot read values.
		var secrets []map[string]any
		if st := viewer.call("GET", "/api/v1/projects/"+pid+"/secrets", nil, &secrets); st != 200 || len(secrets) != 1 || secrets[0]["value"] != nil {
			t.Errorf("viewer list: %d %v", st, secrets)
		}
		if st := viewer.call("GET", "/api/v1/projects/"+pid+"/secrets/API_KEY", nil, nil); st != 403 {
			t.Errorf("viewer read a secret value: %d", st)
		}

		// The project admin changes settings; bad durations are refused by field.
		if st := owner.call("PATCH", "/api/v1/projects/"+pid, map[string]any{"maxSessionDuration": "forever"}, nil); st != 422 ||
			owner.problem().Errors[0].Location != "body.maxSessionDuration" {
			t.Errorf("bad duration: %d %s", st, owner.problem().raw)
		}
		if st := owner.call("PATCH", "/api/v1/projects/"+pid, map[string]any{"maxSessionDuration": "2h"}, &p); st != 200 || p["maxSessionDuration"] != "2h0m0s" {
			t.Errorf("update: %d %v", st, p)
		}
		// Session-log mask patterns must be valid regular expressions.
		if st := owner.call("PATCH", "/api/v1/projects/"+pid, map[string]any{"logMaskPatterns": []string{`card=\d+`, `(`}}, nil); st != 422 ||
			owner.problem().Errors[0].Location != "body.logMaskPatterns[1]" {
			t.Errorf("bad pattern: %d %s", st, owner.problem().raw)
		}
		if st := owner.call("PATCH", "/api/v1/projects/"+pid, map[string]any{"logMaskPatterns": []string{`card=\d+`}}, &p); st != 200 ||
			fmt.Sprint(p["logMaskPatterns"]) != `[card=\d+]` {
			t.Errorf("patterns: %d %v", st, p["logMaskPatterns"])
		}
		// The last admin cannot leave.
		var me map[string]any
		owner.call("GET", "/api/v1/auth/me", nil, &me)
		if st := owner.call("DELETE", "/api/v1/projects/"+pid+"/members/user/"+me["id"].(string), nil, nil); st != 409 {
			t.Errorf("removing the last admin: %d", st)
		}
		// A duplicate name is a conflict on the name field.
		if st := owner.call("POST", "/api/v1/projects", map[string]any{"name": "payments"}, nil); st != 409 {
			t.Errorf("duplicate project: %d", st)
		}
		if acts := owner.auditActions("projectId=" + pid); !contains(acts, "project.create:success") || !contains(acts, "project.member.set:success") ||
			!contains(acts, "project.update:success") || !contains(acts, "secret.set:success") {
			t.Errorf("project audit: %v", acts)
		}
		if st := owner.call("DELETE", "/api/v1/projects/"+pid, nil, nil); st != 204 {
			t.Fatalf("delete: %d", st)
		}
		if st := memberC.call("GET", "/api/v1/projects/"+pid, nil, nil); st != 404 {
			t.Fatalf("deleted project still visible: %d", st)
		}
	})
}

func TestBadInputChangesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		admin := e.admin()
		cases := []struct {
			name, body string
			status     int
			location   string
		}{
			{"malformed", `{"name": "x"`, 400, "body"},
			// The problem names the body, not the caller's key: no answer echoes input.
			{"unknown field", `{"name":"x","owner":"me"}`, 422, "body"},
			{"wrong type", `{"name": 42}`, 422, "body.name"},
			{"missing field", `{}`, 422, "body"},
			{"too long", `{"name":"` + strings.Repeat("n", 65) + `"}`, 422, "body.name"},
			{"oversized body", `{"name":"x","description":"` + strings.Repeat("d", 2<<20) + `"}`, 413, ""},
		}
		for _, tc := range cases {
			st := admin.call("POST", "/api/v1/projects", tc.body, nil)
			if st != tc.status {
				t.Errorf("%s: status %d, want %d (%s)", tc.name, st, tc.status, admin.problem().raw)
				continue
			}
			p := admin.problem()
			if p.Detail == "" {
				t.Errorf("%s: no message", tc.name)
			}
			if tc.location != "" {
				found := false
				for _, d := range p.Errors {
					found = found || d.Location == tc.location
				}
				if !found {
					t.Errorf("%s: no error at %s: %s", tc.name, tc.location, p.raw)
				}
			}
		}
		var list []map[string]any
		admin.call("GET", "/api/v1/projects", nil, &list)
		if len(list) != 0 {
			t.Fatalf("bad input created projects: %v", list)
		}
		// Wrong content type and unknown query parameters are refused too.
		if st, _ := admin.raw("POST", "/api/v1/projects", strings.NewReader(`name=x`), "application/x-www-form-urlencoded"); st != 415 {
			t.Errorf("form body: %d", st)
		}
		if st := admin.call("GET", "/api/v1/projects?sort=name", nil, nil); st != 422 {
			t.Errorf("unknown query parameter: %d", st)
		}
		// A rejected value is never echoed back: it might be a password.
		anon := e.anon()
		anon.call("POST", "/api/v1/auth/login", `{"email":"a@example.com","password":"s3cret-hunter2","x":1}`, nil)
		if strings.Contains(anon.problem().raw, "s3cret-hunter2") {
			t.Errorf("problem echoes the password: %s", anon.problem().raw)
		}
	})
}

func TestAuditFilters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		admin := e.admin()
		bob := e.createUser("bob@example.com")
		var p1, p2 map[string]any
		bob.call("POST", "/api/v1/projects", map[string]any{"name": "one"}, &p1)
		mid := time.Now() // audit events carry the wall-clock time
		admin.call("POST", "/api/v1/projects", map[string]any{"name": "two"}, &p2)
		e.anon().call("POST", "/api/v1/auth/login", map[string]any{"email": "bob@example.com", "password": "not bob's password"}, nil)

		type ev struct {
			Action     string `json:"action"`
			ActorName  string `json:"actorName"`
			ClientAddr string `json:"clientAddr"`
			ProjectID  string `json:"projectId"`
			Outcome    string `json:"outcome"`
		}
		get := func(q string) []ev {
			var evs []ev
			if st := admin.call("GET", "/api/v1/audit-logs?"+q, nil, &evs); st != 200 {
				t.Fatalf("%s: %d %s", q, st, admin.problem().raw)
			}
			return evs
		}
		if evs := get("actor=bob@example.com&action=project.create"); len(evs) != 1 || evs[0].ProjectID != p1["id"] || evs[0].ClientAddr != "127.0.0.1" {
			t.Errorf("by actor and action: %+v", evs)
		}
		if evs := get("projectId=" + p2["id"].(string)); len(evs) != 1 || evs[0].ActorName != adminEmail {
			t.Errorf("by project: %+v", evs)
		}
		from := url.QueryEscape(mid.UTC().Format(time.RFC3339Nano))
		for _, x := range get("action=project.create&from=" + from) {
			if x.ProjectID != p2["id"] {
				t.Errorf("from filter let through %+v", x)
			}
		}
		if evs := get("action=project.create&to=" + from); len(evs) != 1 || evs[0].ProjectID != p1["id"] {
			t.Errorf("to filter: %+v", evs)
		}
		if evs := get("action=auth.login&actor=bob@example.com"); len(evs) < 2 || evs[0].Outcome != "failure" {
			t.Errorf("failed login not first: %+v", evs)
		}
		// Only org admins read the whole log; a project admin reads its project's.
		if st := bob.call("GET", "/api/v1/audit-logs", nil, nil); st != 403 {
			t.Errorf("non-admin read the whole log: %d", st)
		}
		if st := bob.call("GET", "/api/v1/audit-logs?projectId="+p1["id"].(string), nil, nil); st != 200 {
			t.Errorf("project admin cannot read its project's log: %d", st)
		}
		if st := admin.call("GET", "/api/v1/audit-logs?from=yesterday", nil, nil); st != 422 {
			t.Errorf("bad time: %d", st)
		}
	})
}
