// Command testdeps builds the server binaries that the tests use (FerretDB
// and mailpit) into the test cache, so that no test waits for a build. It is
// run by scripts/install-test-deps and does nothing when they are cached.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/airlockpam/airlock/internal/testenv"
)

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()

	dir, err := testenv.CacheDir()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testdeps: %v\n", err)
		os.Exit(1)
	}
	start := time.Now()
	if err := testenv.EnsureBinaries(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "testdeps: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("testdeps: FerretDB %s and mailpit %s are ready in %s (%v)\n",
		testenv.FerretDBVersion, testenv.MailpitVersion, dir, time.Since(start).Round(time.Millisecond))
}
