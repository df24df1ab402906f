package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestGatewayLogsTheClientAddress: the gateway's log lines about a
// session's connections carry the address of the session's client (its
// `db access`, as the server saw it), not the server's, which relays the
// stream; the session records the same address. The server listens on
// 127.0.0.2, so the gateway sees the server as 127.0.0.2:PORT while the
// CLI's connections to it come from 127.0.0.1.
func TestGatewayLogsTheClientAddress(t *testing.T) {
	_, port, _ := net.SplitHostPort(e2e.FreeAddr(t))
	srv := &e2e.Server{DataDir: t.TempDir(), RootKey: keyring.GenerateRootKey(), AdminEmail: "root@example.com",
		AdminPassword: "root password 123", URL: "http://127.0.0.2:" + port}
	srv.Restart(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	var gw struct{ EnrollmentToken string }
	admin.JSON(&gw, "", "gateways", "create", "dc1")
	gateway := e2e.Start(t, nil, "gateway", "--domain", srv.URL, "--token", gw.EnrollmentToken, "--data-dir", t.TempDir(),
		"--log-level", "debug")
	pg := testenv.StartPostgres(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pg.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	admin.Must("", "projects", "create", "payments")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(admin.Must("", "gateways", "list"), "online") {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not come online")
		}
		time.Sleep(200 * time.Millisecond)
	}
	admin.Must("", "resources", "create", "postgres", "--project-id", "payments", "--name", "main-db", "--gateway", "dc1",
		"--host", "127.0.0.1", "--port", fmt.Sprint(pg.Port), "--database", testenv.AppDatabase, "--ssl-ca-file", caFile)
	admin.Must(pg.SCRAMUser.Password, "accounts", "create", "--project-id", "payments", "--resource", "main-db", "--name", "app",
		"--username", pg.SCRAMUser.User, "--password-stdin")
	p := admin.Start("db", "access", "--project-id", "payments", "--resource", "main-db", "--account", "app")
	url := p.WaitLine(t, urlLine, 60*time.Second)
	id := sessionOf(t, p)

	// A connection that runs a query, and one that closes before its
	// startup packet.
	var one int
	if err := connect(t, url).QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	local := regexp.MustCompile(`@(127\.0\.0\.1:\d+)/`).FindStringSubmatch(url)[1]
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	// The first 8 bytes of a StartupMessage (length, protocol 3.0), which
	// the local proxy passes on to the gateway (it reads them itself to
	// tell TLS from plain), then nothing more.
	if _, err := c.Write([]byte{0, 0, 0, 100, 0, 3, 0, 0}); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// The engine logs both connections, the second at debug level.
	early := regexp.MustCompile(`msg="(?:client closed the connection before its startup packet|could not read the client's startup packet|rejected the client's opening)".* client=(\S+)`)
	deadline = time.Now().Add(20 * time.Second)
	for !early.MatchString(gateway.Stderr()) {
		if time.Now().After(deadline) {
			t.Fatalf("the engine logged no early close:\n%s", gateway.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	logs := gateway.Stderr()
	connected := regexp.MustCompile(`msg="client connected".* session=` + id + ` client=(\S+)`).FindStringSubmatch(logs)
	if connected == nil || connected[1] != "127.0.0.1" {
		t.Errorf("the engine logs the connection as %v, want client=127.0.0.1 (the CLI's):\n%s", connected, logs)
	}
	if got := early.FindStringSubmatch(logs)[1]; got != "127.0.0.1" {
		t.Errorf("the engine logs the early close with client=%s, want the CLI's 127.0.0.1", got)
	}
	if strings.Contains(logs, "client=127.0.0.2") {
		t.Errorf("a gateway log line gives the server's address as the client's:\n%s", logs)
	}
	// The session's row (the API shows it; `sessions show` does not).
	body, _ := json.Marshal(map[string]string{"email": srv.AdminEmail, "password": srv.AdminPassword})
	resp, err := http.Post(srv.URL+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var pair struct{ AccessToken string }
	json.NewDecoder(resp.Body).Decode(&pair)
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/sessions/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+pair.AccessToken)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	var s struct{ ClientAddr string }
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if s.ClientAddr != "127.0.0.1" {
		t.Errorf("the session records client address %q, want 127.0.0.1", s.ClientAddr)
	}
}
