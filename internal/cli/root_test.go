package cli

import (
	"strings"
	"testing"
)

// TestUnknownSubcommandSaysSo: a mistyped command under a group is refused
// as an unknown command with the nearest names, whatever flags follow it;
// a real command, a group alone, help and a mistyped flag are left to cobra.
func TestUnknownSubcommandSaysSo(t *testing.T) {
	for args, want := range map[string]string{
		"db acces --project-id P":                    `unknown command "acces" for "airlock db": did you mean access?`,
		"db acces":                                   `unknown command "acces" for "airlock db": did you mean access?`,
		"db --output json acces --resource R":        `unknown command "acces" for "airlock db": did you mean access?`,
		"logn --domain http://127.0.0.1:1":           `unknown command "logn" for "airlock": did you mean login?`,
		"resources create postgre --project-id P":    `unknown command "postgre" for "airlock resources create": did you mean postgres?`,
		"projects members lst --project-id P":        `unknown command "lst" for "airlock projects members": did you mean list or set?`,
		"sessions lgs ID":                            `unknown command "lgs" for "airlock sessions": did you mean list or logs?`,
		"zzzzzz":                                     `unknown command "zzzzzz" for "airlock" (` + "`airlock --help`",
		"gateways allow-projekt dc1 --project-id P":  `unknown command "allow-projekt" for "airlock gateways": did you mean allow-project?`,
		"machine-identities creat ci":                `unknown command "creat" for "airlock machine-identities": did you mean create?`,
		"completion bsh":                             `did you mean bash, zsh or fish?`,
		"audit verfy":                                `unknown command "verfy" for "airlock audit": did you mean verify?`,
		"accounts lst --project-id P --metadata a=b": `unknown command "lst" for "airlock accounts": did you mean list or get?`,
	} {
		err := unknownSubcommand(NewRootCommand(), strings.Fields(args))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
	for _, args := range []string{"", "db", "db access --project-id P", "db help", "db --projct-id P", "help db",
		"projects members list --project-id P", "__complete db ac", "completion bash", "version", "resources create"} {
		if err := unknownSubcommand(NewRootCommand(), strings.Fields(args)); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}
