package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestListenTCPReusesTheAccountsPort(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvConfigDir, dir)
	ctx := context.Background()
	app := portKey{Domain: "https://airlock.example.com", ProjectID: "p1", Resource: "main-db", Account: "app"}
	admin := app
	admin.Account = "admin"

	listen := func(key portKey, flagPort int) *portChoice {
		t.Helper()
		remembered, err := loadPorts()
		if err != nil {
			t.Fatal(err)
		}
		c, err := listenTCP(key, flagPort, remembered)
		if err != nil {
			t.Fatal(err)
		}
		if c.remember {
			if err := rememberPort(ctx, key, c.port, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}

	// First time: a new port, remembered.
	first := listen(app, 0)
	first.ln.Close()
	if first.reason != fmt.Sprintf("port %d, a new port", first.port) {
		t.Fatalf("first: %q", first.reason)
	}
	fi, err := os.Stat(filepath.Join(dir, "ports.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ports.json: %v %v", fi, err)
	}

	// Next time: the same port.
	again := listen(app, 0)
	if again.port != first.port || again.reason != fmt.Sprintf("port %d, the same as last time for this account", first.port) {
		t.Fatalf("again: %d %q", again.port, again.reason)
	}

	// While it is in use: another port, and the account keeps its own.
	busy := listen(app, 0)
	busy.ln.Close()
	want := fmt.Sprintf("port %d: the last one (%d) is in use; it is tried again next time", busy.port, first.port)
	if busy.port == first.port || busy.reason != want {
		t.Fatalf("busy: %d %q, want %q", busy.port, busy.reason, want)
	}
	again.ln.Close()
	back := listen(app, 0)
	back.ln.Close()
	if back.port != first.port {
		t.Fatalf("after the port was freed: %d, want %d", back.port, first.port)
	}

	// Another account gets a port of its own.
	other := listen(admin, 0)
	other.ln.Close()
	if other.port == first.port {
		t.Fatalf("admin got app's port %d", other.port)
	}

	// --port wins, and is remembered.
	free := freePort(t)
	flag := listen(app, free)
	flag.ln.Close()
	if flag.port != free || flag.reason != fmt.Sprintf("port %d, as --port asks", free) {
		t.Fatalf("--port: %d %q", flag.port, flag.reason)
	}
	if c := listen(app, 0); c.port != free {
		t.Fatalf("after --port %d: %d", free, c.port)
	} else {
		c.ln.Close()
	}
}

func TestListenTCPExplainsABusyPortFlag(t *testing.T) {
	t.Setenv(EnvConfigDir, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = listenTCP(portKey{Account: "app"}, port, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("--port %d: another program listens on 127.0.0.1:%d already: pick another port with --port, or omit --port", port, port)) {
		t.Fatalf("busy --port: %v", err)
	}
}

func TestDamagedPortsFileIsReplaced(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvConfigDir, dir)
	p := filepath.Join(dir, "ports.json")
	if err := os.WriteFile(p, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPorts(); err == nil || !strings.Contains(err.Error(), "ports.json is damaged") {
		t.Fatalf("damaged file: %v", err)
	}
	key := portKey{Account: "app"}
	if err := rememberPort(context.Background(), key, 40001, time.Now()); err != nil {
		t.Fatal(err)
	}
	entries, err := loadPorts()
	if err != nil || len(entries) != 1 || entries[0].Port != 40001 || entries[0].portKey != key {
		t.Fatalf("after rewriting: %+v %v", entries, err)
	}
}

func TestRememberedPortsAreBounded(t *testing.T) {
	t.Setenv(EnvConfigDir, t.TempDir())
	now := time.Now()
	for i := range maxRememberedPorts + 5 {
		if err := rememberPort(context.Background(), portKey{Account: fmt.Sprint("a", i)}, 40000+i, now.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := loadPorts()
	if err != nil || len(entries) != maxRememberedPorts {
		t.Fatalf("%d entries, %v", len(entries), err)
	}
	for _, e := range entries {
		if e.Account == "a0" {
			t.Fatal("the least recently used entry was kept")
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
