package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the engine hop, as the harness
// binary does (the harness starts os.Executable() for it).
func TestMain(m *testing.M) {
	maybeServeEngineHop()
	os.Exit(m.Run())
}

// TestSmoke runs the whole harness in smoke mode, as CI does so that it never
// rots. It checks that the run completes and that the report has every row
// and every target, not the figures (benchmarks report; they do not assert).
func TestSmoke(t *testing.T) {
	ci := os.Getenv("CI") == "true"
	if testing.Short() && !ci {
		t.Skip("the smoke run starts PostgreSQL, PgBouncer, FerretDB and Airlock; skipped with -short (never in CI)")
	}
	need := func(err error) {
		t.Helper()
		if err == nil {
			return
		}
		if ci {
			t.Fatalf("CI=true and a server the benchmark needs is missing: %v", err)
		}
		t.Skipf("skipping the benchmark smoke run: %v", err)
	}
	need(postgresMissing())
	if findPgbouncer() == "" && !canInstallPackages() {
		// In CI the harness itself installs it (as root with apt-get); here
		// that is impossible.
		need(errors.New("pgbouncer is not installed and this is not root with apt-get: install Debian's pgbouncer (apt-get install pgbouncer) to run the benchmark smoke test"))
	}

	cfg := defaultConfig()
	cfg.applySmoke()
	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	prose := "# Benchmarks\n\nProse before.\n\n" + markStart + "\nold\n" + markEnd + "\n\nProse after.\n"
	if err := os.WriteFile(out, []byte(prose), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Out = out
	// A prebuilt binary, e.g. one built with other flags; by default the
	// harness builds this module's.
	cfg.AirlockBin = os.Getenv("AIRLOCK_BENCH_BIN")
	cfg.Log = testWriter{t}
	cfg.Cmdline = "go test ./bench -run TestSmoke"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := run(ctx, cfg)
	if err != nil {
		t.Fatalf("smoke run: %v", err)
	}
	t.Logf("smoke run took %s", time.Since(start).Round(time.Millisecond))

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if !strings.HasPrefix(doc, "# Benchmarks\n\nProse before.\n\n"+markStart+"\n") || !strings.HasSuffix(doc, markEnd+"\n\nProse after.\n") || strings.Contains(doc, "\nold\n") {
		t.Errorf("the report did not replace exactly the marked section:\n%s", doc)
	}
	for _, label := range append(res.tableRowLabels(), goalLabels...) {
		if !strings.Contains(doc, "| "+label+" |") {
			t.Errorf("the report has no row %q", label)
		}
	}
	for _, target := range targetNames {
		for _, w := range workloads {
			c := res.Cells[w.Key][target]
			if c == nil || c.Runs != cfg.Rounds || c.Tx == 0 || len(c.Latencies) == 0 {
				t.Errorf("%s against %s: no complete measurement (%+v)", w.Key, target, c)
			}
		}
	}
	for _, target := range floorNames {
		for _, w := range workloads {
			c := res.Cells[w.Key][target]
			switch {
			case w.Connect && c != nil:
				t.Errorf("%s against the floor %s: measured, but the floors are for per-query costs only", w.Key, target)
			case !w.Connect && (c == nil || c.Runs != cfg.Rounds || c.Tx == 0 || len(c.Latencies) == 0 || len(c.CPU) != 1 || !(c.CPUPerTxUs() > 0)):
				t.Errorf("%s against the floor %s: no complete measurement with its process's CPU (%+v)", w.Key, target, c)
			}
		}
	}
	// Every cell of the floor table holds a figure.
	for _, label := range []string{rowFloorAddedLat, rowFloorTPS, rowFloorCPU} {
		for _, line := range strings.Split(doc, "\n") {
			if strings.HasPrefix(line, "| "+label+" |") && (strings.Contains(line, "—") || strings.Contains(line, "NaN")) {
				t.Errorf("the floor table's row has an empty cell: %s", line)
			}
		}
	}
	for _, target := range mongoTargetNames {
		for _, w := range mongoWorkloads {
			c := res.Mongo[w.Key][target]
			if c == nil || c.Runs != cfg.Rounds || c.Tx == 0 || len(c.Latencies) == 0 {
				t.Errorf("MongoDB %s against %s: no complete measurement (%+v)", w.Key, target, c)
			}
		}
	}
	if c := res.Cells["S-8"][targetHop]; c != nil && len(c.CPU) != 1 {
		t.Errorf("the engine hop: CPU of %d processes, want its one", len(c.CPU))
	}
	if c := res.Mongo["M-8"][targetAirlock]; c != nil && len(c.CPU) != 3 {
		t.Errorf("MongoDB through Airlock: CPU of %d processes, want gateway, server and CLI", len(c.CPU))
	}
	if len(res.SessionStarts) != cfg.SessionStarts || res.IdleAirlock.Conns != cfg.Idle || res.IdlePgbouncer.Conns != cfg.Idle {
		t.Errorf("session starts %d, idle connections %d/%d", len(res.SessionStarts), res.IdleAirlock.Conns, res.IdlePgbouncer.Conns)
	}
	if t.Failed() {
		t.Logf("report:\n%s", doc)
	}
}

// testWriter sends the harness's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
