//go:build unix

package sessionlog

import (
	"errors"
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f, failing at once if another process
// holds it. The kernel releases it when the process dies, however it dies.
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return err
}
