package sessionlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockedBuffer is a log sink tests read while the spool writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mountTmpfs mounts a tmpfs of size on a new directory (tests run as root).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("AIRLOCK_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatalf("mounting a tmpfs (needs root): %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// A spool on a 2 MiB disk with the server away fills the disk, then fails
// closed: Err says why and the log says so once, while no event it accepted
// is lost; once the server takes the events, space returns and so does Err's
// nil.
func TestSpoolFullDiskFailsClosedAndRecovers(t *testing.T) {
	dir := mountTmpfs(t, "2m")
	logs := &lockedBuffer{}
	sp := openSpool(t, dir+"/spool", WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
		WithBackoff(5*time.Millisecond, 50*time.Millisecond), WithFlushInterval(time.Millisecond))
	var recorded atomic.Int64
	stopRec := make(chan struct{})
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		for i := 0; ; i++ {
			select {
			case <-stopRec:
				return
			default:
			}
			// An engine refuses new statements while Err is non-nil; only
			// events of statements already under way still arrive.
			if sp.Err() != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			ev := testEvent("s1", 0, i)
			ev.Statement += strings.Repeat("x", 2000)
			sp.Record(ev)
			recorded.Add(1)
		}
	}()
	waitFor(t, "the spool to fail closed", 30*time.Second, func() bool { return sp.Err() != nil })
	close(stopRec)
	<-recDone
	err := sp.Err()
	var se *SpoolError
	if !errors.As(err, &se) || !se.Full {
		t.Fatalf("Err = %v; want a *SpoolError for a full spool", err)
	}
	if strings.Contains(err.Error(), dir) {
		t.Fatalf("Err names the spool's path, which a client sees: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // the writer retries meanwhile
	if n := strings.Count(logs.String(), "cannot persist events"); n != 1 {
		t.Fatalf("the failure is logged %d times; want once:\n%s", n, logs.String())
	}
	if sp.Err() == nil {
		t.Fatal("Err cleared while the disk is still full")
	}
	n := int(recorded.Load())
	t.Logf("%d events accepted before the disk filled", n)

	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 30*time.Second, func() bool { return sp.Pending() == 0 })
	if err := sp.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkDelivery(t, c.ids(), n)
	waitFor(t, "Err to clear", 5*time.Second, func() bool { return sp.Err() == nil })
	if !strings.Contains(logs.String(), "persists events again") {
		t.Fatalf("the recovery is not logged:\n%s", logs.String())
	}
	// It keeps working: space is free.
	for i := range 100 {
		sp.Record(testEvent("s2", 0, i))
	}
	waitFor(t, "delivery after recovery", 10*time.Second, func() bool { return sp.Pending() == 0 })
	checkDelivery(t, c.ids()[n:], 100)
	if sp.Err() != nil {
		t.Fatal(sp.Err())
	}
}

// Over --spool-max-size the spool fails closed the same way, and frees as
// the server acknowledges.
func TestSpoolSizeCap(t *testing.T) {
	const limit = 256 << 10
	sp := openSpool(t, t.TempDir(), WithMaxSize(limit), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		WithBackoff(time.Millisecond, 10*time.Millisecond), WithFlushInterval(time.Millisecond))
	i := 0
	for sp.Err() == nil && i < 100_000 {
		ev := testEvent("s1", 0, i)
		ev.Statement += strings.Repeat("y", 500)
		sp.Record(ev)
		i++
		if i%20 == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			sp.Flush(ctx) //nolint:errcheck // waits for the writer; times out once over the cap
			cancel()
		}
	}
	var se *SpoolError
	if err := sp.Err(); !errors.As(err, &se) || !se.Full {
		t.Fatalf("after %d events Err = %v; want the size cap", i, err)
	}
	if st := sp.Stats(); st.DiskBytes > limit {
		t.Fatalf("the spool holds %d bytes on disk; its cap is %d", st.DiskBytes, limit)
	}
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 20*time.Second, func() bool { return sp.Pending() == 0 })
	checkDelivery(t, c.ids(), i)
	waitFor(t, "Err to clear", 5*time.Second, func() bool { return sp.Err() == nil })
}

// A healthy spool frees delivered events promptly, long before its segment
// is full: the segment being written is removed once delivered.
func TestSpoolFreesDeliveredEventsPromptly(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir, WithFlushInterval(time.Millisecond)) // default 8 MiB segments
	c := &collector{}
	runSpool(t, sp, c)
	for round := range 20 {
		for i := range 100 {
			ev := testEvent("s1", round, i)
			ev.Statement += strings.Repeat("z", 1000)
			sp.Record(ev)
		}
		waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 })
	}
	checkDelivery(t, c.ids(), 2000)
	var size int64
	waitFor(t, "the delivered segments to go", 5*time.Second, func() bool {
		_, size = segmentFiles(t, dir)
		return size < 2*FreeAfter
	})
	t.Logf("%d bytes remain after delivering about 2 MB", size)
}

// --spool-sync=always: Record returns once its event is on disk.
func TestSpoolSyncAlways(t *testing.T) {
	sp := openSpool(t, t.TempDir(), WithSyncAlways(true), WithFlushInterval(time.Hour))
	for i := range 50 {
		sp.Record(testEvent("s1", 0, i))
		sp.mu.Lock()
		written := sp.written
		sp.mu.Unlock()
		if written != uint64(i+1) {
			t.Fatalf("Record %d returned with %d events written", i, written)
		}
	}
}

// --spool-full=allow: a batch the disk refuses is dropped and counted; Err
// stays nil and sessions go on.
func TestSpoolFailOpen(t *testing.T) {
	logs := &lockedBuffer{}
	var failing atomic.Bool
	failing.Store(true)
	sp := openSpool(t, t.TempDir(), WithFailOpen(true), WithMaxBuffer(10, 1<<20), WithFlushInterval(time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	sp.failAppend = func() error {
		if failing.Load() {
			return errors.New("no space left on device (injected)")
		}
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			sp.Record(testEvent("s1", 0, i))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Record waits on a failing disk although the spool fails open")
	}
	if err := sp.Flush(context.Background()); err == nil {
		t.Fatal("Flush reports no loss after events were dropped")
	}
	if sp.Err() != nil {
		t.Fatalf("Err = %v under fail open", sp.Err())
	}
	if st := sp.Stats(); st.Dropped != 100 {
		t.Fatalf("%d dropped events counted; want 100", st.Dropped)
	}
	if !strings.Contains(logs.String(), "SESSION EVENTS ARE BEING DROPPED") {
		t.Fatalf("the drop is not logged loudly:\n%s", logs.String())
	}
	failing.Store(false)
	sp.Record(testEvent("s1", 1, 0))
	waitFor(t, "the next event to be written", 5*time.Second, func() bool {
		sp.mu.Lock()
		defer sp.mu.Unlock()
		return sp.written == 1
	})
	if st := sp.Stats(); st.Dropped != 100 {
		t.Fatalf("%d dropped events counted after recovery; want 100", st.Dropped)
	}
	if !strings.Contains(logs.String(), fmt.Sprint("dropped_total=", 100)) {
		t.Fatalf("the recovery does not give the total dropped:\n%s", logs.String())
	}
}
