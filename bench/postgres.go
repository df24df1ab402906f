package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgBinDir is where Debian's postgresql-15 package puts the server programs.
const pgBinDir = "/usr/lib/postgresql/15/bin"

// maxConnections leaves room for the idle-connection measurement (up to
// -idle connections through a proxy) plus pgbench and the harness.
func maxConnections(idle int) int { return idle + 100 }

// postgres is the cluster the benchmark runs against: its own data
// directory, on 127.0.0.1 at a free port, without TLS (no target pays for
// TLS to the database, so the comparison is of the proxies alone).
type postgres struct {
	Port          int
	Dir           string
	SuperPassword string
	// The role that owns the pgbench tables and that every target logs in as.
	User, Password, Database string
	Version                  string

	proc *proc
	cred *syscall.Credential
}

// Addr returns 127.0.0.1:port.
func (p *postgres) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)) }

// url returns a URL for user in db, without TLS.
func pgURL(user, password, addr, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: addr, Path: "/" + db, RawQuery: "sslmode=disable"}
	if password == "" {
		u.User = url.User(user)
	}
	return u.String()
}

// postgresMissing says how to install PostgreSQL 15 when it is not there.
func postgresMissing() error {
	for _, prog := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(pgBinDir, prog)); err != nil {
			return fmt.Errorf("PostgreSQL 15 not found (no %s in %s): install Debian's postgresql-15 as root (apt-get install postgresql-15, or ./scripts/install-test-deps)", prog, pgBinDir)
		}
	}
	if _, err := exec.LookPath("pgbench"); err != nil {
		return errors.New("pgbench not found in PATH: install Debian's postgresql-client-15")
	}
	return nil
}

// startPostgres creates a cluster, starts it, creates the bench role and
// database and fills it with pgbench -i at the configured scale.
func (e *environment) startPostgres(ctx context.Context) (*postgres, error) {
	if err := postgresMissing(); err != nil {
		return nil, err
	}
	p := &postgres{
		Dir:           filepath.Join(e.work, "postgres"),
		SuperPassword: randomHex(16),
		User:          "bench",
		Password:      randomHex(16),
		Database:      "bench",
	}
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("look up the postgres OS user (Debian's postgresql-15 creates it): %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	if err := os.Mkdir(p.Dir, 0o700); err != nil {
		return nil, err
	}
	pwfile := filepath.Join(p.Dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.SuperPassword+"\n"), 0o600); err != nil {
		return nil, err
	}
	if p.cred != nil {
		for _, f := range []string{p.Dir, pwfile} {
			if err := os.Chown(f, uid, gid); err != nil {
				return nil, fmt.Errorf("give %s to the postgres user: %w", f, err)
			}
		}
	}
	out, err := runCmd(p.command(ctx, "postgres", "--version"))
	if err != nil {
		return nil, err
	}
	p.Version = strings.TrimSpace(strings.TrimPrefix(string(out), "postgres (PostgreSQL) "))

	data := filepath.Join(p.Dir, "data")
	e.logf("initdb (PostgreSQL %s)", p.Version)
	if _, err := runCmd(p.command(ctx, "initdb", "-D", data, "-U", "postgres", "--pwfile="+pwfile,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
		"--no-sync", "--no-instructions")); err != nil {
		return nil, err
	}
	os.Remove(pwfile)
	hba := "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := p.writeOwned(filepath.Join(data, "pg_hba.conf"), hba); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString("\ninclude 'bench.conf'\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("configure PostgreSQL: %w", err)
	}

	for attempt := 1; ; attempt++ {
		if p.Port, err = freePort(); err != nil {
			return nil, err
		}
		conf := strings.Join([]string{
			"listen_addresses = '127.0.0.1'",
			fmt.Sprintf("port = %d", p.Port),
			fmt.Sprintf("unix_socket_directories = '%s'", p.Dir),
			"ssl = off",
			fmt.Sprintf("max_connections = %d", maxConnections(e.cfg.Idle)),
			"shared_buffers = '256MB'", // scale 10 is about 160 MB: all of it stays in memory
			"password_encryption = 'scram-sha-256'",
			"fsync = off",
			"synchronous_commit = off",
			"full_page_writes = off",
			"max_wal_size = '1GB'",
			"log_min_messages = warning",
			"",
		}, "\n")
		if err := p.writeOwned(filepath.Join(data, "bench.conf"), conf); err != nil {
			return nil, err
		}
		cmd := p.command(context.Background(), "postgres", "-D", data)
		p.proc, err = e.procs.start("postgres", cmd, filepath.Join(e.work, "postgres.log"), startOptions{Cred: p.cred, StopSig: syscall.SIGQUIT})
		if err != nil {
			return nil, err
		}
		err = p.waitReady(ctx)
		if err == nil {
			break
		}
		p.proc.stop(5 * time.Second)
		if !strings.Contains(p.proc.tail(20), "in use") || attempt >= 3 {
			return nil, fmt.Errorf("start PostgreSQL: %w\n%s", err, p.proc.tail(20))
		}
	}

	if err := p.exec(ctx, "postgres",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", p.User, p.Password),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", p.Database, p.User),
	); err != nil {
		return nil, err
	}
	e.logf("pgbench -i -s %d", e.cfg.Scale)
	cmd := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(e.cfg.Scale),
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", p.User, p.Database)
	cmd.Env = pgEnv(p.Password)
	if _, err := runCmd(cmd); err != nil {
		return nil, fmt.Errorf("fill the pgbench tables: %w", err)
	}
	return p, nil
}

// command runs a PostgreSQL program as the postgres OS user (when the
// harness runs as root) with a clean environment.
func (p *postgres) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(pgBinDir, prog), args...)
	cmd.Dir = p.Dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C.UTF-8", "HOME=" + p.Dir}
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd
}

func (p *postgres) writeOwned(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("configure PostgreSQL: %w", err)
	}
	if p.cred != nil {
		if err := os.Chown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return fmt.Errorf("configure PostgreSQL: %w", err)
		}
	}
	return nil
}

// waitReady waits until the superuser can log in.
func (p *postgres) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		c, err := pgconn.Connect(ctx, p.superURL("postgres"))
		if err == nil {
			return c.Close(ctx)
		}
		select {
		case <-p.proc.Done():
			return fmt.Errorf("postgres exited: %v", p.proc.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("PostgreSQL did not accept connections within 30 s: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *postgres) superURL(db string) string {
	return pgURL("postgres", p.SuperPassword, p.Addr(), db)
}

// exec runs each statement as the superuser in db.
func (p *postgres) exec(ctx context.Context, db string, stmts ...string) error {
	c, err := pgconn.Connect(ctx, p.superURL(db))
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL as postgres: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s).ReadAll(); err != nil {
			first, _, _ := strings.Cut(s, " PASSWORD")
			return fmt.Errorf("%s: %w", first, err)
		}
	}
	return nil
}

// queryValue runs a query as the superuser in postgres and returns the one
// value it answers.
func (p *postgres) queryValue(ctx context.Context, query string) (string, error) {
	c, err := pgconn.Connect(ctx, p.superURL("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL as postgres: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	rs, err := c.Exec(ctx, query).ReadAll()
	if err != nil {
		return "", err
	}
	if len(rs) != 1 || len(rs[0].Rows) != 1 || len(rs[0].Rows[0]) != 1 {
		return "", fmt.Errorf("%s: expected one value", query)
	}
	return string(rs[0].Rows[0][0]), nil
}

// pgEnv is the environment of pgbench: no TLS, the password if any, and
// nothing of the caller's PG* variables.
func pgEnv(password string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C.UTF-8", "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=30"}
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
