package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Versions of the servers built from Go module source.
const (
	FerretDBVersion = "v1.24.2"
	MailpitVersion  = "v1.27.11"

	ferretModule  = "github.com/FerretDB/FerretDB"
	mailpitModule = "github.com/axllent/mailpit"
)

// binary describes a server binary in the cache and what ensuring it did.
type binary struct {
	Name    string        // "ferretdb" or "mailpit"
	Version string        // the module version it was built from
	Path    string        // the executable
	Built   bool          // false when it was already in the cache
	Took    time.Duration // how long the build took; zero when cached
}

// CacheDir returns the directory that holds the built server binaries:
// $AIRLOCK_TEST_CACHE if set, else airlock-test/bin under the user's cache
// directory (~/.cache/airlock-test/bin on Linux).
func CacheDir() (string, error) {
	if d := os.Getenv("AIRLOCK_TEST_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find the cache directory for test binaries (set AIRLOCK_TEST_CACHE): %w", err)
	}
	return filepath.Join(d, "airlock-test", "bin"), nil
}

// EnsureBinaries builds FerretDB and installs mailpit into CacheDir unless
// they are there already. It is what scripts/install-test-deps runs before
// the tests, so that no test waits for a build; each step is logged with
// log/slog. It is safe to call from several processes at once.
func EnsureBinaries(ctx context.Context) error {
	var errs []error
	for _, ensure := range []func(context.Context) (binary, error){ensureFerretDB, ensureMailpit} {
		b, err := ensure(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if b.Built {
			slog.InfoContext(ctx, "built test binary", "name", b.Name, "version", b.Version, "path", b.Path, "took", b.Took.Round(time.Millisecond))
		} else {
			slog.InfoContext(ctx, "test binary already cached", "name", b.Name, "version", b.Version, "path", b.Path)
		}
	}
	return errors.Join(errs...)
}

// ensureFerretDB returns the FerretDB binary, building it from module source
// if the cache lacks it. `go install` cannot be used: the module proxy does
// not list FerretDB's versions, and the module archive lacks the
// build/version/version.txt file its build embeds.
func ensureFerretDB(ctx context.Context) (binary, error) {
	dir, err := CacheDir()
	if err != nil {
		return binary{}, err
	}
	b := binary{Name: "ferretdb", Version: FerretDBVersion, Path: filepath.Join(dir, "ferretdb-"+FerretDBVersion)}
	return ensureBinary(ctx, dir, b, func(ctx context.Context, work string) error {
		src, err := downloadModule(ctx, work, ferretModule, FerretDBVersion)
		if err != nil {
			return err
		}
		tree := filepath.Join(work, "src")
		if err := copyTree(src, tree); err != nil {
			return fmt.Errorf("copy %s source: %w", ferretModule, err)
		}
		versionFile := filepath.Join(tree, "build", "version", "version.txt")
		if err := os.WriteFile(versionFile, []byte(FerretDBVersion+"\n"), 0o644); err != nil {
			return fmt.Errorf("write FerretDB version file: %w", err)
		}
		tmp := filepath.Join(work, "ferretdb")
		if err := runGo(ctx, tree, nil, "build", "-o", tmp, "./cmd/ferretdb"); err != nil {
			return err
		}
		// Rename within the cache directory: atomic, so another process sees
		// either no binary or a whole one.
		return os.Rename(tmp, b.Path)
	})
}

// ensureMailpit returns the mailpit binary, installing it with `go install`
// into a directory named after its version if the cache lacks it.
func ensureMailpit(ctx context.Context) (binary, error) {
	dir, err := CacheDir()
	if err != nil {
		return binary{}, err
	}
	binDir := filepath.Join(dir, "mailpit-"+MailpitVersion)
	b := binary{Name: "mailpit", Version: MailpitVersion, Path: filepath.Join(binDir, "mailpit")}
	return ensureBinary(ctx, dir, b, func(ctx context.Context, work string) error {
		gobin := filepath.Join(work, "bin")
		if err := runGo(ctx, work, []string{"GOBIN=" + gobin}, "install", mailpitModule+"@"+MailpitVersion); err != nil {
			return err
		}
		// A directory left by an interrupted manual install would make the
		// rename fail; nobody else writes it while we hold the lock.
		if err := os.RemoveAll(binDir); err != nil {
			return fmt.Errorf("remove stale %s: %w", binDir, err)
		}
		return os.Rename(gobin, binDir)
	})
}

// ensureBinary builds b.Path with build unless it exists. Several test
// binaries may ask at once: an exclusive lock on a file in the cache
// directory makes one of them build while the others wait, and they look
// again once they hold the lock. build works in a scratch directory inside
// dir that is removed afterwards, and must put the result in place with a
// rename.
func ensureBinary(ctx context.Context, dir string, b binary, build func(ctx context.Context, work string) error) (binary, error) {
	if isExecutable(b.Path) {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return b, fmt.Errorf("create test binary cache: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, "."+b.Name+"-"+b.Version+".lock"))
	if err != nil {
		return b, fmt.Errorf("build %s %s: %w", b.Name, b.Version, err)
	}
	defer unlock()
	if isExecutable(b.Path) {
		return b, nil // another process built it while we waited
	}

	// Scratch directories of this binary can only be left over from a build
	// that was killed: only the holder of the lock makes them.
	if stale, err := filepath.Glob(filepath.Join(dir, ".build-"+b.Name+"-*")); err == nil {
		for _, d := range stale {
			_ = os.RemoveAll(d)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	start := time.Now()
	work, err := os.MkdirTemp(dir, ".build-"+b.Name+"-*")
	if err != nil {
		return b, fmt.Errorf("build %s %s: %w", b.Name, b.Version, err)
	}
	defer os.RemoveAll(work)
	if err := build(ctx, work); err != nil {
		return b, fmt.Errorf("build %s %s: %w", b.Name, b.Version, err)
	}
	if !isExecutable(b.Path) {
		return b, fmt.Errorf("build %s %s: no executable at %s after the build", b.Name, b.Version, b.Path)
	}
	b.Built = true
	b.Took = time.Since(start)
	return b, nil
}

// lockFile takes an exclusive flock on path, waiting until ctx ends. The lock
// goes away with the process, so a killed build leaves no stale lock.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s (another process is building): %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}

// downloadModule puts module@version in the module cache and returns its
// directory there (read-only).
func downloadModule(ctx context.Context, work, module, version string) (string, error) {
	out, err := goOutput(ctx, work, nil, "mod", "download", "-json", module+"@"+version)
	var info struct {
		Dir   string
		Error string
	}
	// go mod download -json reports a failure in the JSON too, with a useful
	// message; prefer it to the bare exit status.
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("download %s@%s: %s", module, version, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("download %s@%s: %w", module, version, err)
	}
	if info.Dir == "" {
		return "", fmt.Errorf("download %s@%s: go mod download gave no directory: %s", module, version, bytes.TrimSpace(out))
	}
	return info.Dir, nil
}

// goCommand returns a go command for building third-party modules: outside
// any workspace, without cgo, and with none of the caller's GOFLAGS.
func goCommand(ctx context.Context, dir string, env []string, args ...string) (*exec.Cmd, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goBin = filepath.Join(root, "bin", "go")
		}
		if !isExecutable(goBin) {
			return nil, fmt.Errorf("the go command is not in PATH: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// runGo runs a go command and returns an error with the end of its output.
func runGo(ctx context.Context, dir string, env []string, args ...string) error {
	cmd, err := goCommand(ctx, dir, env, args...)
	if err != nil {
		return err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %v: %w\n%s", args, err, tailBytes(out, 2000))
	}
	return nil
}

// goOutput runs a go command and returns its standard output.
func goOutput(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	cmd, err := goCommand(ctx, dir, env, args...)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("go %v: %w\n%s", args, err, tailBytes(stderr.Bytes(), 2000))
	}
	return out, nil
}

// copyTree copies the regular files and directories under src to dst, made
// writable by the owner (the module cache is read-only).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if info.Mode()&0o111 != 0 {
			mode = 0o755
		}
		return copyFile(path, target, mode)
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func isExecutable(path string) bool {
	if path == "" {
		return false
	}
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0
}

// tailBytes returns at most the last n bytes of b, as a string.
func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}
