package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// scrape returns the samples of a Prometheus text page, by series (name
// with its labels, as printed).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	m, err := tryScrape(t, url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	return m
}

// tryScrape is scrape that returns an unreachable endpoint as an error (a
// gateway whose metrics listener is not up yet).
func tryScrape(t *testing.T, url string) (map[string]float64, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scraping %s: %s %s", url, resp.Status, b)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		m[l[:i]] = v
	}
	return m, nil
}

// waitMetric polls until pred holds for the scraped samples.
func waitMetric(t *testing.T, url, what string, pred func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		m, err := tryScrape(t, url)
		if err == nil && pred(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %s: %v (last error: %v)", what, m, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// An operator sees why a gateway refuses statements: with the server's
// store down, a 1 MiB spool fills, statements are refused (fail closed),
// and the gateway's metrics say the spool is unhealthy because it is full,
// with the events it holds; once the store is back the spool drains and
// says it is healthy again.
func TestGatewayMetricsShowTheSpoolFillingAndRecovering(t *testing.T) {
	storePG := testenv.StartPostgres(t, testenv.WithPostgresSetting("synchronous_commit", "on"))
	w := newWorldOn(t, "AIRLOCK_DATABASE_URL="+storePG.SuperURL(testenv.AppDatabase))
	w.gw.Stop(syscall.SIGINT)
	metricsAddr := e2e.FreeAddr(t)
	w.gw = e2e.Start(t, nil, "gateway", "--data-dir", w.gwDir, "--spool-max-size", "1MiB", "--metrics-listen", metricsAddr)
	w.waitGateway("dc1", true)
	metrics := "http://" + metricsAddr + "/metrics"
	ctx := context.Background()
	w.account("app", w.pg.SCRAMUser)
	_, url := w.access(w.admin, "app")
	c := connect(t, url)
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	m := waitMetric(t, metrics, "a healthy, connected gateway serving one session", func(m map[string]float64) bool {
		return m["airlock_gateway_connected"] == 1 && m["airlock_gateway_sessions"] == 1 && m["airlock_gateway_spool_healthy"] == 1
	})
	if m["airlock_gateway_certificate_expiry_timestamp_seconds"] < float64(time.Now().Unix()) {
		t.Errorf("certificate expiry %v is not in the future", m["airlock_gateway_certificate_expiry_timestamp_seconds"])
	}

	// The store goes away: events stay in the spool until it fills.
	if err := storePG.Stop(); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 60<<10)
	var refused *pgconn.PgError
	for i := 0; i < 40 && refused == nil; i++ {
		_, err := c.Exec(ctx, fmt.Sprintf("SELECT %d /* %s */", i, pad), pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			pe, ok := err.(*pgconn.PgError)
			if !ok {
				t.Fatalf("statement %d failed without a PostgreSQL error: %v", i, err)
			}
			refused = pe
		}
	}
	if refused == nil || refused.Code != "58030" || !strings.Contains(refused.Message, "full") {
		t.Fatalf("40 statements of 60 KiB with the store down: want a refusal 58030 saying the spool is full, got %+v", refused)
	}
	m = scrape(t, metrics)
	if m["airlock_gateway_spool_healthy"] != 0 || m[`airlock_gateway_spool_problem{reason="full"}`] != 1 {
		t.Errorf("while statements are refused the metrics say healthy=%v full=%v", m["airlock_gateway_spool_healthy"], m[`airlock_gateway_spool_problem{reason="full"}`])
	}
	if m["airlock_gateway_spool_pending_events"] < 10 || m["airlock_gateway_spool_disk_bytes"] < 500<<10 {
		t.Errorf("a full spool shows %v pending events and %v bytes", m["airlock_gateway_spool_pending_events"], m["airlock_gateway_spool_disk_bytes"])
	}
	if m["airlock_gateway_spool_dropped_events_total"] != 0 {
		t.Errorf("failing closed dropped %v events", m["airlock_gateway_spool_dropped_events_total"])
	}

	// The store is back: the spool drains and the gateway is healthy.
	if err := storePG.Start(); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, metrics, "the spool drained and healthy", func(m map[string]float64) bool {
		_, problem := m[`airlock_gateway_spool_problem{reason="full"}`]
		return m["airlock_gateway_spool_healthy"] == 1 && m["airlock_gateway_spool_pending_events"] == 0 && !problem
	})
	c2 := connect(t, url)
	if _, err := c2.Exec(ctx, "SELECT 2"); err != nil {
		t.Fatalf("a statement after the spool recovered: %v", err)
	}
}

// A gateway renews its certificate on its own, well before it expires, and
// keeps working after the first one has expired: through a restart of the
// server (a new TLS handshake with the renewed certificate) and of the
// gateway (which loads the renewed certificate from its data directory).
// The server issues one-minute certificates here, so renewal is due after
// 40 seconds.
func TestGatewayRenewsItsCertificateBeforeItExpires(t *testing.T) {
	lifetime := []string{"--gateway-certificate-lifetime", "1m"}
	w := newWorldWith(t, e2e.StartServerWith(t, nil, lifetime...))
	w.gw.Stop(syscall.SIGINT)
	metricsAddr := e2e.FreeAddr(t)
	gwArgs := []string{"gateway", "--data-dir", w.gwDir, "--metrics-listen", metricsAddr}
	w.gw = e2e.Start(t, nil, gwArgs...)
	w.waitGateway("dc1", true)
	metrics := "http://" + metricsAddr + "/metrics"
	const expiry = "airlock_gateway_certificate_expiry_timestamp_seconds"
	first := waitMetric(t, metrics, "the certificate's expiry", func(m map[string]float64) bool { return m[expiry] > 0 })[expiry]
	if left := time.Until(time.Unix(int64(first), 0)); left > time.Minute+5*time.Second {
		t.Fatalf("the enrolled certificate expires in %s; the server was asked for one-minute certificates", left)
	}

	// Renewed after about 40 s, and audited.
	deadline := time.Now().Add(90 * time.Second)
	var renewed float64
	for renewed <= first {
		if time.Now().After(deadline) {
			t.Fatalf("the certificate (expiring %s) was not renewed", time.Unix(int64(first), 0))
		}
		time.Sleep(time.Second)
		renewed = scrape(t, metrics)[expiry]
	}
	if out := w.admin.Must("", "audit", "list", "--action", "gateway.renew"); !strings.Contains(out, "gateway.renew") {
		t.Errorf("the renewal is not in the audit log: %s", out)
	}

	// Past the first certificate's end, both sides restart and the
	// gateway serves a session with the renewed one.
	time.Sleep(time.Until(time.Unix(int64(first), 0).Add(2 * time.Second)))
	w.srv.Proc.Stop(syscall.SIGINT)
	w.gw.Stop(syscall.SIGINT)
	w.srv.Restart(t, lifetime...)
	w.gw = e2e.Start(t, nil, gwArgs...)
	w.waitGateway("dc1", true)
	w.account("app", w.pg.SCRAMUser)
	_, url := w.access(w.admin, "app")
	c := connect(t, url)
	var one int
	if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("a query through the gateway after its first certificate expired: %v", err)
	}
}
