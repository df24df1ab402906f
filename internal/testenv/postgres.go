package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultPostgresBinDir is where Debian's postgresql-15 package puts the
// server programs.
const DefaultPostgresBinDir = "/usr/lib/postgresql/15/bin"

// AppDatabase is the database every cluster has, which all test roles can
// connect to and create tables in.
const AppDatabase = "app"

// Role names created in every cluster.
const (
	SuperUserName = "postgres"
	SCRAMUserName = "scram_user" // password stored as SCRAM-SHA-256
	MD5UserName   = "md5_user"   // password stored as MD5, authenticated with md5
	TLSUserName   = "tls_user"   // may connect only over TLS
)

// Role is a PostgreSQL login role and its password.
type Role struct {
	User     string
	Password string
}

// Postgres is a PostgreSQL 15 cluster of its own, started for a test. It
// listens on 127.0.0.1 at a free port with TLS on (a certificate for
// 127.0.0.1 and localhost, issued by CA) and has the roles described on
// StartPostgres.
type Postgres struct {
	Host      string // always 127.0.0.1
	Port      int
	CA        *CA    // issued the server certificate
	CAFile    string // CA's certificate as a file, for sslrootcert
	SuperUser string // "postgres"
	// SuperPassword is the password of the superuser "postgres".
	SuperPassword string
	SCRAMUser     Role // scram_user: SCRAM-SHA-256, plain or TLS connections
	MD5User       Role // md5_user: md5 authentication
	TLSUser       Role // tls_user: refused without TLS
	Database      string
	DataDir       string // the cluster's data directory
	LogPath       string // the server's log, appended across restarts
	SocketDir     string // directory of the Unix socket

	binDir   string
	baseDir  string
	settings [][2]string
	cred     *syscall.Credential // nil when not running as root

	mu  sync.Mutex
	pid int // postmaster PID while running, else 0
	wd  *watchdog
}

// PostgresOption changes how StartPostgres sets up a cluster.
type PostgresOption func(*postgresConfig)

type postgresConfig struct {
	binDir   string
	settings [][2]string
}

// WithPostgresBinDir runs the PostgreSQL programs from dir instead of
// DefaultPostgresBinDir.
func WithPostgresBinDir(dir string) PostgresOption {
	return func(c *postgresConfig) { c.binDir = dir }
}

// WithPostgresSetting adds name = 'value' to the server's configuration, after
// testenv's own settings so that it wins. Example:
// WithPostgresSetting("max_connections", "300").
func WithPostgresSetting(name, value string) PostgresOption {
	return func(c *postgresConfig) { c.settings = append(c.settings, [2]string{name, value}) }
}

// StartPostgres starts a new cluster for t and stops it, by PID, when t ends,
// whether t passed or not. If the cluster cannot be started, Require decides
// whether t fails or is skipped.
//
// The cluster has the database "app" (owned by postgres) and these roles,
// each with a random password:
//   - postgres, the superuser (SuperPassword), SCRAM-SHA-256;
//   - scram_user, SCRAM-SHA-256;
//   - md5_user, with an MD5 password and the md5 method in pg_hba.conf;
//   - tls_user, SCRAM-SHA-256 and refused on connections without TLS.
//
// The three test roles may connect to "app" and create objects in its public
// schema. Each call builds a cluster from scratch (initdb takes well under a
// second with --no-sync); tests that just need a database should use
// SharedPostgres.
func StartPostgres(t testing.TB, opts ...PostgresOption) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := startPostgres(ctx, opts...)
	Require(t, "PostgreSQL", err)
	t.Cleanup(func() {
		if err := p.close(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	logOnFailure(t, "PostgreSQL", p.LogPath)
	return p
}

func startPostgres(ctx context.Context, opts ...PostgresOption) (_ *Postgres, err error) {
	cfg := postgresConfig{binDir: DefaultPostgresBinDir}
	for _, o := range opts {
		o(&cfg)
	}
	for _, prog := range []string{"initdb", "pg_ctl", "postgres"} {
		if !isExecutable(filepath.Join(cfg.binDir, prog)) {
			return nil, fmt.Errorf("PostgreSQL 15 not found: no %s in %s (install Debian's postgresql-15)", prog, cfg.binDir)
		}
	}

	p := &Postgres{
		Host:          "127.0.0.1",
		SuperUser:     SuperUserName,
		SuperPassword: randomPassword(),
		SCRAMUser:     Role{SCRAMUserName, randomPassword()},
		MD5User:       Role{MD5UserName, randomPassword()},
		TLSUser:       Role{TLSUserName, randomPassword()},
		Database:      AppDatabase,
		binDir:        cfg.binDir,
		settings:      cfg.settings,
	}
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: the cluster belongs to the postgres
		// OS user, which must own and be able to reach every file it reads.
		uid, gid, err = lookupUser("postgres")
		if err != nil {
			return nil, err
		}
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}

	p.baseDir, err = os.MkdirTemp(tempParent(), "airlock-pg-")
	if err != nil {
		return nil, fmt.Errorf("create PostgreSQL directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = p.close()
		}
	}()
	p.DataDir = filepath.Join(p.baseDir, "data")
	p.LogPath = filepath.Join(p.baseDir, "postgres.log")
	p.SocketDir = p.baseDir

	if p.CA, err = newCA(); err != nil {
		return nil, err
	}
	files, err := p.CA.WriteFiles(p.baseDir, "127.0.0.1", "localhost")
	if err != nil {
		return nil, err
	}
	p.CAFile = files.CAFile
	pwfile := filepath.Join(p.baseDir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.SuperPassword+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write PostgreSQL password file: %w", err)
	}
	if err := os.Chmod(p.baseDir, 0o700); err != nil {
		return nil, err
	}
	if p.cred != nil {
		if err := chownTree(p.baseDir, uid, gid); err != nil {
			return nil, fmt.Errorf("give %s to the postgres user: %w", p.baseDir, err)
		}
	}

	if out, err := p.pgCommand(ctx, "initdb", "-D", p.DataDir, "-U", SuperUserName, "--pwfile="+pwfile,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
		"--no-sync", "--no-instructions").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, tailBytes(out, 2000))
	}
	if err := os.Remove(pwfile); err != nil {
		return nil, err
	}
	if err := p.writeHBA(); err != nil {
		return nil, err
	}
	conf := filepath.Join(p.DataDir, "postgresql.conf")
	if err := appendFile(conf, "\ninclude 'testenv.conf'\n"); err != nil {
		return nil, fmt.Errorf("configure PostgreSQL: %w", err)
	}

	// From here on a server may run: make sure it dies with the test binary.
	if p.wd, err = startWatchdog(watchdogPostgresScript, p.DataDir, p.baseDir); err != nil {
		return nil, err
	}

	for attempt := 1; ; attempt++ {
		if p.Port, err = FreePort(); err != nil {
			return nil, err
		}
		if err := p.writeConf(files); err != nil {
			return nil, err
		}
		err = p.start(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, errAddrInUse) || attempt >= portAttempts {
			return nil, err
		}
	}

	if err := p.bootstrap(ctx); err != nil {
		return nil, withLog(err, p.LogPath)
	}
	return p, nil
}

// writeHBA replaces pg_hba.conf. The first matching line wins, so the lines
// for particular roles come before the general ones.
func (p *Postgres) writeHBA() error {
	hba := fmt.Sprintf(`# Written by internal/testenv.
# TYPE     DATABASE USER      ADDRESS        METHOD
local      all      all                      scram-sha-256
hostnossl  all      %[1]s  127.0.0.1/32   reject
hostssl    all      %[1]s  127.0.0.1/32   scram-sha-256
host       all      %[2]s  127.0.0.1/32   md5
host       all      all       127.0.0.1/32   scram-sha-256
`, TLSUserName, MD5UserName)
	return p.writeOwned(filepath.Join(p.DataDir, "pg_hba.conf"), hba, 0o600)
}

// writeConf writes testenv.conf, which postgresql.conf includes.
func (p *Postgres) writeConf(files TLSFiles) error {
	var b strings.Builder
	set := func(name, value string) {
		fmt.Fprintf(&b, "%s = '%s'\n", name, strings.ReplaceAll(value, "'", "''"))
	}
	b.WriteString("# Written by internal/testenv.\n")
	set("listen_addresses", p.Host)
	set("port", strconv.Itoa(p.Port))
	set("unix_socket_directories", p.SocketDir)
	set("ssl", "on")
	set("ssl_cert_file", files.CertFile)
	set("ssl_key_file", files.KeyFile)
	set("password_encryption", "scram-sha-256")
	// Durability is of no use to a throwaway cluster; speed is.
	set("fsync", "off")
	set("synchronous_commit", "off")
	set("full_page_writes", "off")
	// Several clusters may run at once on a small machine.
	set("shared_buffers", "32MB")
	set("max_wal_size", "256MB")
	for _, s := range p.settings {
		set(s[0], s[1])
	}
	return p.writeOwned(filepath.Join(p.DataDir, "testenv.conf"), b.String(), 0o600)
}

func (p *Postgres) writeOwned(path, content string, mode os.FileMode) error {
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		return fmt.Errorf("configure PostgreSQL: %w", err)
	}
	if p.cred != nil {
		if err := os.Chown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return fmt.Errorf("configure PostgreSQL: %w", err)
		}
	}
	return nil
}

// errAddrInUse marks a start that failed because the port was taken.
var errAddrInUse = errors.New("port already in use")

// start runs pg_ctl start and records the postmaster's PID. The caller holds
// p.mu or owns p exclusively.
func (p *Postgres) start(ctx context.Context) error {
	logStart := fileSize(p.LogPath)
	out, err := p.pgCommand(ctx, "pg_ctl", "-D", p.DataDir, "-l", p.LogPath, "-w", "-t", "30", "-s", "start").CombinedOutput()
	if err != nil {
		// pg_ctl may give up while the postmaster still runs. The PID file
		// may also be stale, from a postmaster killed earlier, and its PID
		// reused: kill only a postgres process.
		if pid, perr := p.readPID(); perr == nil && processName(pid) == "postgres" {
			_ = terminate(pid, syscall.SIGQUIT, 2*time.Second)
		}
		err = fmt.Errorf("start PostgreSQL on %s: pg_ctl: %w: %s", p.Addr(), err, bytes.TrimSpace(out))
		if log := readFrom(p.LogPath, logStart); strings.Contains(log, "Address already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return withLog(err, p.LogPath)
	}
	pid, err := p.readPID()
	if err != nil {
		return withLog(fmt.Errorf("PostgreSQL started but its PID is unknown: %w", err), p.LogPath)
	}
	p.pid = pid
	return nil
}

// readPID reads the postmaster's PID from postmaster.pid.
func (p *Postgres) readPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(p.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad postmaster.pid: %q", line)
	}
	return pid, nil
}

// bootstrap creates the test roles and the app database.
func (p *Postgres) bootstrap(ctx context.Context) error {
	stmts := []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", SCRAMUserName, p.SCRAMUser.Password),
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", TLSUserName, p.TLSUser.Password),
		// The session setting decides how the password is stored: MD5 here.
		fmt.Sprintf("SET password_encryption = 'md5'; CREATE ROLE %s LOGIN PASSWORD '%s'", MD5UserName, p.MD5User.Password),
	}
	if err := p.exec(ctx, "postgres", stmts...); err != nil {
		return fmt.Errorf("create test roles: %w", err)
	}
	return p.createDatabase(ctx, AppDatabase)
}

// exec runs each statement as the superuser in db, each in its own implicit
// transaction (CREATE DATABASE refuses to run inside a transaction block).
func (p *Postgres) exec(ctx context.Context, db string, stmts ...string) error {
	conn, err := pgconn.Connect(ctx, p.SuperURL(db))
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL as %s: %w", SuperUserName, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s).ReadAll(); err != nil {
			return fmt.Errorf("%s: %w", redact(s), err)
		}
	}
	return nil
}

var passwordLiteral = regexp.MustCompile(`PASSWORD '[^']*'`)

// redact hides passwords in a statement shown in an error.
func redact(stmt string) string {
	return passwordLiteral.ReplaceAllString(stmt, "PASSWORD '…'")
}

// validDBName matches the database names CreateDatabase accepts: they need no
// quoting and fit in PostgreSQL's 63-byte identifiers.
var validDBName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (p *Postgres) createDatabase(ctx context.Context, name string) error {
	if !validDBName.MatchString(name) {
		return fmt.Errorf("invalid database name %q: use 1 to 63 of a-z, 0-9 and _, not starting with a digit", name)
	}
	roles := strings.Join([]string{SCRAMUserName, MD5UserName, TLSUserName}, ", ")
	if err := p.exec(ctx, "postgres",
		fmt.Sprintf(`CREATE DATABASE "%s" OWNER %s`, name, SuperUserName),
		fmt.Sprintf(`GRANT CONNECT ON DATABASE "%s" TO %s`, name, roles),
	); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	// Since PostgreSQL 15 only the database owner may create in public.
	if err := p.exec(ctx, name, fmt.Sprintf(`GRANT USAGE, CREATE ON SCHEMA public TO %s`, roles)); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// Database is a database of its own in a cluster.
type Database struct {
	Cluster *Postgres
	Name    string
}

// SuperURL returns a URL for the superuser in this database, over TLS that
// verifies the server.
func (d Database) SuperURL() string { return d.Cluster.SuperURL(d.Name) }

// URL returns a URL for role r in this database; see Postgres.URL.
func (d Database) URL(r Role, sslmode string) string {
	return d.Cluster.URL(r.User, r.Password, d.Name, sslmode)
}

// CreateDatabase creates the database name (a-z, 0-9 and _), owned by
// postgres, that the three test roles may connect to and create objects in.
// It fails the test on error.
func (p *Postgres) CreateDatabase(t testing.TB, name string) Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := p.createDatabase(ctx, name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return Database{Cluster: p, Name: name}
}

// Roles returns the three test roles: SCRAMUser, MD5User and TLSUser.
func (p *Postgres) Roles() []Role { return []Role{p.SCRAMUser, p.MD5User, p.TLSUser} }

// Addr returns host:port.
func (p *Postgres) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// URL returns a postgres:// URL for user and password in db. sslmode is one
// of libpq's modes (disable, require, verify-ca, verify-full...); empty means
// verify-full. Unless sslmode is disable, the URL names CAFile as sslrootcert
// so that verification trusts the test CA.
func (p *Postgres) URL(user, password, db, sslmode string) string {
	if sslmode == "" {
		sslmode = "verify-full"
	}
	q := url.Values{}
	q.Set("sslmode", sslmode)
	if sslmode != "disable" {
		q.Set("sslrootcert", p.CAFile)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     p.Addr(),
		Path:     "/" + db,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// SuperURL returns a URL for the superuser in db, over TLS that verifies the
// server.
func (p *Postgres) SuperURL(db string) string {
	return p.URL(SuperUserName, p.SuperPassword, db, "verify-full")
}

// PID returns the postmaster's process ID, or 0 when it is stopped.
func (p *Postgres) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// Stop stops the server at once (pg_ctl -m immediate, as in a crash), and
// kills it by PID if it is still alive after that. It keeps the data
// directory and the port for Start. Stopping a stopped server does nothing.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked()
}

func (p *Postgres) stopLocked() error {
	if p.pid == 0 {
		return nil
	}
	pid := p.pid
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	out, stopErr := p.pgCommand(ctx, "pg_ctl", "-D", p.DataDir, "-m", "immediate", "-w", "-t", "10", "-s", "stop").CombinedOutput()
	// Whatever pg_ctl said, make sure by PID. The postmaster leads its own
	// process group (pg_ctl calls setsid), so its backends go with it.
	if processName(pid) != "postgres" {
		p.pid = 0 // gone, and the PID perhaps already reused
		return nil
	}
	if err := terminate(pid, syscall.SIGQUIT, 2*time.Second); err != nil {
		return fmt.Errorf("stop PostgreSQL (pid %d): %w (pg_ctl: %v %s)", pid, err, stopErr, bytes.TrimSpace(out))
	}
	p.pid = 0
	return nil
}

// Start starts a stopped server again on the same port with the same data,
// as after an outage. Starting a running server does nothing.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pid != 0 {
		return nil
	}
	if p.baseDir == "" {
		return errors.New("start PostgreSQL: the cluster was removed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	return p.start(ctx)
}

// close stops the server, disarms the watchdog and removes every file.
func (p *Postgres) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.stopLocked()
	p.wd.disarm()
	p.wd = nil
	if err == nil && p.baseDir != "" {
		err = os.RemoveAll(p.baseDir)
		p.baseDir = ""
	}
	return err
}

// pgCommand returns a command that runs a PostgreSQL program as the postgres
// OS user (when testenv runs as root) with a clean environment: PGPORT and
// the like from the caller's environment must not leak into the cluster.
func (p *Postgres) pgCommand(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, prog), args...)
	cmd.Dir = p.baseDir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C.UTF-8", "HOME=" + p.baseDir}
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func lookupUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("look up the %s OS user (install Debian's postgresql-15, which creates it): %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("look up the %s OS user: %w", name, err)
	}
	return uid, gid, nil
}

// tempParent returns the directory for server files: os.TempDir() if every
// directory on its path can be entered by other users (the postgres user
// must reach its files), else /tmp.
func tempParent() string {
	dir := os.TempDir()
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil || info.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if d == "/" {
			return dir
		}
	}
}

func appendFile(path, content string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}

// readFrom returns the content of path from offset on.
func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// shared is the cluster of SharedPostgres: one per test binary.
var shared struct {
	mu      sync.Mutex
	started bool
	pg      *Postgres
	err     error
	seq     int
}

// SharedPostgres returns a fresh, empty database in a cluster shared by all
// tests of the test binary, for tests that just need a database. The cluster
// starts on first use; the database is dropped when t ends. Tests must not
// stop or reconfigure the shared cluster: use StartPostgres for that.
//
// Call CleanupShared from TestMain to stop the cluster when the tests end:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		testenv.CleanupShared()
//		os.Exit(code)
//	}
//
// Without it the cluster is still stopped, a moment after the test binary
// exits, by a watchdog process that notices the exit.
func SharedPostgres(t testing.TB) Database {
	t.Helper()
	shared.mu.Lock()
	if !shared.started {
		shared.started = true
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		shared.pg, shared.err = startPostgres(ctx)
		cancel()
	}
	pg, err := shared.pg, shared.err
	shared.seq++
	name := uniqueDBName(t.Name(), shared.seq)
	shared.mu.Unlock()

	// A failed start is remembered, not retried for every test.
	Require(t, "PostgreSQL (shared cluster)", err)
	db := pg.CreateDatabase(t, name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := pg.exec(ctx, "postgres", fmt.Sprintf(`DROP DATABASE IF EXISTS "%s" WITH (FORCE)`, name)); err != nil {
			t.Logf("testenv: drop shared database %s: %v", name, err)
		}
	})
	return db
}

// CleanupShared stops the shared cluster of SharedPostgres, if it was
// started, and removes its files. Call it from TestMain after m.Run.
func CleanupShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var err error
	if shared.pg != nil {
		err = shared.pg.close()
	}
	shared.started, shared.pg, shared.err = false, nil, nil
	return err
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// uniqueDBName makes a database name from a test name and a sequence number.
func uniqueDBName(testName string, seq int) string {
	base := nonIdent.ReplaceAllString(strings.ToLower(testName), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	return fmt.Sprintf("t_%s_%d", strings.Trim(base, "_"), seq)
}
