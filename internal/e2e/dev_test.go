package e2e_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/keyring"
)

// devNext matches the last line of `airlock dev`'s banner.
var devNext = regexp.MustCompile(`^Next:  airlock login --domain (\S+) --email (\S+)$`)

// startDev runs `airlock dev` on dataDir and a free port, and waits for its
// banner; it returns the process and its URL.
func startDev(t *testing.T, dataDir string) (*e2e.Process, string) {
	t.Helper()
	p := e2e.Start(t, nil, "dev", "--data-dir", dataDir, "--listen", e2e.FreeAddr(t))
	m := devNext.FindStringSubmatch(p.WaitLine(t, devNext, 60*time.Second))
	return p, m[1]
}

// TestDevRefusesASecondOnTheSameDataDirectory: a second `airlock dev` (or
// an `airlock server`) on the data directory of a running `airlock dev`
// refuses to start, names the process that holds it, and leaves it alone;
// once that process is gone, even killed, the directory can be used again.
func TestDevRefusesASecondOnTheSameDataDirectory(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	first, url := startDev(t, dataDir)
	u := e2e.NewUser(t)
	want := fmt.Sprintf("another airlock dev (pid %d) is using the data directory %s: stop it, or pass another --data-dir",
		first.Cmd.Process.Pid, dataDir)
	for _, args := range [][]string{
		{"dev", "--data-dir", dataDir, "--listen", e2e.FreeAddr(t)},
		{"server", "--data-dir", dataDir, "--listen", e2e.FreeAddr(t)},
	} {
		u.Env = []string{"AIRLOCK_ROOT_KEY=" + keyring.GenerateRootKey()}
		out, errOut, code := u.Run("", args...)
		if code != 1 || !strings.Contains(errOut, want) {
			t.Fatalf("airlock %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	u.Env = nil
	if first.Exited() {
		t.Fatalf("the first airlock dev stopped: %s", first.Stderr())
	}
	e2e.WaitReady(t, url)

	// Killed, it leaves no lock behind.
	first.Stop(syscall.SIGKILL)
	startDev(t, dataDir)
}
