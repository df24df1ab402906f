//go:build !unix

package sessionlog

import "os"

// lockFile does nothing where flock is not available: only one process may
// use a spool directory, which the caller must then ensure.
func lockFile(f *os.File) error { return nil }
