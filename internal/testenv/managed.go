package testenv

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// managed is the lifecycle FerretDB and mailpit share: one server process,
// the watchdog that kills it if the test binary dies, and its directory.
type managed struct {
	name    string // for error messages
	baseDir string
	mu      sync.Mutex
	proc    *serverProcess
	wd      *watchdog
}

// Stop stops the server (SIGTERM, then SIGKILL after five seconds). Its
// files stay until the test ends. Stopping a stopped server does nothing.
func (m *managed) Stop() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return nil
	}
	if err := m.proc.stop(5 * time.Second); err != nil {
		return fmt.Errorf("stop %s: %w", m.name, err)
	}
	return nil
}

// close stops the server, disarms the watchdog and removes every file.
func (m *managed) close() error {
	err := m.Stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wd.disarm()
	m.wd = nil
	if err == nil && m.baseDir != "" {
		err = os.RemoveAll(m.baseDir)
		m.baseDir = ""
	}
	return err
}
