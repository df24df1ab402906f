package cli

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestDebugAddrServesProfilesOnLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "10.1.2.3:6060", ":6060", "6060"} {
		err := startDebugListener(addr)
		if err == nil || !strings.Contains(err.Error(), "--debug-addr") {
			t.Fatalf("%q: %v, want a refusal naming --debug-addr", addr, err)
		}
	}

	// A free loopback port, then the listener on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := startDebugListener(addr); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
		"/debug/vars":                    `"memstats"`,
	} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %s, body without %q", path, resp.Status, want)
		}
	}
}
