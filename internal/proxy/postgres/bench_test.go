package postgres

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

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
// and with recording, and PostgreSQL directly, all over plain TCP on
// loopback.
func benchTargets(b *testing.B) []struct{ name, url string } {
	db := testenv.SharedPostgres(b)
	role := db.Cluster.SCRAMUser
	eng, err := NewEngine(WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	cfg := accountConfig(db, role, tunnel.TLS{})
	plain := startProxy(b, eng, common.NewSession("bench"), cfg)
	recording := startProxy(b, eng, common.NewSession("bench-recording", common.WithRecorder(&countingRecorder{})), cfg)
	return []struct{ name, url string }{
		{"engine", plain.clientURL("x", "", "")},
		{"engine-recording", recording.clientURL("x", "", "")},
		{"direct", db.URL(role, "disable")},
	}
}

// BenchmarkSelect1 measures one SELECT 1 round trip (pgx's default, a
// prepared statement: Bind, Describe, Execute, Sync) through the engine,
// with and without recording, and straight to PostgreSQL.
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
			for b.Loop() {
				if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
					b.Fatalf("SELECT 1: %d, %v", one, err)
				}
			}
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
