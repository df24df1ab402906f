package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/e2e"
)

// TestSecretsStoreCLI drives the secrets store through the CLI: folders,
// versions, history and restore; `airlock run` hands the values to the
// command's environment and nowhere else; `airlock export` in both formats;
// a machine identity reads with the same commands; every read is audited.
func TestSecretsStoreCLI(t *testing.T) {
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	project := strings.TrimSpace(admin.Must("", "projects", "create", "payments"))
	at := []string{"--project-id", project, "--env", "prod"}
	orders := append(append([]string{}, at...), "--path", "/db/orders")
	sec := func(u *e2e.User, stdin string, args ...string) string {
		t.Helper()
		return u.Must(stdin, append([]string{"secrets"}, args...)...)
	}

	// The default environments; an unknown one is named in the error.
	if out := sec(admin, "", "environments", "list", "--project-id", project); !strings.Contains(out, "dev") || !strings.Contains(out, "staging") || !strings.Contains(out, "prod") {
		t.Fatalf("environments list:\n%s", out)
	}
	if _, errOut, code := admin.Run("", "secrets", "list", "--project-id", project, "--env", "qa"); code == 0 || !strings.Contains(errOut, "dev, staging, prod") {
		t.Fatalf("an unknown environment: exit %d, %s", code, errOut)
	}

	// A folder must exist; its secrets are apart from the root's.
	if _, errOut, code := admin.Run("", append([]string{"secrets", "set", "PGUSER=x"}, orders...)...); code == 0 || !strings.Contains(errOut, "folders create") {
		t.Fatalf("a missing folder: exit %d, %s", code, errOut)
	}
	sec(admin, "", "folders", "create", "/db/orders", "--project-id", project, "--env", "prod")
	sec(admin, "", append([]string{"set", "PGUSER=orders_app", "PGDATABASE=orders"}, orders...)...)
	sec(admin, "first-pw-s3cret\n", append([]string{"set", "PGPASSWORD"}, orders...)...)
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("second 'pw' $HOME s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sec(admin, "", append([]string{"set", "PGPASSWORD", "--file", file}, orders...)...)
	sec(admin, "", append([]string{"set", "ROOT_ONLY=1"}, at...)...)

	if got := sec(admin, "", append([]string{"get", "PGPASSWORD", "--version", "1"}, orders...)...); got != "first-pw-s3cret\n" {
		t.Fatalf("version 1 (from stdin, less its newline): %q", got)
	}
	if got := sec(admin, "", append([]string{"get", "PGPASSWORD"}, orders...)...); got != "second 'pw' $HOME s3cret\n\n" {
		t.Fatalf("version 2 (from a file, as it is): %q", got)
	}
	var list []struct {
		Name    string
		Version int
		Value   *string
	}
	admin.JSON(&list, "", append([]string{"secrets", "list"}, orders...)...)
	if len(list) != 3 || list[0].Name != "PGDATABASE" || list[1].Name != "PGPASSWORD" || list[1].Version != 2 || list[1].Value != nil {
		t.Fatalf("list: %+v", list)
	}

	// Delete, history, restore.
	sec(admin, "", append([]string{"delete", "PGPASSWORD"}, orders...)...)
	if _, _, code := admin.Run("", append([]string{"secrets", "get", "PGPASSWORD"}, orders...)...); code == 0 {
		t.Fatal("a deleted secret was read")
	}
	hist := sec(admin, "", append([]string{"history", "PGPASSWORD"}, orders...)...)
	if !strings.Contains(hist, "deleted") || strings.Count(hist, srv.AdminEmail) != 3 {
		t.Fatalf("history:\n%s", hist)
	}
	sec(admin, "", append([]string{"restore", "PGPASSWORD", "--version", "1"}, orders...)...)
	if got := sec(admin, "", append([]string{"get", "PGPASSWORD"}, orders...)...); got != "first-pw-s3cret\n" {
		t.Fatalf("after restoring version 1: %q", got)
	}

	// airlock run: the values are in the command's environment, the root's
	// ROOT_ONLY is not (another folder); the exit code is the command's.
	out := admin.Must("", append(append([]string{"run"}, orders...), "--", "sh", "-c", `printf '%s|%s|%s|%s' "$PGUSER" "$PGDATABASE" "$PGPASSWORD" "${ROOT_ONLY:-unset}"`)...)
	if out != "orders_app|orders|first-pw-s3cret|unset" {
		t.Fatalf("airlock run gave the command %q", out)
	}
	if _, _, code := admin.Run("", append(append([]string{"run"}, orders...), "--", "sh", "-c", "exit 7")...); code != 7 {
		t.Fatalf("airlock run exited %d, want the command's 7", code)
	}
	stdout, stderr, _ := admin.Run("", append(append([]string{"run"}, orders...), "--", "true")...)
	if strings.Contains(stdout+stderr, "s3cret") {
		t.Fatalf("airlock run printed a value: %s %s", stdout, stderr)
	}
	filepath.WalkDir(admin.Config, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "s3cret") {
				t.Errorf("a value was written to %s", p)
			}
		}
		return nil
	})

	// airlock export.
	sec(admin, "", append([]string{"set", "PGPASSWORD", "--file", file}, orders...)...)
	dotenv := admin.Must("", append([]string{"export"}, orders...)...)
	want := "PGDATABASE='orders'\nPGPASSWORD=\"second 'pw' \\$HOME s3cret\\n\"\nPGUSER='orders_app'\n"
	if dotenv != want {
		t.Fatalf("export dotenv:\n%s\nwant:\n%s", dotenv, want)
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(admin.Must("", append([]string{"export", "--format", "json"}, orders...)...)), &m); err != nil ||
		m["PGPASSWORD"] != "second 'pw' $HOME s3cret\n" || len(m) != 3 {
		t.Fatalf("export json: %v %v", m, err)
	}

	// A machine identity, a project member, uses the same commands.
	var mi struct{ ID, ClientID, ClientSecret string }
	admin.JSON(&mi, "", "machine-identities", "create", "deployer")
	admin.Must("", "projects", "members", "set", "--project-id", project, "--machine-identity-id", mi.ID, "--role", "member")
	bot := e2e.NewUser(t)
	bot.Must("", "login", "--domain", srv.URL, "--client-id", mi.ClientID, "--client-secret", mi.ClientSecret)
	if got := bot.Must("", append(append([]string{"run"}, orders...), "--", "sh", "-c", `printf %s "$PGUSER"`)...); got != "orders_app" {
		t.Fatalf("the machine identity's run: %q", got)
	}
	bot.Must("", append([]string{"secrets", "set", "DEPLOYED=yes"}, at...)...)

	// Every read is audited, by name, never with the value.
	var events []struct {
		ActorName string
		TargetID  string
		Details   map[string]any
	}
	admin.JSON(&events, "", "audit", "list", "--project-id", project, "--action", "secret.read", "--limit", "1000")
	reads := map[string]int{}
	for _, e := range events {
		if b, _ := json.Marshal(e.Details); strings.Contains(string(b), "s3cret") {
			t.Fatalf("an audit entry holds a value: %s", b)
		}
		reads[e.ActorName+" "+e.TargetID]++
	}
	if reads[srv.AdminEmail+" prod:/db/orders/PGPASSWORD"] < 8 || reads["deployer prod:/db/orders/PGUSER"] != 1 {
		t.Fatalf("audited reads: %v", reads)
	}
}
