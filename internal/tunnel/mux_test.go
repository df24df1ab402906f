package tunnel

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/hashicorp/yamux"
)

// writeLog records every write to a connection, to see how frames reach it.
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, bytes.Clone(p))
	w.mu.Unlock()
	return w.Conn.Write(p)
}

func (w *writeLog) take() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.writes
	w.writes = nil
	return out
}

// muxPair returns a client and a server session over loopback TCP, and the
// log of the client's writes to its connection.
func muxPair(t *testing.T) (client, server *yamux.Session, log *writeLog) {
	t.Helper()
	c, sc := tcpPair(t)
	log = &writeLog{Conn: c}
	var err error
	if client, err = MuxClient(log); err != nil {
		t.Fatal(err)
	}
	if server, err = MuxServer(sc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server, log
}

// echo serves every stream of sess by writing back what it reads.
func echo(sess *yamux.Session) {
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			defer st.Close()
			io.Copy(st, st)
		}()
	}
}

func TestMuxWritesEachSmallDataFrameInOneWrite(t *testing.T) {
	client, server, log := muxPair(t)
	go echo(server)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log.take() // the stream's opening

	const messages = 50
	msg := bytes.Repeat([]byte("select 1;"), 20)
	got := make([]byte, len(msg))
	for range messages {
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo returned %q", got)
		}
	}
	frames := 0
	for _, w := range log.take() {
		if len(w) < yamuxHeaderSize || w[1] != yamuxTypeData {
			continue
		}
		body := int(binary.BigEndian.Uint32(w[8:12]))
		if body == 0 {
			continue // a flags-only frame: header alone
		}
		frames++
		if len(w) != yamuxHeaderSize+body {
			t.Fatalf("a data frame of %d bytes went out in a write of %d bytes: header and body were not joined", body, len(w))
		}
	}
	if frames != messages {
		t.Fatalf("saw %d data frames written, want %d (one per message)", frames, messages)
	}
}

func TestMuxCarriesEveryByteOfConcurrentStreams(t *testing.T) {
	client, server, _ := muxPair(t)
	go echo(server)
	// Sizes on both sides of maxJoined, and of yamux's initial window.
	sizes := []int{1, 100, maxJoined - yamuxHeaderSize, maxJoined, 200 << 10, 3 << 20}
	var wg sync.WaitGroup
	errc := make(chan error, len(sizes))
	for _, size := range sizes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := make([]byte, size)
			rand.Read(data)
			st, err := client.OpenStream()
			if err != nil {
				errc <- err
				return
			}
			defer st.Close()
			go func() {
				// Writes of mixed sizes, as a proxy makes them.
				for rest, i := data, 0; len(rest) > 0; i++ {
					n := min(len(rest), []int{7, 5000, 70000}[i%3])
					if _, err := st.Write(rest[:n]); err != nil {
						return
					}
					rest = rest[n:]
				}
			}()
			got := make([]byte, size)
			if _, err := io.ReadFull(st, got); err != nil {
				errc <- fmt.Errorf("%d bytes: %w", size, err)
				return
			}
			if !bytes.Equal(got, data) {
				errc <- fmt.Errorf("%d bytes: the echo differs from what was sent", size)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
