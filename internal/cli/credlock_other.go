//go:build !unix

package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// staleLock is the age after which a lock file left by a crashed process is
// taken over. A refresh holds the lock for one HTTP call.
const staleLock = 2 * time.Minute

// lockFile takes an exclusive lock on path by creating path+".held" with
// O_EXCL (this platform has no flock), and returns the function that
// releases it. A lock file older than staleLock is taken over.
func lockFile(ctx context.Context, path string) (func(), error) {
	held := path + ".held"
	for {
		f, err := os.OpenFile(held, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			f.Close()
			return func() { os.Remove(held) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating the lock file %s: %w", held, err)
		}
		if fi, err := os.Stat(held); err == nil && time.Since(fi.ModTime()) > staleLock {
			os.Remove(held)
			continue
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for another airlock process to finish with %s: %w", held, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
