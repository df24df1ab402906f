package gateway

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/airlockpam/airlock/internal/sessionlog"
)

// Metric names, in the Prometheus text format served by MetricsHandler.
// Every value is read when scraped, so it is never stale.
var (
	descConnected = prometheus.NewDesc("airlock_gateway_connected",
		"1 while the gateway holds a connection to the server, else 0.", nil, nil)
	descSessions = prometheus.NewDesc("airlock_gateway_sessions",
		"Sessions the gateway serves at the moment.", nil, nil)
	descSpoolHealthy = prometheus.NewDesc("airlock_gateway_spool_healthy",
		"1 while the session log spool can persist events; 0 while it cannot, when new statements are refused (fail closed).", nil, nil)
	descSpoolProblem = prometheus.NewDesc("airlock_gateway_spool_problem",
		"1 for the reason the spool cannot persist events: full (at --spool-max-size or the disk is full) or write_failed (a write or fsync fails); absent while healthy.", []string{"reason"}, nil)
	descSpoolPending = prometheus.NewDesc("airlock_gateway_spool_pending_events",
		"Session events recorded and not yet acknowledged by the server.", nil, nil)
	descSpoolBytes = prometheus.NewDesc("airlock_gateway_spool_disk_bytes",
		"Bytes of the spool's segment files on disk.", nil, nil)
	descSpoolDropped = prometheus.NewDesc("airlock_gateway_spool_dropped_events_total",
		"Session events dropped because the spool could not persist them (only with --spool-full=allow) or lost at shutdown.", nil, nil)
	descCertExpiry = prometheus.NewDesc("airlock_gateway_certificate_expiry_timestamp_seconds",
		"When the gateway's client certificate expires (it renews itself well before), as a Unix time.", nil, nil)
)

// agentCollector reads the agent's state at scrape time.
type agentCollector struct{ a *Agent }

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descSessions, descSpoolHealthy, descSpoolProblem,
		descSpoolPending, descSpoolBytes, descSpoolDropped, descCertExpiry} {
		ch <- d
	}
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	connected := 0.0
	if a.Connected() {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, connected)
	a.mu.Lock()
	n := len(a.sessions)
	a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(n))

	st := a.spool.Stats()
	healthy := 1.0
	if !st.Healthy {
		healthy = 0
		reason := "write_failed"
		var se *sessionlog.SpoolError
		if errors.As(a.spool.Err(), &se) && se.Full {
			reason = "full"
		}
		ch <- prometheus.MustNewConstMetric(descSpoolProblem, prometheus.GaugeValue, 1, reason)
	}
	ch <- prometheus.MustNewConstMetric(descSpoolHealthy, prometheus.GaugeValue, healthy)
	ch <- prometheus.MustNewConstMetric(descSpoolPending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(descSpoolBytes, prometheus.GaugeValue, float64(st.DiskBytes))
	ch <- prometheus.MustNewConstMetric(descSpoolDropped, prometheus.CounterValue, float64(st.Dropped))
	if leaf := a.leaf(); leaf != nil {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()))
	}
}

// MetricsHandler serves the gateway's metrics (its connection, sessions,
// session log spool and certificate, plus Go runtime and process metrics)
// in the Prometheus text format, for `airlock gateway --metrics-listen`.
func (a *Agent) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(agentCollector{a},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Timeout: 10 * time.Second})
}
