package postgres

import (
	"context"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// countingRecorder counts events and keeps none: a recorder that costs
// nothing, so that a benchmark measures the engine's part.
type countingRecorder struct{ n atomic.Int64 }

func (r *countingRecorder) Record(sessionlog.Event) { r.n.Add(1) }

// benchTargets returns the URLs a benchmark compares: the engine without
// and with recording (into a recorder that costs nothing, and into the
// gateway's spool on this machine's disk, batched fsync), and PostgreSQL
// directly, all over plain TCP on loopback.
func benchTargets(b *testing.B) []struct{ name, url string } {
	db := testenv.SharedPostgres(b)
	role := db.Cluster.SCRAMUser
	eng, err := NewEngine(WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	spool, err := sessionlog.OpenSpool(b.TempDir(), sessionlog.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { spool.Close() })
	// The server acknowledges at once, so the spool stays small.
	ctx, cancel := context.WithCancel(context.Background())
	go spool.Run(ctx, sessionlog.UploaderFunc(func(context.Context, sessionlog.Batch) error { return nil })) //nolint:errcheck // ends with the benchmark
	b.Cleanup(cancel)
	cfg := accountConfig(db, role, tunnel.TLS{})
	plain := startProxy(b, eng, common.NewSession("bench"), cfg)
	recording := startProxy(b, eng, common.NewSession("bench-recording", common.WithRecorder(&countingRecorder{})), cfg)
	spooling := startProxy(b, eng, common.NewSession("bench-spool", common.WithRecorder(spool)), cfg)
	return []struct{ name, url string }{
		{"engine", plain.clientURL("x", "", "")},
		{"engine-recording", recording.clientURL("x", "", "")},
		{"engine-spool", spooling.clientURL("x", "", "")},
		{"direct", db.URL(role, "disable")},
	}
}

// BenchmarkSelect1 measures one SELECT 1 round trip (pgx's default, a
// prepared statement: Bind, Describe, Execute, Sync) through the engine,
// with and without recording, and straight to PostgreSQL.
//
//	go test ./internal/proxy/postgres -run '^$' -bench BenchmarkSelect1 -benchtime 3s
func BenchmarkSelect1(b *testing.B) {
	for _, u := range benchTargets(b) {
		b.Run(u.name, func(b *testing.B) {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, u.url)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(ctx)
			var one int
			b.ReportAllocs()
			cpu := processCPU()
			for b.Loop() {
				if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
					b.Fatalf("SELECT 1: %d, %v", one, err)
				}
			}
			// The CPU of this process (client and engine, not PostgreSQL)
			// per round trip: steadier than the time on a shared machine.
			b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// BenchmarkLargeResult measures the throughput of a 10 MB result (10,000
// rows of 1,000 bytes) read with pgconn, which allocates little of its own.
func BenchmarkLargeResult(b *testing.B) {
	const query = "SELECT repeat('x', 1000) FROM generate_series(1, 10000)"
	for _, u := range benchTargets(b) {
		b.Run(u.name, func(b *testing.B) {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, u.url)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(ctx)
			pg := conn.PgConn()
			b.SetBytes(10000 * 1000)
			b.ReportAllocs()
			for b.Loop() {
				rr := pg.ExecParams(ctx, query, nil, nil, nil, nil)
				n := 0
				for rr.NextRow() {
					n++
				}
				if _, err := rr.Close(); err != nil || n != 10000 {
					b.Fatalf("%d rows, %v", n, err)
				}
			}
		})
	}
}

// processCPU returns the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
