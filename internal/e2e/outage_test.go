package e2e_test

import (
	"context"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
)

// TestServerOutageEndsNoSession: the server process dies and stays down
// for 3 minutes, longer than its GatewayLostAfter and ClientLostAfter (the
// 2-minute defaults: real timing), while the gateway and `db access` are
// fine. Started again on the same data directory and address, it gives
// both the grace period to reconnect: once that is over, the session is
// still active and takes new connections.
func TestServerOutageEndsNoSession(t *testing.T) {
	t.Parallel()
	var args []string
	w := svNewWorld(t, args...)
	w.svAccountOn("main-db", "app")
	p, url, id := w.svAccessOn(w.admin, "main-db", "app")
	c := connect(t, url)
	var one int
	if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}

	w.srv.Proc.Stop(syscall.SIGKILL)
	time.Sleep(3 * time.Minute) // the outage, longer than both lost-after settings
	svRestartServer(t, w.srv, args...)
	w.waitGateway("dc1", true)
	time.Sleep(2*time.Minute + 5*time.Second) // past the grace period after the restart

	if s := w.svSession(id); s.Status != "active" {
		t.Fatalf("after the outage: %+v", s)
	}
	if p.Exited() {
		t.Fatalf("db access exited: %s", p.Stderr())
	}
	outageLines(t, p)
	c2 := connect(t, url)
	if err := c2.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("a new connection after the outage: %v", err)
	}
}

// outageLines fails unless db access told of its outage in one line while
// reconnecting and one when back, and printed nothing else on stderr.
func outageLines(t *testing.T, p *e2e.Process) {
	t.Helper()
	stderr := p.Stderr()
	lost := regexp.MustCompile(`(?m)^airlock: lost the connection to the Airlock server at http://\S+; reconnecting until the session expires at .+ \(new connections are refused until then\)\.\.\.$`)
	back := regexp.MustCompile(`(?m)^airlock: connected again after [0-9hms.]+; new connections are served again\.$`)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lost.FindAllString(stderr, -1)) != 1 || len(back.FindAllString(stderr, -1)) != 1 || len(lines) != 2 {
		t.Fatalf("db access's output about the outage, want one line lost and one line back:\n%s", stderr)
	}
}

// TestKilledAccessEndsAsClientLost: `kill -9` of `db access` cannot end its
// session; the server does, as client_lost, once the CLI has been gone for
// ClientLostAfter (the default 2 minutes: real timing).
func TestKilledAccessEndsAsClientLost(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.svAccountOn("main-db", "app")
	p, url, id := w.svAccessOn(w.admin, "main-db", "app")
	c := connect(t, url)
	var one int
	if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	p.Stop(syscall.SIGKILL)
	s := w.svWaitEnded(id, 4*time.Minute)
	if s.EndReason != "client_lost" || !strings.Contains(s.EndMessage, "CLI") {
		t.Fatalf("after kill -9: %+v", s)
	}
}
