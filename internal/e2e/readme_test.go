package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sys/unix"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// readmeDevURL is the address the README's commands use: `airlock dev`'s
// default. The test runs dev on a free port and puts its URL in its place.
const readmeDevURL = "http://127.0.0.1:8720"

// TestREADME follows the README literally, as a new user would: it runs
// `airlock dev` (the quick start's first command), then every ```sh block
// of the README in order, in one bash, from the repository's root, against
// a real PostgreSQL and FerretDB that the variables the README asks for
// point at. `airlock login` reads the admin's password from a terminal, as
// it would for a person. Each `airlock db access` runs in the background
// until its URL is printed; the test then connects through every URL with a
// real client, and the script ends each access with Ctrl+C (SIGINT), which
// must exit 0. Blocks fenced as ```text are output or synopses and are not
// run.
func TestREADME(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := shellBlocks(string(readme))
	if len(blocks) < 4 {
		t.Fatalf("README has %d ```sh blocks; the quick start, login, PostgreSQL and MongoDB sections should have at least 4", len(blocks))
	}
	// The quick start's two commands: Airlock (run below, on a free port)
	// and the whole test suite (what CI runs: this test is part of it).
	quick := commands(blocks[0])
	if len(quick) != 2 || quick[0] != "go run ./cmd/airlock dev" || quick[1] != "./scripts/test" {
		t.Fatalf("the README's first block should be the two commands `go run ./cmd/airlock dev` and `./scripts/test`, got %q", quick)
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci/run"))
	if err != nil || !strings.Contains(string(ci), "exec ./scripts/test\n") {
		t.Fatalf(".ci/run must run exactly the README's test command ./scripts/test (err %v)", err)
	}

	// The databases the README's variables point at.
	pg := testenv.StartPostgres(t)
	db := pg.CreateDatabase(t, "orders")
	fdb := testenv.StartFerretDB(t, testenv.WithTLS())
	work := t.TempDir()
	pgCA := filepath.Join(work, "db-ca.pem")
	if err := os.WriteFile(pgCA, pg.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	// `airlock dev`, with its state in a fresh directory.
	state := t.TempDir()
	addr := e2e.FreeAddr(t)
	dev := e2e.Start(t, []string{"XDG_STATE_HOME=" + state}, "dev", "--listen", addr)
	pwLine := dev.WaitLine(t, regexp.MustCompile(`^\s+Password:\s+\S+$`), 90*time.Second)
	password := strings.Fields(pwLine)[1]
	devURL := "http://" + addr
	e2e.WaitReady(t, devURL)

	script := readmeScript(blocks[1:], devURL)
	scriptFile := filepath.Join(work, "readme.sh")
	if err := os.WriteFile(scriptFile, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}

	ptm, pts := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", scriptFile)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(work, "config"),
		"READMETEST_DIR="+work,
		"DB_HOST=127.0.0.1", "DB_PORT="+strconv.Itoa(pg.Port), "DB_NAME="+db.Name,
		"DB_USER="+pg.SCRAMUser.User, "DB_PASSWORD="+pg.SCRAMUser.Password, "DB_CA_FILE="+pgCA,
		"MONGO_URI=mongodb://"+fdb.Addr()+"/", "MONGO_CA_FILE="+fdb.CAFile,
		"MONGO_USER="+fdb.SCRAM256User.User, "MONGO_PASSWORD="+fdb.SCRAM256User.Password,
	)
	cmd.Stdin = pts
	var out lockedOutput
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	// The terminal: the password for `login`'s prompt, typed ahead (the
	// terminal keeps the line until login reads it); its echo is drained.
	go io.Copy(io.Discard, ptm)
	if _, err := fmt.Fprintf(ptm, "%s\n", password); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Wait for every block to have run (the accesses keep running).
	ready := filepath.Join(work, "ready")
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the README's commands failed (%v):\n%s", err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Connect through every URL `db access` printed, as the README says.
	urls := readLines(t, filepath.Join(work, "access.urls"))
	var sawPG, sawMongo bool
	for _, u := range urls {
		switch {
		case strings.HasPrefix(u, "postgres://"):
			sawPG = true
			r := psql(t, false, u, "SELECT current_user")
			if r.Code != 0 || strings.TrimSpace(r.Out) != pg.SCRAMUser.User {
				t.Errorf("psql through the README's URL %s: exit %d, %q; want the account's user %s", u, r.Code, r.Out, pg.SCRAMUser.User)
			}
		case strings.HasPrefix(u, "mongodb://"):
			sawMongo = true
			if err := mongoPing(u); err != nil {
				t.Errorf("MongoDB driver through the README's URL %s: %v", u, err)
			}
		default:
			t.Errorf("db access printed an unexpected URL %q", u)
		}
	}
	if !sawPG || !sawMongo {
		t.Errorf("the README's accesses gave URLs %q; want one PostgreSQL and one MongoDB", urls)
	}
	if err := os.WriteFile(filepath.Join(work, "checked"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("the README's commands failed (%v):\n%s", err, out.String())
	}
	if t.Failed() {
		t.Logf("output of the README's commands:\n%s", out.String())
	}
}

// shellBlocks returns the bodies of the ```sh blocks of a Markdown text.
func shellBlocks(md string) []string {
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(strings.NewReader(md))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```sh":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return blocks
}

// commands returns a block's commands, without comments and blank lines.
func commands(block string) []string {
	var cmds []string
	for _, l := range strings.Split(block, "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// readmeScript makes one bash script of the blocks: the README's dev
// address becomes devURL, and each `airlock db access` line runs in the
// background until it prints its URL. At the end the script says it is
// ready, waits until the test has connected, then presses Ctrl+C on each
// access and fails unless each exits 0.
func readmeScript(blocks []string, devURL string) string {
	var b strings.Builder
	b.WriteString(`set -euo pipefail
readme_access() {
  local out="$READMETEST_DIR/access-$RANDOM.out"
  "$@" >"$out" 2>&1 &
  local pid=$! url=""
  echo "$pid $out" >>"$READMETEST_DIR/access.pids"
  for _ in $(seq 600); do
    url=$(grep -m1 -E '^(postgres|mongodb)://' "$out" || true)
    [ -n "$url" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then echo "db access exited early:"; cat "$out"; return 1; fi
    sleep 0.1
  done
  [ -n "$url" ] || { echo "db access printed no URL:"; cat "$out"; return 1; }
  echo "$url" >>"$READMETEST_DIR/access.urls"
  cat "$out"
}
`)
	for i, blk := range blocks {
		fmt.Fprintf(&b, "echo '== README block %d'\n", i+2)
		blk = strings.ReplaceAll(blk, readmeDevURL, devURL)
		for _, line := range strings.SplitAfter(blk, "\n") {
			if strings.HasPrefix(line, "airlock db access ") {
				line = "readme_access " + line
			}
			b.WriteString(line)
		}
	}
	b.WriteString(`touch "$READMETEST_DIR/ready"
while [ ! -e "$READMETEST_DIR/checked" ]; do sleep 0.1; done
while read -r pid out; do
  kill -INT "$pid"
  if ! wait "$pid"; then echo "db access (pid $pid) did not exit 0 after Ctrl+C:"; cat "$out"; exit 1; fi
done <"$READMETEST_DIR/access.pids"
echo '== README done'
`)
	return b.String()
}

// openPTY opens a pseudo-terminal pair: the test writes what a person
// would type to master; slave is the commands' terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("naming the pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pseudo-terminal's slave: %v", err)
	}
	return m, s
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return strings.Fields(string(b))
}

// mongoPing runs a command and a write through a db access URL.
func mongoPing(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := mongo.Connect(options.Client().ApplyURI(url))
	if err != nil {
		return err
	}
	defer c.Disconnect(context.Background())
	if _, err := c.Database("readme").Collection("visits").InsertOne(ctx, bson.D{{Key: "who", Value: "readme"}}); err != nil {
		return err
	}
	n, err := c.Database("readme").Collection("visits").CountDocuments(ctx, bson.D{})
	if err != nil {
		return err
	}
	if n < 1 {
		return fmt.Errorf("counted %d documents after an insert", n)
	}
	return nil
}

// lockedOutput collects a process's output; String may be called while
// the process writes.
type lockedOutput struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *lockedOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *lockedOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
