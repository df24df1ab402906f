package e2e_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
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
	c2 := connect(t, url)
	if err := c2.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("a new connection after the outage: %v", err)
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
