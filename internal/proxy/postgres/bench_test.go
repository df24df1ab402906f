package postgres

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// BenchmarkSelect1 measures one SELECT 1 round trip through the engine and,
// for reference, straight to PostgreSQL, both over plain TCP on loopback.
func BenchmarkSelect1(b *testing.B) {
	db := testenv.SharedPostgres(b)
	role := db.Cluster.SCRAMUser
	eng, err := NewEngine(WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	p := startProxy(b, eng, NewSession("bench"), accountConfig(db, role, tunnel.TLS{}))

	urls := []struct{ name, url string }{
		{"engine", p.clientURL("x", "y", "")},
		{"direct", db.URL(role, "disable")},
	}
	for _, u := range urls {
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
