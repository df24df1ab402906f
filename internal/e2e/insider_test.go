package e2e_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
)

// insRogue is a PostgreSQL server of an attacker's: it asks every client
// for its password in cleartext and keeps every byte it receives.
type insRogue struct {
	ln    net.Listener
	mu    sync.Mutex
	conns int
	got   []byte
}

func insStartRogue(t *testing.T) *insRogue {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &insRogue{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns++
			r.mu.Unlock()
			go r.serve(c)
		}
	}()
	return r
}

func (r *insRogue) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 8192)
	n, _ := c.Read(buf) // SSLRequest or StartupMessage
	r.keep(buf[:n])
	if n == 8 {
		c.Write([]byte("N")) // no TLS here
		n, _ = c.Read(buf)
		r.keep(buf[:n])
	}
	c.Write([]byte{'R', 0, 0, 0, 8, 0, 0, 0, 3}) // AuthenticationCleartextPassword
	for {
		n, err := c.Read(buf)
		r.keep(buf[:n])
		if err != nil {
			return
		}
	}
}

func (r *insRogue) keep(b []byte) {
	r.mu.Lock()
	r.got = append(r.got, b...)
	r.mu.Unlock()
}

func (r *insRogue) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *insRogue) seen() (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns, string(r.got)
}

// TestInsiderRogueEndpoint is the attack through the real binaries: a
// project admin points the resource at a server of their own (which asks
// for the password in cleartext) and touches the account. The change is
// refused with the fix named, nothing changes, the rogue server hears
// nothing, and access keeps working against the real database.
func TestInsiderRogueEndpoint(t *testing.T) {
	w := newWorld(t)
	w.svAccountOn("main-db", "app")
	owner := w.svMember("owner@example.com", "admin")
	rogue := insStartRogue(t)

	for _, change := range [][]string{
		{"--port", fmt.Sprint(rogue.port())},
		{"--host", "localhost"},
		{"--ssl-enabled=false"},
		{"--ssl-reject-unauthorized=false"},
		{"--clear-ssl-ca"},
	} {
		args := append([]string{"resources", "update", "main-db", "--project-id", w.project}, change...)
		_, stderr, code := owner.Run("", args...)
		if code == 0 || !strings.Contains(stderr, "re-enter the passwords of accounts app") || !strings.Contains(stderr, "organization admin") ||
			!strings.Contains(stderr, "--account-password-file") {
			t.Errorf("%v: exit %d: %s", change, code, stderr)
		}
	}
	// Touching the account logs in where it was validated.
	owner.Must(w.pg.SCRAMUser.Password, "accounts", "update", "app", "--project-id", w.project, "--password-stdin")

	var r struct {
		Port                  int
		Host                  string
		SSLEnabled            bool `json:"sslEnabled"`
		SSLRejectUnauthorized bool `json:"sslRejectUnauthorized"`
	}
	owner.JSON(&r, "", "resources", "get", "main-db", "--project-id", w.project)
	if r.Port != w.pg.Port || r.Host != "127.0.0.1" || !r.SSLEnabled || !r.SSLRejectUnauthorized {
		t.Errorf("the resource changed: %+v", r)
	}
	if n, got := rogue.seen(); n != 0 || strings.Contains(got, w.pg.SCRAMUser.Password) {
		t.Fatalf("the rogue server heard %d connections (password captured: %v)", n, strings.Contains(got, w.pg.SCRAMUser.Password))
	}
	p, url, _ := w.svAccessOn(owner, "main-db", "app")
	defer p.Stop(syscall.SIGINT)
	if res := psql(t, false, url, "SELECT 40 + 2"); res.Code != 0 || strings.TrimSpace(res.Out) != "42" {
		t.Errorf("access after the refused change: %+v", res)
	}

	// Re-entering the password moves the endpoint, validated there first:
	// here the same server under another name.
	pwFile := filepath.Join(t.TempDir(), "app.password")
	if err := os.WriteFile(pwFile, []byte(w.pg.SCRAMUser.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	owner.Must("", "resources", "update", "main-db", "--project-id", w.project, "--host", "localhost",
		"--account-password-file", "app="+pwFile)
	owner.JSON(&r, "", "resources", "get", "main-db", "--project-id", w.project)
	if r.Host != "localhost" {
		t.Errorf("a validated change was not saved: %+v", r)
	}
	if n, _ := rogue.seen(); n != 0 {
		t.Fatalf("the rogue server heard %d connections", n)
	}
}

// TestInsiderGatewayProjects: a user's own project cannot name the
// organization's gateway until an organization admin allows it, through
// the real binaries; allowing and disallowing work and the refusal names
// the fix.
func TestInsiderGatewayProjects(t *testing.T) {
	w := newWorld(t)
	pw := "password of mallory@example.com"
	w.admin.Must(pw, "users", "create", "--email", "mallory@example.com", "--password-stdin")
	mallory := e2e.NewUser(t)
	mallory.Login(w.srv, "mallory@example.com", pw)
	own := strings.TrimSpace(mallory.Must("", "projects", "create", "scanner"))
	probe := func(name string) (string, int) {
		_, stderr, code := mallory.Run("", "resources", "create", "postgres", "--project-id", own, "--name", name, "--gateway", "dc1",
			"--host", "127.0.0.1", "--port", "22", "--database", "x")
		return stderr, code
	}
	if stderr, code := probe("probe"); code == 0 || !strings.Contains(stderr, "airlock gateways allow-project") {
		t.Fatalf("a resource on a gateway the project may not use: exit %d: %s", code, stderr)
	}
	if _, stderr, code := mallory.Run("", "gateways", "list"); code == 0 || !strings.Contains(stderr, "organization admins") {
		t.Errorf("a user listed the gateways: exit %d: %s", code, stderr)
	}
	if _, _, code := mallory.Run("", "gateways", "allow-project", "dc1", "--project-id", own); code == 0 {
		t.Errorf("a user allowed their own project")
	}

	w.admin.Must("", "gateways", "allow-project", "dc1", "--project-id", own)
	list := w.admin.Must("", "gateways", "projects", "dc1")
	if !strings.Contains(list, "scanner") || !strings.Contains(list, "payments") {
		t.Errorf("the gateway's projects:\n%s", list)
	}
	if stderr, code := probe("probe"); code != 0 {
		t.Fatalf("a resource of an allowed project: exit %d: %s", code, stderr)
	}
	w.admin.Must("", "gateways", "disallow-project", "dc1", "--project-id", own)
	if stderr, code := probe("probe-2"); code == 0 || !strings.Contains(stderr, "allow-project") {
		t.Errorf("a resource after the project was disallowed: exit %d: %s", code, stderr)
	}
	// The existing project keeps its gateway.
	if list := w.admin.Must("", "gateways", "projects", "dc1"); strings.Contains(list, "scanner") || !strings.Contains(list, "payments") {
		t.Errorf("after disallowing:\n%s", list)
	}
}
