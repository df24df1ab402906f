//go:build linux

package cli

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// procTCP6 is real /proc/net/tcp6 content: a dual-stack listener on port
// 44427 (0xAD8B) with a client from ::ffff:127.0.0.1 port 50822 (0xC686)
// and one from ::1 port 51688 (0xC9E8), both owned by uid 0 here; the
// accepted ends (rows 3 and 4) show uid 0 and inode 0 while queued.
const procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:AD8B 00000000000000000000000000000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 107939 3 00000000fecab987 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:C686 0000000000000000FFFF00000100007F:AD8B 01 00000000:00000000 00:00000000 00000000  1000        0 107940 2 0000000068362c30 20 0 0 10 -1
   2: 00000000000000000000000001000000:C9E8 00000000000000000000000001000000:AD8B 01 00000000:00000000 00:00000000 00000000 65534        0 107941 2 00000000c249b38d 20 0 0 10 -1
   3: 00000000000000000000000001000000:AD8B 00000000000000000000000001000000:C9E8 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000086d81e72 20 0 0 10 -1
   4: 0000000000000000FFFF00000100007F:AD8B 0000000000000000FFFF00000100007F:C686 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000e6e5db96 20 0 0 10 -1
`

// procTCP is real /proc/net/tcp content (uids edited): a listener on
// 127.0.0.1:8720 (0x2210) and a client from 127.0.0.1:40000 (0x9C40).
const procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2210 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1063 1 00000000d6246a35 100 0 0 10 0
   1: 0100007F:9C40 0100007F:2210 01 00000000:00000000 00:00000000 00000000  1001        0 0 3 000000002e5391b7
   2: 0100007F:2210 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 0 3 000000002e5391b7
   3: 020200C0:9854 507100CB:01BB 06 00000000:00000000 03:00000AC9 00000000     0        0 0 3 000000002e5391b7
`

func TestFindSocketUIDParsesTheKernelTables(t *testing.T) {
	ap := netip.MustParseAddrPort
	cases := []struct {
		name, table   string
		local, remote netip.AddrPort
		uid           uint32
		found         bool
	}{
		{"ipv4 client", procTCP, ap("127.0.0.1:40000"), ap("127.0.0.1:8720"), 1001, true},
		{"ipv4 accepted end is not the client", procTCP, ap("127.0.0.1:8720"), ap("127.0.0.1:40000"), 0, true},
		{"ipv4 other port", procTCP, ap("127.0.0.1:40001"), ap("127.0.0.1:8720"), 0, false},
		{"ipv4 other host", procTCP, ap("192.0.2.2:38996"), ap("203.0.113.80:443"), 0, true},
		{"mapped ipv4 in tcp6", procTCP6, ap("127.0.0.1:50822"), ap("127.0.0.1:44427"), 1000, true},
		{"mapped ipv4 given mapped", procTCP6, ap("[::ffff:127.0.0.1]:50822"), ap("[::ffff:127.0.0.1]:44427"), 1000, true},
		{"ipv6 loopback", procTCP6, ap("[::1]:51688"), ap("[::1]:44427"), 65534, true},
		{"ipv6 wrong remote", procTCP6, ap("[::1]:51688"), ap("[::1]:44428"), 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			uid, found, err := findSocketUID(strings.NewReader(c.table), c.local, c.remote)
			if err != nil || found != c.found || uid != c.uid {
				t.Fatalf("got uid %d found %v err %v, want uid %d found %v", uid, found, err, c.uid, c.found)
			}
		})
	}
	if _, _, err := findSocketUID(strings.NewReader("hdr\n 0: 0100007F 00000000:0000 0A a b c 0 0 0\n"), ap("127.0.0.1:1"), ap("127.0.0.1:2")); err == nil {
		t.Fatal("an address without a port was accepted")
	}
}

// acceptOne listens on network/addr, dials it with dial, and returns the
// accepted end.
func acceptOne(t *testing.T, ln net.Listener, dial func() error) net.Conn {
	t.Helper()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(got)
			return
		}
		got <- c
	}()
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	c, ok := <-got
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPeerUIDOfOwnLoopbackConnections(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var client net.Conn
			server := acceptOne(t, ln, func() (err error) {
				client, err = net.Dial(network, ln.Addr().String())
				return err
			})
			defer client.Close()
			uid, err := peerUID(server)
			if err != nil || uid != uint32(os.Getuid()) {
				t.Fatalf("peerUID = %d, %v; want %d", uid, err, os.Getuid())
			}
		})
	}
	t.Run("unix", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), ".s.PGSQL.5432")
		ln, err := listenUnix(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("socket file: %v %v", fi.Mode(), err)
		}
		var client net.Conn
		server := acceptOne(t, ln, func() (err error) {
			client, err = net.Dial("unix", path)
			return err
		})
		defer client.Close()
		uid, err := peerUID(server)
		if err != nil || uid != uint32(os.Getuid()) {
			t.Fatalf("peerUID = %d, %v; want %d", uid, err, os.Getuid())
		}
		if _, err := listenUnix(path); err == nil || !strings.Contains(err.Error(), "another process listens") {
			t.Fatalf("a second listener on a live socket: %v", err)
		}
	})
}

// TestPeerUIDOfAnotherUser connects as nobody (the tests run as root) and
// expects the proxy to see nobody's uid, not its own.
func TestPeerUIDOfAnotherUser(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	var cmd *exec.Cmd
	server := acceptOne(t, ln, func() error {
		// bash keeps the connection open until the test closes its end.
		cmd = exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
			"bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+port+"; cat <&3 >/dev/null")
		return cmd.Start()
	})
	defer cmd.Wait()
	defer server.Close()
	uid, err := peerUID(server)
	if err != nil {
		t.Fatal(err)
	}
	if uid == uint32(os.Getuid()) || userLabel(uid) != "nobody (uid "+strconv.Itoa(int(uid))+")" {
		t.Fatalf("peerUID = %d (%s); want nobody's", uid, userLabel(uid))
	}
}
