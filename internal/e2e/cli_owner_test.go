package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestCLIProxyServesOnlyItsOwner: another OS user (nobody) is refused by
// the proxy with the reason in psql's own output, and never reaches the
// database, while the owner's psql works; the proxy warns about it.
func TestCLIProxyServesOnlyItsOwner(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")

	own := psql(t, false, url, "SELECT 'owner-was-here'")
	if own.Code != 0 || !strings.Contains(own.Out, "owner-was-here") {
		t.Fatalf("the owner's psql: exit %d: %s", own.Code, own.Out)
	}
	other := psql(t, true, url, "INSERT INTO items VALUES (666, 'nobody-was-here')")
	if other.Code == 0 {
		t.Fatalf("nobody's psql succeeded: %s", other.Out)
	}
	for _, want := range []string{"FATAL", "airlock: this proxy serves only root (uid 0), who started `airlock db access`; you are nobody (uid 65534)"} {
		if !strings.Contains(other.Out, want) {
			t.Errorf("nobody's psql output lacks %q:\n%s", want, other.Out)
		}
	}
	waitStderr(t, p, regexp.MustCompile(`Warning: refused a connection from nobody \(uid 65534\): this proxy serves only root \(uid 0\)`), 10*time.Second)

	// The owner still works after the refusal, and nobody's statement
	// never ran.
	own = psql(t, false, url, "SELECT count(*) FROM items WHERE id = 666")
	if own.Code != 0 || strings.TrimSpace(own.Out) != "0" {
		t.Fatalf("after the refusal: exit %d: %q", own.Code, own.Out)
	}
	if p.Exited() {
		t.Fatalf("db access exited: %s", p.Stderr())
	}
}

// TestCLIProxyAllowOtherLocalUsers: the explicit opt-out lets nobody in,
// with a warning.
func TestCLIProxyAllowOtherLocalUsers(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app", "--allow-other-local-users")
	waitStderr(t, p, regexp.MustCompile(`Warning: --allow-other-local-users is set`), 10*time.Second)
	if strings.Contains(p.Stdout(), "Only your OS user") {
		t.Fatalf("with the opt-out the proxy claims to serve only its owner:\n%s", p.Stdout())
	}
	if r := psql(t, true, url, "SELECT 'nobody-allowed'"); r.Code != 0 || !strings.Contains(r.Out, "nobody-allowed") {
		t.Fatalf("nobody's psql with the opt-out: exit %d: %s", r.Code, r.Out)
	}
}

var socketLine = regexp.MustCompile(`^host=(\S+) port=(\d+) user=(\S+) dbname=(\S+)$`)

// TestCLIUnixSocket: --unix-socket DIR serves psql through
// DIR/.s.PGSQL.<port> with mode 0600 (nobody cannot even connect), and the
// file is removed when the session ends.
func TestCLIUnixSocket(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	// A directory every user may enter, so that only the socket's own
	// mode keeps nobody out.
	dir, err := os.MkdirTemp("", "airlock-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := w.admin.Start("db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "app",
		"--unix-socket", dir, "--port", "6543")
	line := p.WaitLine(t, socketLine, time.Minute)
	m := socketLine.FindStringSubmatch(line)
	if m[1] != dir || m[2] != "6543" || m[3] != w.pg.SCRAMUser.User || m[4] != testenv.AppDatabase {
		t.Fatalf("connection line %q", line)
	}
	sock := filepath.Join(dir, ".s.PGSQL.6543")
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v %v", sock, fi, err)
	}
	if strings.Contains(p.Stdout(), "127.0.0.1") {
		t.Fatalf("with --unix-socket the proxy printed a TCP address:\n%s", p.Stdout())
	}

	if r := psql(t, false, line, "SELECT 'through-the-socket'"); r.Code != 0 || !strings.Contains(r.Out, "through-the-socket") {
		t.Fatalf("psql %q: exit %d: %s", line, r.Code, r.Out)
	}
	if r := psql(t, true, line, "SELECT 1"); r.Code == 0 || !strings.Contains(r.Out, "Permission denied") {
		t.Fatalf("nobody's psql through the socket: exit %d: %s", r.Code, r.Out)
	}

	p.Stop(syscall.SIGINT)
	if code := p.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("db access exited %d: %s", code, p.Stderr())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the socket file outlived the session: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files left in the socket directory: %v", entries)
	}
}

var mongoSocketLine = regexp.MustCompile(`^mongodb://(%2F\S+\.sock)/\?directConnection=true$`)

// TestCLIMongoDBOwnerAndUnixSocket: on a MongoDB resource, another OS
// user's hello gets an Unauthorized error reply from the proxy, the
// owner's driver works over TCP, and --unix-socket serves the driver
// through DIR/mongodb-<port>.sock.
func TestCLIMongoDBOwnerAndUnixSocket(t *testing.T) {
	fdb := testenv.StartFerretDB(t)
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	var gw struct{ EnrollmentToken string }
	admin.JSON(&gw, "", "gateways", "create", "dc1")
	e2e.Start(t, nil, "gateway", "--domain", srv.URL, "--token", gw.EnrollmentToken, "--data-dir", t.TempDir())
	project := strings.TrimSpace(admin.Must("", "projects", "create", "mongo"))
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(admin.Must("", "gateways", "list"), "online") {
		if time.Now().After(deadline) {
			t.Fatal("gateway not online")
		}
		time.Sleep(200 * time.Millisecond)
	}
	admin.Must("", "resources", "create", "mongodb", "--project-id", project, "--name", "docs", "--gateway", "dc1",
		"--connection-string", fmt.Sprintf("mongodb://127.0.0.1:%d/", fdb.Port), "--ssl-enabled=false")
	admin.Must(fdb.SCRAM256User.Password, "accounts", "create", "--project-id", project, "--resource", "docs", "--name", "app",
		"--username", fdb.SCRAM256User.User, "--password-stdin")
	access := []string{"db", "access", "--project-id", project, "--resource", "docs", "--account", "app"}

	p := admin.Start(access...)
	tcpURL := p.WaitLine(t, mongoURLLine, time.Minute)
	ping := func(uri string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := mongo.Connect(options.Client().ApplyURI(uri))
		if err != nil {
			return err
		}
		defer c.Disconnect(context.Background())
		_, err = c.Database("test").Collection("owner").InsertOne(ctx, bson.D{{Key: "by", Value: "owner"}})
		return err
	}
	if err := ping(tcpURL); err != nil {
		t.Fatalf("the owner's driver: %v", err)
	}

	// nobody sends an OP_MSG hello with bash and reads the reply.
	hello := bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendString("$db", "admin").Build()
	idx, msg := wiremessage.AppendHeaderStart(nil, 7, 0, wiremessage.OpMsg)
	msg = wiremessage.AppendMsgFlags(msg, 0)
	msg = wiremessage.AppendMsgSectionType(msg, wiremessage.SingleDocument)
	msg = append(msg, hello...)
	msg = bsoncore.UpdateLength(msg, idx, int32(len(msg[idx:])))
	port := tcpURL[strings.LastIndex(tcpURL, ":")+1 : strings.Index(tcpURL, "/?")]
	cmd := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-c",
		"exec 3<>/dev/tcp/127.0.0.1/"+port+" && cat >&3 && timeout 20 cat <&3")
	cmd.Stdin = bytes.NewReader(msg)
	cmd.Dir = "/"
	reply, err := cmd.Output()
	if err != nil {
		t.Fatalf("nobody's hello: %v (%d bytes)", err, len(reply))
	}
	_, _, responseTo, op, rem, ok := wiremessage.ReadHeader(reply)
	if !ok || responseTo != 7 || op != wiremessage.OpMsg || len(rem) < 5 {
		t.Fatalf("reply to nobody's hello: %x", reply)
	}
	doc := bsoncore.Document(rem[5:]) // flags, section kind
	code, _ := doc.Lookup("code").Int32OK()
	errmsg, _ := doc.Lookup("errmsg").StringValueOK()
	if code != 13 || !strings.Contains(errmsg, "airlock: this proxy serves only root (uid 0), who started `airlock db access`; you are nobody (uid 65534)") {
		t.Fatalf("reply to nobody: %s", doc)
	}
	waitStderr(t, p, regexp.MustCompile(`refused a connection from nobody`), 10*time.Second)
	p.Stop(syscall.SIGINT)

	dir := t.TempDir()
	p = admin.Start(append(access, "--unix-socket", dir)...)
	line := p.WaitLine(t, mongoSocketLine, time.Minute)
	sock := filepath.Join(dir, "mongodb-27017.sock")
	if m := mongoSocketLine.FindStringSubmatch(line); !strings.EqualFold(m[1], strings.ReplaceAll(sock, "/", "%2F")) {
		t.Fatalf("socket URL %q, want the socket %s", line, sock)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v %v", sock, fi, err)
	}
	if err := ping(line); err != nil {
		t.Fatalf("the driver through the socket: %v", err)
	}
}
