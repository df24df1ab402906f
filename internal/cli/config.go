package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// EnvConfigDir overrides where the CLI keeps its credentials.
const EnvConfigDir = "AIRLOCK_CONFIG_DIR"

// Credentials is what `airlock login` stores (mode 0600). Every airlock
// process of the user shares the file: a process that refreshes the tokens
// holds the lock file beside it (see lockCredentials), so that a refresh
// token is never used twice, which the server would take for theft.
type Credentials struct {
	Domain           string    `json:"domain"`
	CAFile           string    `json:"caFile,omitempty"`
	AccessToken      string    `json:"accessToken"`
	AccessExpiresAt  time.Time `json:"accessExpiresAt"`
	RefreshToken     string    `json:"refreshToken"`
	RefreshExpiresAt time.Time `json:"refreshExpiresAt"`
}

func configDir() (string, error) {
	if d := os.Getenv(EnvConfigDir); d != "" {
		return d, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("cannot find your config directory (set %s): %w", EnvConfigDir, err)
	}
	return filepath.Join(d, "airlock"), nil
}

func credentialsPath() (string, error) {
	d, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "credentials.json"), nil
}

// errNotLoggedIn says that no credentials file exists. loadCredentials
// returns it as a notLoggedInError, whose message names the server of the
// last logout on this machine.
var errNotLoggedIn = errors.New("you are not logged in")

// notLoggedInError is errNotLoggedIn with the login command to run.
type notLoggedInError struct{ last *lastLogin }

func (e *notLoggedInError) Error() string {
	if e.last == nil || e.last.Domain == "" {
		return "you are not logged in: run `airlock login --domain https://airlock.example.com` (the address of your Airlock server)"
	}
	cmd := "airlock login --domain " + e.last.Domain
	if e.last.CAFile != "" {
		cmd += " --ca-file " + e.last.CAFile
	}
	return "you are not logged in: run `" + cmd + "`"
}

func (e *notLoggedInError) Is(target error) bool { return target == errNotLoggedIn }

// lastLogin is what `airlock logout` keeps of the login it removed
// (last-login.json beside the credentials): the server's address and CA
// file, never a token, so that the next "not logged in" names them.
type lastLogin struct {
	Domain string `json:"domain"`
	CAFile string `json:"caFile,omitempty"`
}

func lastLoginPath() (string, error) {
	d, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "last-login.json"), nil
}

// saveLastLogin records the server of a login being removed; a failure
// only costs the hint.
func saveLastLogin(c *Credentials) {
	p, err := lastLoginPath()
	if err != nil {
		return
	}
	b, err := json.Marshal(lastLogin{Domain: c.Domain, CAFile: c.CAFile})
	if err == nil {
		_ = os.WriteFile(p, b, 0o600)
	}
}

// loadLastLogin returns what saveLastLogin recorded, or nil.
func loadLastLogin() *lastLogin {
	p, err := lastLoginPath()
	if err != nil {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var l lastLogin
	if json.Unmarshal(b, &l) != nil {
		return nil
	}
	// Only a server address that the CLI would accept is repeated.
	if d, err := normalizeDomain(l.Domain); err != nil || d != l.Domain {
		return nil
	}
	return &l
}

// lockCredentials takes the lock that guards the credentials file
// (credentials.lock beside it) and returns the function that releases it.
// Hold it from reading tokens that are to be refreshed until the new ones
// are saved, and while logging in or out.
func lockCredentials(ctx context.Context) (func(), error) {
	p, err := credentialsPath()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
	}
	return lockFile(ctx, filepath.Join(filepath.Dir(p), "credentials.lock"))
}

// loadCredentials returns the stored credentials, or an errNotLoggedIn.
func loadCredentials() (*Credentials, error) {
	p, err := credentialsPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &notLoggedInError{last: loadLastLogin()}
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): run `airlock login` again", p, err)
	}
	return &c, nil
}

// saveCredentials writes c atomically with mode 0600 (a new file renamed
// over the old one, so a reader sees the old tokens or the new ones, never
// half of either). Callers hold lockCredentials.
func saveCredentials(c *Credentials) error {
	p, err := credentialsPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".credentials-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

func removeCredentials() (bool, error) {
	p, err := credentialsPath()
	if err != nil {
		return false, err
	}
	err = os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
