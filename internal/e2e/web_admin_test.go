package e2e_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/airlockpam/airlock/internal/e2e"
)

// TestWebAdminPages: an organization admin adds a gateway in the browser
// and starts it with the command the page shows once; creates a machine
// identity whose secret, shown once, logs the CLI in, and deletes it
// (its login stops working); changes a project's settings, where a bad
// value names the problem and keeps what was typed. A user who is not an
// organization admin is refused those pages.
func TestWebAdminPages(t *testing.T) {
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	b := newWebBrowser(t, srv.URL)
	b.login(srv.AdminEmail, srv.AdminPassword)

	// A gateway: a bad name is named and kept; then its token, once.
	b.open("/gateways", "#gateway-form")
	b.do(chromedp.SetValue(chromedp.ID("gateway-name"), "Edge One"), submit(chromedp.ID("create-gateway")), chromedp.WaitVisible(chromedp.ID("error")))
	if v := b.eval(`Promise.resolve(document.getElementById("gateway-name").value)`); v != "Edge One" {
		t.Fatalf("the form kept %q", v)
	}
	b.do(chromedp.SetValue(chromedp.ID("gateway-name"), "edge-1"), submit(chromedp.ID("create-gateway")), chromedp.WaitVisible(chromedp.ID("new-gateway")))
	command := b.text("#gateway-command")
	m := regexp.MustCompile(`^AIRLOCK_GATEWAY_TOKEN=(alkg_\S+) airlock gateway --domain (\S+) --data-dir`).FindStringSubmatch(command)
	if m == nil || m[2] != srv.URL {
		t.Fatalf("the gateway command: %q", command)
	}
	saveScreenshot(t, b, "gateway-created.png")
	gwDir := t.TempDir()
	e2e.Start(t, []string{"AIRLOCK_GATEWAY_TOKEN=" + m[1]}, "gateway", "--domain", m[2], "--data-dir", gwDir)
	if got := b.reloadUntil("/gateways", `tr[data-gateway="edge-1"]`, "online", 30*time.Second); !strings.Contains(got, "online") {
		t.Fatalf("the started gateway is %q", got)
	}
	if strings.Contains(b.html(), m[1]) || b.has("#new-gateway") {
		t.Fatal("the enrollment token is shown again")
	}

	// A machine identity: its secret logs the CLI in; deleting it ends that.
	b.open("/machine-identities", "#machine-form")
	b.do(chromedp.SetValue(chromedp.ID("machine-name"), "ci-bot"), submit(chromedp.ID("create-machine")), chromedp.WaitVisible(chromedp.ID("new-machine")))
	mc := regexp.MustCompile(`^AIRLOCK_CLIENT_ID=(\S+) AIRLOCK_CLIENT_SECRET=(alks_\S+) airlock login --domain (\S+)$`).FindStringSubmatch(b.text("#machine-command"))
	if mc == nil {
		t.Fatalf("the machine login command: %q", b.text("#machine-command"))
	}
	bot := e2e.NewUser(t)
	bot.Env = []string{"AIRLOCK_CLIENT_ID=" + mc[1], "AIRLOCK_CLIENT_SECRET=" + mc[2]}
	bot.Must("", "login", "--domain", mc[3])
	bot.Must("", "projects", "list")
	b.open("/machine-identities", `tr[data-machine="ci-bot"]`)
	if strings.Contains(b.html(), mc[2]) {
		t.Fatal("the client secret is shown again")
	}
	b.eval(`Promise.resolve(window.confirm = () => true).then(() => "")`)
	b.do(submit(chromedp.CSS(`tr[data-machine="ci-bot"] button.danger`)), chromedp.WaitVisible(chromedp.ID("notice")))
	if b.has(`tr[data-machine="ci-bot"]`) {
		t.Fatal("ci-bot is still listed")
	}
	if _, errOut, code := bot.Run("", "projects", "list"); code == 0 {
		t.Fatalf("a deleted machine identity still works: %s", errOut)
	}

	// A project's settings.
	pid := strings.TrimSpace(admin.Must("", "projects", "create", "payments"))
	b.open("/projects/"+pid+"/settings", "#settings-form")
	b.do(chromedp.SetValue(chromedp.ID("console-timeout"), "2h"), submit(chromedp.ID("save-settings")), chromedp.WaitVisible(chromedp.ID("error")))
	if e := b.text("#error"); !strings.Contains(e, "1s to 1h") {
		t.Fatalf("a 2h console timeout: %q", e)
	}
	if v := b.eval(`Promise.resolve(document.getElementById("console-timeout").value)`); v != "2h" {
		t.Fatalf("the form kept %q", v)
	}
	b.do(chromedp.SetValue(chromedp.ID("console-timeout"), "45s"), submit(chromedp.ID("save-settings")), chromedp.WaitVisible(chromedp.ID("notice")))
	var p struct{ ConsoleStatementTimeout string }
	admin.JSON(&p, "", "projects", "get", pid)
	if p.ConsoleStatementTimeout != "45s" {
		t.Fatalf("after saving 45s the project has %q", p.ConsoleStatementTimeout)
	}

	// Someone who is not an organization admin: no gateways, no machine
	// identities, read-only settings.
	admin.Must("member password 1", "users", "create", "--email", "member@example.com", "--password-stdin")
	admin.Must("", "projects", "members", "set", "--project-id", pid, "--email", "member@example.com", "--role", "member")
	b.do(submit(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
	b.login("member@example.com", "member password 1")
	b.open("/gateways", "#error")
	b.open("/machine-identities", "#error")
	b.open("/projects/"+pid+"/settings", "#settings-form")
	if b.has("#save-settings") {
		t.Error("a member may save the project's settings")
	}
	token, _ := chromedp.Run(b.ctx, chromedp.Value(chromedp.CSS(`form[action="/logout"] input[name=csrf]`)))
	for _, path := range []string{"/gateways", "/machine-identities", "/projects/" + pid + "/settings"} {
		st := b.eval(`fetch("` + path + `", {method: "POST", body: new URLSearchParams({csrf: ` + jsString(token) +
			`, name: "sneaky", consoleTimeout: "1h"})}).then(r => String(r.status))`)
		if st != "403" {
			t.Errorf("a member's POST %s: %s", path, st)
		}
	}
	admin.JSON(&p, "", "projects", "get", pid)
	if p.ConsoleStatementTimeout != "45s" {
		t.Fatalf("a member changed the console timeout to %q", p.ConsoleStatementTimeout)
	}
}
