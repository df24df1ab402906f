package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// MongoDB authentication mechanisms of the FerretDB users.
const (
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA1   = "SCRAM-SHA-1"
)

// User names created in every FerretDB, all in the admin database.
const (
	FerretAdminName  = "admin"         // the setup user
	SCRAM256UserName = "scram256_user" // may authenticate only with SCRAM-SHA-256
	SCRAM1UserName   = "scram1_user"   // may authenticate only with SCRAM-SHA-1
	mongoAuthSource  = "admin"
)

// MongoUser is a user of a MongoDB-protocol server and how it authenticates.
type MongoUser struct {
	User      string
	Password  string
	Mechanism string // MechanismSCRAMSHA256 or MechanismSCRAMSHA1
	Source    string // the database that holds the user: "admin"
}

// Credential returns the driver credential for u.
func (u MongoUser) Credential() options.Credential {
	return options.Credential{
		AuthMechanism: u.Mechanism,
		AuthSource:    u.Source,
		Username:      u.User,
		Password:      u.Password,
	}
}

// FerretDB is a FerretDB v1 server (MongoDB wire protocol, data in SQLite)
// started for a test, listening on 127.0.0.1 at a free port, with TLS if
// started WithTLS.
type FerretDB struct {
	Host   string // always 127.0.0.1
	Port   int
	TLS    bool   // the port speaks TLS only
	CA     *CA    // issued the server certificate; nil without TLS
	CAFile string // CA's certificate as a file; empty without TLS
	// Admin is the setup user, created with SCRAM-SHA-1 and SCRAM-SHA-256;
	// it authenticates with SCRAM-SHA-256.
	Admin        MongoUser
	SCRAM256User MongoUser // scram256_user, mechanisms ["SCRAM-SHA-256"]
	SCRAM1User   MongoUser // scram1_user, mechanisms ["SCRAM-SHA-1"]
	DataDir      string    // SQLite files and FerretDB's state
	LogPath      string

	managed
}

// FerretOption changes how StartFerretDB sets up a server.
type FerretOption func(*ferretConfig)

type ferretConfig struct {
	tls bool
}

// WithTLS makes FerretDB listen with TLS only, with a certificate for
// 127.0.0.1 and localhost from a fresh CA.
func WithTLS() FerretOption {
	return func(c *ferretConfig) { c.tls = true }
}

// StartFerretDB starts a FerretDB for t, with the users described on
// FerretDB, and stops it by PID when t ends. The binary is built into
// CacheDir on first use (about a minute; scripts/install-test-deps does it
// ahead of the tests). If the server cannot be started, Require decides
// whether t fails or is skipped.
//
// FerretDB v1 authenticates users but does not enforce roles: any
// authenticated user may do anything.
func StartFerretDB(t testing.TB, opts ...FerretOption) *FerretDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout+startTimeout)
	defer cancel()
	bin, err := ensureFerretDB(ctx)
	Require(t, "FerretDB", err)
	if bin.Built {
		t.Logf("testenv: built FerretDB %s in %v into %s", bin.Version, bin.Took.Round(time.Second), bin.Path)
	}
	sctx, scancel := context.WithTimeout(ctx, startTimeout)
	defer scancel()
	f, err := startFerretDB(sctx, bin.Path, opts...)
	Require(t, "FerretDB", err)
	t.Cleanup(func() {
		if err := f.close(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	logOnFailure(t, "FerretDB", f.LogPath)
	return f
}

func startFerretDB(ctx context.Context, bin string, opts ...FerretOption) (_ *FerretDB, err error) {
	var cfg ferretConfig
	for _, o := range opts {
		o(&cfg)
	}
	f := &FerretDB{managed: managed{name: "FerretDB"},
		Host:         "127.0.0.1",
		TLS:          cfg.tls,
		Admin:        MongoUser{FerretAdminName, randomPassword(), MechanismSCRAMSHA256, mongoAuthSource},
		SCRAM256User: MongoUser{SCRAM256UserName, randomPassword(), MechanismSCRAMSHA256, mongoAuthSource},
		SCRAM1User:   MongoUser{SCRAM1UserName, randomPassword(), MechanismSCRAMSHA1, mongoAuthSource},
	}
	if f.baseDir, err = os.MkdirTemp("", "airlock-ferretdb-"); err != nil {
		return nil, fmt.Errorf("create FerretDB directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.close()
		}
	}()
	f.DataDir = filepath.Join(f.baseDir, "data")
	f.LogPath = filepath.Join(f.baseDir, "ferretdb.log")
	if err := os.Mkdir(f.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create FerretDB directory: %w", err)
	}
	var files TLSFiles
	if f.TLS {
		if f.CA, err = newCA(); err != nil {
			return nil, err
		}
		if files, err = f.CA.WriteFiles(f.baseDir, "127.0.0.1", "localhost"); err != nil {
			return nil, err
		}
		f.CAFile = files.CAFile
	}

	for attempt := 1; ; attempt++ {
		if f.Port, err = FreePort(); err != nil {
			return nil, err
		}
		args := []string{
			"--handler=sqlite",
			"--sqlite-url=file:" + f.DataDir + "/",
			"--state-dir=" + f.DataDir,
			"--debug-addr=-",
			"--telemetry=disable",
			"--log-level=error", // warn logs every unsupported command the driver sends
			"--test-enable-new-auth",
			"--setup-database=" + mongoAuthSource,
			"--setup-username=" + f.Admin.User,
			"--setup-password=" + f.Admin.Password,
		}
		if f.TLS {
			args = append(args, "--listen-addr=", "--listen-tls="+f.Addr(),
				"--listen-tls-cert-file="+files.CertFile, "--listen-tls-key-file="+files.KeyFile)
		} else {
			args = append(args, "--listen-addr="+f.Addr())
		}
		logStart := fileSize(f.LogPath)
		if f.proc, err = startProcess(bin, args, f.baseDir, f.LogPath); err != nil {
			return nil, err
		}
		// Logging in as the setup user, whose password is random, proves
		// that the port is this server's and not another's that took it.
		err = waitTCP(ctx, f.Addr(), f.proc.exited)
		if err == nil {
			err = f.waitLogin(ctx)
		}
		if err == nil {
			break
		}
		_ = f.proc.stop(time.Second)
		inUse := strings.Contains(readFrom(f.LogPath, logStart), "address already in use")
		if !inUse || attempt >= portAttempts {
			return nil, withLog(fmt.Errorf("start FerretDB: %w", err), f.LogPath)
		}
	}
	if f.wd, err = startWatchdog(watchdogKillScript, strconv.Itoa(f.proc.pid()), f.baseDir); err != nil {
		return nil, err
	}
	if err := f.createUsers(ctx); err != nil {
		return nil, withLog(fmt.Errorf("set up FerretDB users: %w", err), f.LogPath)
	}
	return f, nil
}

// waitLogin waits until the setup user can log in: FerretDB creates it just
// after it starts listening.
func (f *FerretDB) waitLogin(ctx context.Context) error {
	client, err := mongo.Connect(f.ClientOptions(f.Admin))
	if err != nil {
		return err
	}
	defer client.Disconnect(context.WithoutCancel(ctx))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = client.Ping(pctx, nil)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("log in as %s: %w", f.Admin.User, err)
		case <-f.proc.exited:
			return errors.New("FerretDB exited")
		case <-tick.C:
		}
	}
}

// createUsers creates the test users, as the setup user.
func (f *FerretDB) createUsers(ctx context.Context) error {
	client, err := mongo.Connect(f.ClientOptions(f.Admin))
	if err != nil {
		return err
	}
	defer client.Disconnect(context.WithoutCancel(ctx))
	admin := client.Database(mongoAuthSource)
	for _, u := range []MongoUser{f.SCRAM256User, f.SCRAM1User} {
		cmd := bson.D{
			{Key: "createUser", Value: u.User},
			{Key: "pwd", Value: u.Password},
			{Key: "roles", Value: bson.A{}}, // FerretDB v1 accepts only an empty list
			{Key: "mechanisms", Value: bson.A{u.Mechanism}},
		}
		if err := admin.RunCommand(ctx, cmd).Err(); err != nil {
			return fmt.Errorf("createUser %s with %s: %w", u.User, u.Mechanism, err)
		}
	}
	return nil
}

// Addr returns host:port.
func (f *FerretDB) Addr() string { return net.JoinHostPort(f.Host, strconv.Itoa(f.Port)) }

// URI returns a connection string without credentials:
// mongodb://127.0.0.1:PORT/, plus tls=true and tlsCAFile when the server
// speaks TLS.
func (f *FerretDB) URI() string {
	u := "mongodb://" + f.Addr() + "/"
	if f.TLS {
		u += "?tls=true&tlsCAFile=" + url.QueryEscape(f.CAFile)
	}
	return u
}

// TLSConfig returns a client TLS configuration that trusts the server's CA,
// or nil when the server does not speak TLS.
func (f *FerretDB) TLSConfig() *tls.Config {
	if !f.TLS {
		return nil
	}
	return f.CA.TLSConfig(f.Host)
}

// ClientOptions returns driver options that connect to the server as u. An
// empty MongoUser means no authentication.
func (f *FerretDB) ClientOptions(u MongoUser) *options.ClientOptions {
	o := options.Client().
		ApplyURI("mongodb://" + f.Addr() + "/").
		SetServerSelectionTimeout(10 * time.Second).
		SetConnectTimeout(5 * time.Second)
	if u.User != "" {
		o.SetAuth(u.Credential())
	}
	if f.TLS {
		o.SetTLSConfig(f.TLSConfig())
	}
	return o
}

// PID returns the server's process ID, or 0 when it is stopped.
func (f *FerretDB) PID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc == nil {
		return 0
	}
	select {
	case <-f.proc.exited:
		return 0
	default:
		return f.proc.pid()
	}
}
