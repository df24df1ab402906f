//go:build unix

package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// dataDirLockFile is the file in a data directory that the airlock dev or
// server process using it holds locked.
const dataDirLockFile = "airlock.lock"

// lockDataDir takes an exclusive advisory lock (flock) on dir's lock file
// for as long as the process runs (or until the returned function is
// called), and writes the holder's pid and command (such as "airlock dev")
// into it. When another process holds it, the error names that process:
// two servers on one data directory would both run, and the second `airlock
// dev` would be without its built-in gateway (the first one's holds the
// gateway's identity). The kernel drops the lock when the process dies, so a
// killed process never leaves the directory locked.
func lockDataDir(dir, command string) (func(), error) {
	path := filepath.Join(dir, dataDirLockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file of the data directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("locking the data directory %s: %w", dir, err)
		}
		return nil, fmt.Errorf("%s is using the data directory %s: stop it, or pass another --data-dir", holder(path), dir)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+" "+command+"\n"), 0)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// holder describes the process that wrote the lock file at path, such as
// "another airlock dev (pid 4242)".
func holder(path string) string {
	b, _ := os.ReadFile(path)
	pid, command, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if _, err := strconv.Atoi(pid); err != nil || !ok || (command != "airlock dev" && command != "airlock server") {
		return "another airlock process"
	}
	return fmt.Sprintf("another %s (pid %s)", command, pid)
}
