package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// airlock is Airlock as a user deploys it, every part the real binary: a
// server with the embedded store, one gateway that reaches the cluster, and
// `airlock db access` on the bench account.
type airlock struct {
	Bin       string
	Build     string // where Bin comes from, for the report
	URL       string // the server
	CAFile    string // the server's TLS CA, when it serves HTTPS
	ConfigDir string // the admin's CLI configuration
	Project   string
	// AccessURL is what `airlock db access` printed: the local proxy.
	AccessURL string
	// MongoAccessURL is what `airlock db access` on the MongoDB account
	// printed; empty without the MongoDB measurement.
	MongoAccessURL string

	Server, Gateway, Access *proc
	// MongoAccess is `airlock db access` on the MongoDB account.
	MongoAccess *proc

	e       *environment
	dir     string
	starts  int
	httpCli *http.Client
}

const (
	adminEmail    = "bench@example.com"
	resourceName  = "bench-db"
	accountName   = "bench"
	gatewayName   = "bench-gw"
	accessTimeout = 60 * time.Second
)

// accessURLLine is the URL line `airlock db access` prints for PostgreSQL,
// mongoAccessURLLine the one for MongoDB.
var (
	accessURLLine      = regexp.MustCompile(`^postgres://\S+@127\.0\.0\.1:\d+/\S+\?sslmode=disable$`)
	mongoAccessURLLine = regexp.MustCompile(`^mongodb://127\.0\.0\.1:\d+/\?directConnection=true$`)
)

// buildAirlock compiles the binary from this module into dir.
func buildAirlock(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "airlock")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/airlockpam/airlock/cmd/airlock")
	if _, err := runCmd(cmd); err != nil {
		return "", fmt.Errorf("build airlock (run the harness from inside the airlock module): %w", err)
	}
	return bin, nil
}

// sourceRevision describes the source tree the binary was built from: the
// commit, and whether files differ from it.
func sourceRevision(ctx context.Context) string {
	dir, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "this module"
	}
	git := func(args ...string) string {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", strings.TrimSpace(string(dir))}, args...)...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	rev := git("rev-parse", "--short", "HEAD")
	if rev == "" {
		return "this module (not a git checkout)"
	}
	if git("status", "--porcelain") != "" {
		return "commit " + rev + " plus uncommitted changes"
	}
	return "commit " + rev
}

// startAirlock builds and starts the server and the gateway, registers the
// cluster as a resource with the bench account, and starts `airlock db
// access` for the benchmark runs.
func (e *environment) startAirlock(ctx context.Context, pg *postgres) (*airlock, error) {
	a := &airlock{e: e, dir: filepath.Join(e.work, "airlock"), httpCli: &http.Client{Timeout: 5 * time.Second}}
	if err := os.Mkdir(a.dir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if e.cfg.AirlockBin != "" {
		a.Bin = e.cfg.AirlockBin
		a.Build = "prebuilt binary (-airlock-bin)"
	} else {
		e.logf("building airlock")
		if a.Bin, err = buildAirlock(ctx, a.dir); err != nil {
			return nil, err
		}
		a.Build = "built from " + sourceRevision(ctx)
	}
	a.ConfigDir = filepath.Join(a.dir, "cli")
	rootKey, err := a.output(ctx, "", "keygen")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := []string{"server", "--listen", addr, "--data-dir", filepath.Join(a.dir, "server")}
	args = append(args, a.debugArgs(0)...)
	scheme := "http"
	if e.cfg.ServerTLS {
		scheme = "https"
		certFile, keyFile, pool, err := writeServerCert(a.dir)
		if err != nil {
			return nil, err
		}
		a.CAFile = filepath.Join(a.dir, "ca.pem")
		args = append(args, "--tls-cert", certFile, "--tls-key", keyFile)
		a.httpCli.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	a.URL = scheme + "://" + addr
	adminPassword := randomHex(12)
	cmd := exec.Command(a.Bin, args...)
	cmd.Env = append(os.Environ(), "AIRLOCK_ROOT_KEY="+strings.TrimSpace(rootKey),
		"AIRLOCK_BOOTSTRAP_EMAIL="+adminEmail, "AIRLOCK_BOOTSTRAP_PASSWORD="+adminPassword)
	e.logf("starting airlock server on %s", a.URL)
	if a.Server, err = e.procs.start("airlock server", cmd, filepath.Join(e.work, "airlock-server.log"), startOptions{StopSig: syscall.SIGTERM}); err != nil {
		return nil, err
	}
	if err := a.waitReady(ctx); err != nil {
		return nil, err
	}

	login := []string{"login", "--domain", a.URL, "--email", adminEmail, "--password-stdin"}
	if a.CAFile != "" {
		login = append(login, "--ca-file", a.CAFile)
	}
	if _, err := a.output(ctx, adminPassword, login...); err != nil {
		return nil, err
	}
	var gw struct {
		EnrollmentToken string `json:"enrollmentToken"`
	}
	if err := a.json(ctx, &gw, "gateways", "create", gatewayName); err != nil {
		return nil, err
	}
	// The databases of the benchmark listen on loopback, which a gateway's
	// default target policy refuses.
	gwArgs := []string{"gateway", "--domain", a.URL, "--token", gw.EnrollmentToken, "--data-dir", filepath.Join(a.dir, "gateway"),
		"--allow-targets", "127.0.0.0/8"}
	gwArgs = append(gwArgs, a.debugArgs(1)...)
	if a.CAFile != "" {
		gwArgs = append(gwArgs, "--ca-file", a.CAFile)
	}
	e.logf("starting airlock gateway")
	if a.Gateway, err = e.procs.start("airlock gateway", a.command(gwArgs...), filepath.Join(e.work, "airlock-gateway.log"), startOptions{StopSig: syscall.SIGTERM}); err != nil {
		return nil, err
	}
	if err := a.waitGateway(ctx); err != nil {
		return nil, err
	}

	project, err := a.output(ctx, "", "projects", "create", "bench")
	if err != nil {
		return nil, err
	}
	a.Project = strings.TrimSpace(project)
	if _, err := a.output(ctx, "", "resources", "create", "postgres", "--project-id", a.Project, "--name", resourceName,
		"--gateway", gatewayName, "--host", "127.0.0.1", "--port", strconv.Itoa(pg.Port), "--database", pg.Database,
		"--ssl-enabled=false"); err != nil {
		return nil, err
	}
	if _, err := a.output(ctx, pg.Password, "accounts", "create", "--project-id", a.Project, "--resource", resourceName,
		"--name", accountName, "--username", pg.User, "--password-stdin"); err != nil {
		return nil, err
	}
	var took time.Duration
	a.Access, a.AccessURL, took, err = a.startAccess(ctx, resourceName, accountName, accessURLLine)
	if err != nil {
		return nil, err
	}
	e.logf("airlock db access listening: %s (session start %s)", a.AccessURL, took.Round(time.Millisecond))
	return a, nil
}

// debugArgs returns the --debug-addr flag of the process at offset from
// -debug-port (0 the server, 1 the gateway, 2 the PostgreSQL `db access`),
// or nothing without -debug-port.
func (a *airlock) debugArgs(offset int) []string {
	if a.e.cfg.DebugPort == 0 {
		return nil
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.e.cfg.DebugPort+offset))
	a.e.logf("Go profiles of %s: http://%s/debug/pprof/", []string{"the server", "the gateway", "db access"}[offset], addr)
	return []string{"--debug-addr", addr}
}

// command returns `airlock args...` run as the admin.
func (a *airlock) command(args ...string) *exec.Cmd {
	cmd := exec.Command(a.Bin, args...)
	cmd.Env = append(os.Environ(), "AIRLOCK_CONFIG_DIR="+a.ConfigDir)
	return cmd
}

// output runs a short airlock command with stdin and returns its stdout.
func (a *airlock) output(ctx context.Context, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := a.command(args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := startWithContext(ctx, cmd); err != nil {
		return "", fmt.Errorf("airlock %s: %w\n%s", strings.Join(args[:min(2, len(args))], " "), err, tailString(errb.String(), 2000))
	}
	return out.String(), nil
}

// startWithContext runs cmd, killing it if ctx ends first.
func startWithContext(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
}

// json runs an airlock command with --output json and decodes its answer.
func (a *airlock) json(ctx context.Context, v any, args ...string) error {
	out, err := a.output(ctx, "", append(args, "--output", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("airlock %s: decoding %q: %w", strings.Join(args, " "), tailString(out, 500), err)
	}
	return nil
}

func (a *airlock) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/readyz", nil)
		resp, err := a.httpCli.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz answered %s", resp.Status)
		}
		select {
		case <-a.Server.Done():
			return fmt.Errorf("the airlock server exited: %v", a.Server.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("the airlock server at %s was not ready within 30 s: %w", a.URL, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *airlock) waitGateway(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var gs []struct {
			Name   string `json:"name"`
			Online bool   `json:"online"`
		}
		if err := a.json(ctx, &gs, "gateways", "list"); err != nil {
			return err
		}
		for _, g := range gs {
			if g.Name == gatewayName && g.Online {
				return nil
			}
		}
		if a.Gateway.Exited() {
			return fmt.Errorf("the airlock gateway exited: %v", a.Gateway.waitErr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("the airlock gateway did not come online within 30 s")
}

// startAccess starts `airlock db access` on an account of a resource and
// returns the process, its URL (the stdout line that matches urlLine), and
// the time from starting the process to the URL line.
func (a *airlock) startAccess(ctx context.Context, resource, account string, urlLine *regexp.Regexp) (*proc, string, time.Duration, error) {
	a.starts++
	args := []string{"db", "access", "--project-id", a.Project, "--resource", resource, "--account", account,
		"--duration", "2h", "--domain", a.URL}
	if a.starts == 1 {
		args = append(args, a.debugArgs(2)...) // the first: the PostgreSQL access the runs use
	}
	cmd := a.command(args...)
	logPath := filepath.Join(a.e.work, fmt.Sprintf("airlock-db-access-%d.log", a.starts))
	start := time.Now()
	p, err := a.e.procs.start("airlock db access", cmd, logPath, startOptions{StopSig: syscall.SIGINT, WantLines: true})
	if err != nil {
		return nil, "", 0, err
	}
	timeout := time.NewTimer(accessTimeout)
	defer timeout.Stop()
	for {
		select {
		case l, ok := <-p.Lines:
			if !ok {
				<-p.Done()
				return nil, "", 0, fmt.Errorf("airlock db access exited before printing a URL (%v):\n%s", p.waitErr, p.tail(20))
			}
			if urlLine.MatchString(l) {
				return p, l, time.Since(start), nil
			}
		case <-timeout.C:
			p.stop(5 * time.Second)
			return nil, "", 0, fmt.Errorf("airlock db access printed no URL within %s:\n%s", accessTimeout, p.tail(20))
		case <-ctx.Done():
			p.stop(5 * time.Second)
			return nil, "", 0, ctx.Err()
		}
	}
}

// endAccess ends a session as a user does, with Ctrl+C, and waits for the
// CLI to exit.
func endAccess(p *proc) error {
	_ = syscall.Kill(p.PID(), syscall.SIGINT)
	select {
	case <-p.Done():
		if p.waitErr != nil {
			return fmt.Errorf("airlock db access after Ctrl+C: %v\n%s", p.waitErr, p.tail(10))
		}
		return nil
	case <-time.After(20 * time.Second):
		p.stop(time.Second)
		return errors.New("airlock db access did not exit within 20 s of Ctrl+C")
	}
}

// writeServerCert writes a CA (ca.pem) and a certificate for 127.0.0.1 that
// it signed, and returns the certificate and key files and the CA as a pool.
func writeServerCert(dir string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "airlock bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER}, {certFile, "CERTIFICATE", der}, {keyFile, "PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return "", "", nil, err
		}
	}
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	return certFile, keyFile, pool, nil
}
