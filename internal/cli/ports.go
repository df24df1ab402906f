package cli

// Remembered ports: `db access` without --port listens on the port it used
// for the same account before (the same server, project, resource and
// account), when that port is free, so that a GUI client's saved
// connection works again the next day. The ports are kept in
// <config dir>/ports.json (mode 0600, written atomically under
// ports.lock). A port that was busy is not forgotten: the next run tries it
// again. A new port is never one remembered for another account, so a
// saved connection does not reach another account's session by chance.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// portKey names an account for the port memory.
type portKey struct {
	Domain    string `json:"domain"`
	ProjectID string `json:"projectId"`
	Resource  string `json:"resource"`
	Account   string `json:"account"`
}

// portEntry is an account's remembered port.
type portEntry struct {
	portKey
	Port   int       `json:"port"`
	UsedAt time.Time `json:"usedAt"`
}

// portsFile is the content of ports.json.
type portsFile struct {
	Ports []portEntry `json:"ports"`
}

// maxRememberedPorts bounds ports.json: the least recently used go first.
const maxRememberedPorts = 256

func portsPath() (string, error) {
	d, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "ports.json"), nil
}

// loadPorts returns the remembered ports; none if the file does not exist.
func loadPorts() ([]portEntry, error) {
	p, err := portsPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	var f portsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v); it is written again at the next session", p, err)
	}
	return f.Ports, nil
}

// rememberPort records port as key's port.
func rememberPort(ctx context.Context, key portKey, port int, now time.Time) error {
	p, err := portsPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
	}
	unlock, err := lockFile(ctx, filepath.Join(filepath.Dir(p), "ports.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	entries, _ := loadPorts() // a damaged file is replaced
	entries = slices.DeleteFunc(entries, func(e portEntry) bool { return e.portKey == key })
	entries = append(entries, portEntry{portKey: key, Port: port, UsedAt: now.UTC()})
	slices.SortStableFunc(entries, func(a, b portEntry) int { return b.UsedAt.Compare(a.UsedAt) })
	if len(entries) > maxRememberedPorts {
		entries = entries[:maxRememberedPorts]
	}
	b, err := json.MarshalIndent(portsFile{Ports: entries}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}

// portChoice is the TCP listener of `db access` and why it has its port.
type portChoice struct {
	ln       net.Listener
	port     int
	reason   string // "port 54321, the same as last time for this account"
	remember bool   // whether to remember port for the account
}

// listenTCP listens on 127.0.0.1: on flagPort when it is not 0; else on
// the port remembered for key if it is free; else on a new port that is
// not remembered for another account. remembered are the entries of
// ports.json.
func listenTCP(key portKey, flagPort int, remembered []portEntry) (*portChoice, error) {
	if flagPort != 0 {
		ln, err := listenLoopback(flagPort)
		if err != nil {
			return nil, flagPortError(flagPort, err)
		}
		return &portChoice{ln: ln, port: flagPort, reason: fmt.Sprintf("port %d, as --port asks", flagPort), remember: true}, nil
	}
	last := 0
	others := map[int]bool{}
	for _, e := range remembered {
		if e.portKey == key {
			last = e.Port
		} else {
			others[e.Port] = true
		}
	}
	var lastErr error
	if last > 0 && last <= 65535 {
		ln, err := listenLoopback(last)
		if err == nil {
			return &portChoice{ln: ln, port: last, reason: fmt.Sprintf("port %d, the same as last time for this account", last), remember: true}, nil
		}
		lastErr = err
	}
	ln, port, err := listenNew(others)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on 127.0.0.1: %w", err)
	}
	c := &portChoice{ln: ln, port: port, reason: fmt.Sprintf("port %d, a new port", port), remember: true}
	if lastErr != nil {
		// Keep the account's port: the next run tries it again, so a saved
		// connection works once the other program has gone.
		c.remember = false
		why := "is in use"
		if !errors.Is(lastErr, syscall.EADDRINUSE) {
			why = "cannot be used (" + lastErr.Error() + ")"
		}
		c.reason = fmt.Sprintf("port %d: the last one (%d) %s; it is tried again next time", port, last, why)
	}
	return c, nil
}

func listenLoopback(port int) (net.Listener, error) {
	return net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
}

// listenNew listens on a free port that is not in avoid; after a few
// tries it takes what it gets.
func listenNew(avoid map[int]bool) (net.Listener, int, error) {
	var held []net.Listener // kept open so the kernel hands out another port
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for try := 0; ; try++ {
		ln, err := listenLoopback(0)
		if err != nil {
			return nil, 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if !avoid[port] || try >= 8 {
			return ln, port, nil
		}
		held = append(held, ln)
	}
}

// flagPortError says why --port cannot be listened on, and what to do.
func flagPortError(port int, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("--port %d: another program listens on 127.0.0.1:%d already: pick another port with --port, or omit --port (this account's port from last time is used if free, else a new one)", port, port)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("--port %d: this user may not listen on it (ports below 1024 need privileges): pick one from 1024 to 65535, or omit --port", port)
	}
	return fmt.Errorf("--port %d: cannot listen on 127.0.0.1:%d (%v): pick another port with --port, or omit it", port, port, err)
}
