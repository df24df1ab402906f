package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgbouncer is PgBouncer in session mode in front of the cluster: the
// reference for what one proxy hop may cost.
type pgbouncer struct {
	Port    int
	Version string
	proc    *proc
}

// findPgbouncer returns the pgbouncer program, or "" if it is not installed.
// Debian puts it in /usr/sbin, which is not in every user's PATH.
func findPgbouncer() string {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
		if info, err := os.Stat(p); err == nil && info.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// canInstallPackages reports whether this process may install Debian
// packages: it is root and apt-get is there.
func canInstallPackages() bool {
	_, err := exec.LookPath("apt-get")
	return os.Geteuid() == 0 && err == nil
}

// ensurePgbouncer returns the pgbouncer program, installing Debian's package
// first if it is missing and this process may.
func ensurePgbouncer(ctx context.Context, logf func(string, ...any)) (string, error) {
	if p := findPgbouncer(); p != "" {
		return p, nil
	}
	if !canInstallPackages() {
		return "", errors.New("pgbouncer is not installed and this is not root with apt-get: install Debian's pgbouncer (apt-get install pgbouncer) and run again")
	}
	logf("installing Debian's pgbouncer")
	install := func() error {
		// Another installer (a parallel test) may hold dpkg's lock: wait.
		cmd := exec.CommandContext(ctx, "apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-q", "--no-install-recommends", "pgbouncer")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		_, err := runCmd(cmd)
		return err
	}
	if err := install(); err != nil {
		// Stale package lists are the usual cause: refresh them once.
		logf("apt-get install failed; running apt-get update and trying again")
		if _, uerr := runCmd(exec.CommandContext(ctx, "apt-get", "-o", "DPkg::Lock::Timeout=120", "update", "-q")); uerr != nil {
			return "", fmt.Errorf("install pgbouncer: %w; apt-get update: %w", err, uerr)
		}
		if err := install(); err != nil {
			return "", fmt.Errorf("install pgbouncer: %w", err)
		}
	}
	p := findPgbouncer()
	if p == "" {
		return "", errors.New("apt-get installed pgbouncer but the pgbouncer program is not in PATH or /usr/sbin")
	}
	return p, nil
}

// startPgbouncer starts PgBouncer in session mode with SCRAM-SHA-256 client
// authentication, connecting to pg without TLS. It refuses to run as root,
// so as root it runs as the postgres OS user.
func (e *environment) startPgbouncer(ctx context.Context, pg *postgres) (*pgbouncer, error) {
	bin, err := ensurePgbouncer(ctx, e.logf)
	if err != nil {
		return nil, err
	}
	b := &pgbouncer{}
	if out, err := runCmd(exec.CommandContext(ctx, bin, "--version")); err == nil {
		first, _, _ := strings.Cut(string(out), "\n")
		b.Version = strings.TrimSpace(strings.TrimPrefix(first, "PgBouncer "))
	}
	dir := filepath.Join(e.work, "pgbouncer")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	if b.Port, err = freePort(); err != nil {
		return nil, err
	}
	poolSize := e.cfg.Idle + 20
	ini := fmt.Sprintf(`[databases]
%[1]s = host=127.0.0.1 port=%[2]d dbname=%[1]s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[3]d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %[4]s
pool_mode = session
max_client_conn = %[5]d
default_pool_size = %[5]d
max_db_connections = %[5]d
server_tls_sslmode = disable
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
stats_period = 3600
`, pg.Database, pg.Port, b.Port, filepath.Join(dir, "userlist.txt"), poolSize)
	// The role's SCRAM verifier as PostgreSQL stores it, which is what a
	// production PgBouncer keeps (in auth_file or through auth_query): it
	// checks a client's proof without deriving the key (4096 PBKDF2 rounds)
	// at every login, and logs in to PostgreSQL with the keys of the
	// client's proof (SCRAM pass-through).
	verifier, err := pg.queryValue(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = '"+pg.User+"'")
	if err != nil {
		return nil, fmt.Errorf("read the SCRAM verifier of %s for PgBouncer: %w", pg.User, err)
	}
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		return nil, fmt.Errorf("the password of %s is not stored as SCRAM-SHA-256", pg.User)
	}
	files := map[string]string{
		"pgbouncer.ini": ini,
		"userlist.txt":  fmt.Sprintf("%q %q\n", pg.User, verifier),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	if pg.cred != nil {
		for _, f := range []string{dir, filepath.Join(dir, "pgbouncer.ini"), filepath.Join(dir, "userlist.txt")} {
			if err := os.Chown(f, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin", "HOME=" + dir}
	b.proc, err = e.procs.start("pgbouncer", cmd, filepath.Join(e.work, "pgbouncer.log"), startOptions{Cred: pg.cred, StopSig: syscall.SIGINT})
	if err != nil {
		return nil, err
	}
	if err := b.waitReady(ctx, pgURL(pg.User, pg.Password, b.Addr(), pg.Database)); err != nil {
		return nil, fmt.Errorf("start PgBouncer: %w\n%s", err, b.proc.tail(20))
	}
	return b, nil
}

// Addr returns 127.0.0.1:port.
func (b *pgbouncer) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.Port) }

// waitReady waits until a query through PgBouncer works.
func (b *pgbouncer) waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		c, err := pgconn.Connect(ctx, url)
		if err == nil {
			_, err = c.Exec(ctx, "SELECT 1").ReadAll()
			c.Close(ctx)
			if err == nil {
				return nil
			}
		}
		select {
		case <-b.proc.Done():
			return fmt.Errorf("pgbouncer exited: %v", b.proc.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("no query through PgBouncer within 30 s: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
