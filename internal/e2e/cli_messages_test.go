package e2e_test

import (
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/e2e"
)

// cmRefused runs the binary as u and fails the test unless it exits 1 with
// every one of wants in its standard error and nothing on standard output.
func cmRefused(t *testing.T, u *e2e.User, stdin string, wants []string, args ...string) string {
	t.Helper()
	out, errOut, code := u.Run(stdin, args...)
	if code != 1 {
		t.Fatalf("airlock %s: exit %d, want 1\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	for _, w := range wants {
		if !strings.Contains(errOut, w) {
			t.Fatalf("airlock %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, errOut)
		}
	}
	return errOut
}

// TestCLIMistypedSubcommandSaysSo: a mistyped command under a group says
// that the command is unknown and names the nearest one, instead of
// complaining about the flags that follow it or printing the group's help
// with exit 0.
func TestCLIMistypedSubcommandSaysSo(t *testing.T) {
	u := e2e.NewUser(t)
	cmRefused(t, u, "", []string{`unknown command "acces" for "airlock db"`, "did you mean access?"},
		"db", "acces", "--project-id", "P", "--resource", "R", "--account", "A")
	cmRefused(t, u, "", []string{`unknown command "acces" for "airlock db"`, "did you mean access?"}, "db", "acces")
	cmRefused(t, u, "", []string{`unknown command "postgre" for "airlock resources create"`, "did you mean postgres?"},
		"resources", "create", "postgre", "--project-id", "P", "--name", "n")
	cmRefused(t, u, "", []string{`unknown command "lst" for "airlock projects members"`, "list"},
		"projects", "members", "lst", "--project-id", "P")
	cmRefused(t, u, "", []string{`unknown command "logn" for "airlock"`, "did you mean login?"}, "logn", "--domain", "http://127.0.0.1:1")
	// A mistyped flag of a group is still a flag error.
	cmRefused(t, u, "", []string{"unknown flag: --projct-id"}, "db", "--projct-id", "P")
	// The group alone still prints its help.
	if out := u.Must("", "db"); !strings.Contains(out, "access") {
		t.Fatalf("airlock db: %s", out)
	}
}
