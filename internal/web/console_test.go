package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/project"
)

// TestConsoleRequestsAreChecked: Web Access needs the CSRF token and at
// least the member role; a console that does not exist (or belongs to
// another browser) answers 404, in JSON for the page's script. The console
// itself runs through a real gateway: internal/e2e TestWebConsole.
func TestConsoleRequestsAreChecked(t *testing.T) {
	e := start(t, false)
	ctx := api.WithPrincipal(context.Background(), adminPrincipal(t, e))
	p, err := e.srv.Projects.Create(ctx, "payments", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Auth.CreateUser(ctx, "viewer@example.com", "viewer password 1", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Projects.SetMember(ctx, p.ID, "viewer@example.com", "", project.RoleViewer); err != nil {
		t.Fatal(err)
	}
	open := "/projects/" + p.ID + "/resources/db/accounts/app/console"

	admin := e.browser()
	admin.login(adminEmail, adminPassword)
	if resp, _ := admin.do("POST", open, url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("Web Access without the CSRF token: %d", resp.StatusCode)
	}
	token := admin.csrf("/projects")
	if resp, _ := admin.do("POST", open, url.Values{"csrf": {token}}, map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("Web Access from another origin: %d", resp.StatusCode)
	}
	if resp, body := admin.do("POST", open, url.Values{"csrf": {token}}, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("Web Access on an account that does not exist: %d %.300s", resp.StatusCode, body)
	}

	v := e.browser()
	v.login("viewer@example.com", "viewer password 1")
	vt := v.csrf("/projects")
	if resp, body := v.do("POST", open, url.Values{"csrf": {vt}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a viewer's Web Access: %d %.300s", resp.StatusCode, body)
	}

	// A console id that is not one of this browser's.
	if resp, _ := admin.get("/console/nope"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the page of an unknown console: %d", resp.StatusCode)
	}
	for _, path := range []string{"/console/nope/run", "/console/nope/cancel", "/console/nope/end"} {
		resp, body := admin.do("POST", path, url.Values{"csrf": {token}}, nil)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(body, `"ended":true`) {
			t.Fatalf("POST %s: %d %s %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	for _, path := range []string{"/console/nope/schema", "/console/nope/events"} {
		if resp, _ := admin.get(path); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
	}
	// Signed out, the script's requests go to the login page.
	if resp, _ := e.browser().do("POST", "/console/nope/run", url.Values{}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a console request without a session: %d", resp.StatusCode)
	}
}
