package sessionlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
)

var fastRetry = WithBackoff(2*time.Millisecond, 20*time.Millisecond)

func TestSpoolDeliversInOrderDespiteFailures(t *testing.T) {
	const writers, perWriter = 8, 1000
	dir := t.TempDir()
	// Small segments: the writer rotates while Run reads.
	sp := openSpool(t, dir, fastRetry, WithUploadBatch(100, 0), WithSegmentSize(32<<10))
	c := &collector{failFirst: 3}
	stop := runSpool(t, sp, c)

	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				sp.Record(testEvent("s1", g, i))
			}
		}()
	}
	wg.Wait()
	waitFor(t, "every event to be delivered", 20*time.Second, func() bool { return sp.Pending() == 0 })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	checkDelivery(t, c.ids(), writers*perWriter)
	if segs, _ := segmentFiles(t, dir); len(segs) > 2 {
		t.Fatalf("%d segments left after delivery", len(segs))
	}
	if c.failures != 3 {
		t.Fatalf("%d failed uploads, want 3", c.failures)
	}
	// The failed batch was sent again, unchanged, before anything else.
	for i := 1; i <= 3; i++ {
		if c.attempts[i][0] != c.attempts[0][0] {
			t.Fatalf("attempt %d started with %s, the failed one with %s", i, c.attempts[i][0], c.attempts[0][0])
		}
	}
}

func TestSpoolResumesAfterReopen(t *testing.T) {
	const total = 2000
	dir := t.TempDir()
	sp, err := OpenSpool(dir, fastRetry, WithUploadBatch(100, 0))
	if err != nil {
		t.Fatal(err)
	}
	for i := range total {
		sp.Record(testEvent("s1", 0, i))
	}
	if err := sp.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The server takes 650 events, then goes away.
	first := &collector{acceptUpTo: 650, failed: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- sp.Run(context.Background(), first) }()
	select {
	case <-first.failed:
	case <-time.After(10 * time.Second):
		t.Fatal("the uploader was never refused")
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run after Close: %v, want nil", err)
	}
	delivered := len(first.ids())
	if delivered != 600 {
		t.Fatalf("first run delivered %d, want 600 (6 batches of 100)", delivered)
	}

	sp = openSpool(t, dir, fastRetry)
	if got := sp.Pending(); got != total-delivered {
		t.Fatalf("after reopening, %d pending, want %d", got, total-delivered)
	}
	second := &collector{}
	runSpool(t, sp, second)
	waitFor(t, "the rest to be delivered", 10*time.Second, func() bool { return sp.Pending() == 0 })
	checkDelivery(t, append(first.ids(), second.ids()...), total)
}

func TestSpoolTornTail(t *testing.T) {
	const n = 100
	cases := []struct {
		name string
		// damage changes the segment file; last is the offset of its last record.
		damage func(t *testing.T, path string, size, last int64)
		keep   int // events that survive
	}{
		{"garbage appended", func(t *testing.T, path string, size, last int64) {
			appendBytes(t, path, []byte("\x13\x00\x00\x00garbage after a crash"))
		}, n},
		{"zeros appended", func(t *testing.T, path string, size, last int64) {
			appendBytes(t, path, make([]byte, 4096))
		}, n},
		{"length runs past the end", func(t *testing.T, path string, size, last int64) {
			appendBytes(t, path, []byte{0xe8, 0x03, 0, 0, 1, 2, 3, 4, '{', '"'})
		}, n},
		{"cut inside the last record", func(t *testing.T, path string, size, last int64) {
			truncate(t, path, size-5)
		}, n - 1},
		{"cut inside the last header", func(t *testing.T, path string, size, last int64) {
			truncate(t, path, last+3)
		}, n - 1},
		{"last record altered", func(t *testing.T, path string, size, last int64) {
			b, _ := os.ReadFile(path)
			b[last+recordHeader+10] ^= 0x20
			os.WriteFile(path, b, 0o600)
		}, n - 1},
		{"first record altered", func(t *testing.T, path string, size, last int64) {
			b, _ := os.ReadFile(path)
			b[headerSize+recordHeader+3] ^= 0x01 // the first record's payload
			os.WriteFile(path, b, 0o600)
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sp, err := OpenSpool(dir)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				sp.Record(testEvent("s1", 0, i))
			}
			if err := sp.Close(); err != nil {
				t.Fatal(err)
			}
			segs, _ := segmentFiles(t, dir)
			path := segPath(dir, segs[len(segs)-1])
			sc, err := scanSegment(path)
			if err != nil || len(sc.starts) != n {
				t.Fatalf("before damage: %d records, %v", len(sc.starts), err)
			}
			last := sc.starts[n-1]
			tc.damage(t, path, sc.size, last)

			sp = openSpool(t, dir)
			if got := sp.Pending(); got != tc.keep {
				t.Fatalf("%d events pending after reopening, want %d", got, tc.keep)
			}
			wantSize := sc.size
			if tc.keep < n {
				wantSize = last
			}
			if tc.keep == 0 {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Fatalf("the damaged segment with no intact record is still there: %v", err)
				}
			} else if info, err := os.Stat(path); err != nil || info.Size() != wantSize {
				t.Fatalf("segment is %d bytes after reopening, want %d (%v)", info.Size(), wantSize, err)
			}
			// The spool goes on working: one more event comes after the kept ones.
			sp.Record(testEvent("s1", 0, n))
			c := &collector{}
			runSpool(t, sp, c)
			waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 })
			var want []string
			for i := range tc.keep {
				want = append(want, testEvent("s1", 0, i).ID)
			}
			want = append(want, testEvent("s1", 0, n).ID)
			if got := c.ids(); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("delivered %d events %v..., want %d", len(got), head(got), len(want))
			}
		})
	}
}

func head(ids []string) []string { return ids[:min(len(ids), 3)] }

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func TestSpoolDamagedOlderSegmentIsKeptAside(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir, WithSegmentSize(2048))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		sp.Record(testEvent("s1", 0, i))
		if i%10 == 9 {
			sp.Flush(context.Background())
		}
	}
	sp.Close()
	segs, _ := segmentFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("only %d segments", len(segs))
	}
	path := segPath(dir, segs[0])
	b, _ := os.ReadFile(path)
	sc, _ := scanSegment(path)
	b[sc.starts[2]+recordHeader+5] ^= 0x40 // the third record
	os.WriteFile(path, b, 0o600)

	sp = openSpool(t, dir)
	if _, err := os.Stat(path + ".damaged"); err != nil {
		t.Fatalf("the damaged part was not kept: %v", err)
	}
	lost := len(sc.starts) - 2
	if got := sp.Pending(); got != 200-lost {
		t.Fatalf("%d pending, want %d", got, 200-lost)
	}
}

func TestSpoolShrinksAfterAcknowledgement(t *testing.T) {
	const n, segSize = 3000, 16 << 10
	dir := t.TempDir()
	sp := openSpool(t, dir, WithSegmentSize(segSize), WithUploadBatch(200, 0))
	for i := range n {
		ev := testEvent("s1", 0, i)
		ev.Statement += strings.Repeat(" ", 150)
		sp.Record(ev)
		if i%50 == 49 {
			sp.Flush(context.Background())
		}
	}
	if err := sp.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	segs, before := segmentFiles(t, dir)
	if len(segs) < 20 {
		t.Fatalf("%d segments (%d bytes) before delivery; want at least 20", len(segs), before)
	}
	c := &collector{}
	stop := runSpool(t, sp, c)
	waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 })
	stop()
	segs, after := segmentFiles(t, dir)
	if len(segs) > 2 || after > 2*segSize+4096 {
		t.Fatalf("after delivery %d segments, %d bytes remain (before: %d bytes)", len(segs), after, before)
	}
	checkDelivery(t, c.ids(), n)
	t.Logf("spool: %d bytes before delivery, %d after", before, after)

	// Reopened, the acknowledged data is gone and nothing is sent again.
	sp.Close()
	sp = openSpool(t, dir)
	if sp.Pending() != 0 {
		t.Fatalf("%d pending after reopening a delivered spool", sp.Pending())
	}
	if segs, size := segmentFiles(t, dir); len(segs) != 1 || size != headerSize {
		t.Fatalf("after reopening: segments %v, %d bytes", segs, size)
	}
}

func TestSpoolBoundsMemory(t *testing.T) {
	const writers, perWriter, maxEvents = 4, 2000, 16
	sp := openSpool(t, t.TempDir(), WithMaxBuffer(maxEvents, 1<<20), WithWriteBatch(8), WithFlushInterval(time.Millisecond))
	var most int
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			sp.mu.Lock()
			most = max(most, len(sp.buf))
			sp.mu.Unlock()
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				sp.Record(testEvent("s1", g, i))
			}
		}()
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	if most > maxEvents {
		t.Fatalf("the buffer held %d events, the bound is %d", most, maxEvents)
	}
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 20*time.Second, func() bool { return sp.Pending() == 0 })
	checkDelivery(t, c.ids(), writers*perWriter)
}

func TestSpoolWaitsForAFailingDisk(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sp := openSpool(t, t.TempDir(), WithMaxBuffer(10, 1<<20), WithBackoff(time.Millisecond, 5*time.Millisecond),
		WithFlushInterval(time.Millisecond), WithLogger(quiet))
	sp.failAppend = func() error {
		if failing.Load() {
			return errors.New("no space left on device (injected)")
		}
		return nil
	}
	var recorded atomic.Int32
	go func() {
		for i := range 100 {
			sp.Record(testEvent("s1", 0, i))
			recorded.Add(1)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	// The writer holds one batch (at most 10) and retries it; 10 more fill
	// the buffer; the next Record waits.
	if n := recorded.Load(); n < 10 || n > 21 {
		t.Fatalf("%d events recorded while the disk fails; Record should wait once the buffer (10) is full", n)
	}
	failing.Store(false)
	waitFor(t, "recording to resume", 5*time.Second, func() bool { return recorded.Load() == 100 })
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 })
	checkDelivery(t, c.ids(), 100)
}

func TestSpoolReopenAfterFullDelivery(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		sp.Record(testEvent("s1", 0, i))
	}
	stop := runSpool(t, sp, &collector{})
	waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 })
	stop()
	sp.Close()
	// Someone removes the delivered segment by hand. The next segment must
	// still not reuse its number, or its events would count as delivered.
	segs, _ := segmentFiles(t, dir)
	for _, n := range segs {
		os.Remove(segPath(dir, n))
	}
	for round := 1; round <= 2; round++ {
		sp, err = OpenSpool(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := sp.Pending(), 5*(round-1); got != want {
			t.Fatalf("round %d: %d pending, want %d", round, got, want)
		}
		for i := range 5 {
			sp.Record(testEvent("s1", round, i))
		}
		sp.Close()
	}
	sp = openSpool(t, dir)
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 })
	if got := c.ids(); len(got) != 10 || got[0] != testEvent("s1", 1, 0).ID || got[9] != testEvent("s1", 2, 4).ID {
		t.Fatalf("delivered %v", got)
	}
}

func TestSpoolKeepsRejectedEvents(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir)
	for i := range 10 {
		sp.Record(testEvent("s1", 0, i))
	}
	sp.Flush(context.Background())
	var mu sync.Mutex
	var stored []string
	up := UploaderFunc(func(ctx context.Context, b Batch) error {
		batch, err := b.Events()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		var rej []Rejection
		for _, ev := range batch {
			if ev.ID == testEvent("s1", 0, 4).ID {
				rej = append(rej, Rejection{ID: ev.ID, SessionID: ev.SessionID, Reason: "no such session"})
				continue
			}
			stored = append(stored, ev.ID)
		}
		if rej != nil {
			return fmt.Errorf("the server said: %w", &RejectedError{Rejected: rej})
		}
		return nil
	})
	runSpool(t, sp, up)
	waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 })
	b, err := os.ReadFile(filepath.Join(dir, rejectedName))
	if err != nil {
		t.Fatal(err)
	}
	var kept struct {
		Reason string `json:"reason"`
		Event  Event  `json:"event"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(b), &kept); err != nil || kept.Event.ID != testEvent("s1", 0, 4).ID ||
		kept.Reason != "no such session" || kept.Event.Statement == "" {
		t.Fatalf("rejected.jsonl holds %q (%v)", b, err)
	}
	if info, _ := os.Stat(filepath.Join(dir, rejectedName)); info.Mode().Perm() != 0o600 {
		t.Fatalf("rejected.jsonl has mode %v", info.Mode().Perm())
	}
}

func TestSpoolFilesAndLocking(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	sp := openSpool(t, dir)
	sp.Record(testEvent("s1", 0, 0))
	if err := sp.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("spool directory mode %v, %v", info.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, _ := e.Info(); info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	if _, err := OpenSpool(dir); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("a second OpenSpool on the same directory: %v", err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close: Run and Flush say so, Record does not panic.
	if err := sp.Run(context.Background(), &collector{}); !errors.Is(err, ErrSpoolClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
	sp.Record(testEvent("s1", 0, 1))
	if err := sp.Flush(context.Background()); err != nil {
		t.Fatalf("Flush after Close with nothing new: %v", err)
	}
	// Close writes what was buffered.
	sp = openSpool(t, dir, WithFlushInterval(time.Hour))
	sp.Record(testEvent("s1", 0, 2))
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp = openSpool(t, dir)
	if sp.Pending() != 2 {
		t.Fatalf("%d pending, want 2", sp.Pending())
	}
}

// TestHelperProcess is the child of TestSpoolSurvivesSIGKILL: it records
// events as fast as it can, flushing every 100 and saying so on stdout,
// until it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("AIRLOCK_SPOOL_HELPER_DIR")
	if dir == "" {
		t.Skip("the child process of TestSpoolSurvivesSIGKILL")
	}
	g, _ := strconv.Atoi(os.Getenv("AIRLOCK_SPOOL_HELPER_ROUND"))
	sp, err := OpenSpool(dir, WithFlushInterval(time.Millisecond), WithSegmentSize(256<<10))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	// Odd rounds write big events, so that a batch takes many pages and
	// the kill has a chance to land inside a write.
	pad := strings.Repeat("x", 600)
	if g%2 == 1 {
		pad = strings.Repeat("y", 64<<10)
	}
	for i := 0; ; i++ {
		ev := testEvent("s1", g, i)
		ev.Statement += " -- " + pad
		sp.Record(ev)
		if (i+1)%100 == 0 {
			if err := sp.Flush(context.Background()); err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
			fmt.Printf("flushed %d\n", i+1)
		}
	}
}

func TestSpoolSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	// Six rounds at least; more, up to maxRounds, until a kill has torn a
	// record: whether one lands inside a write depends on the scheduler
	// (a loaded machine makes it rarer), and the test must see one.
	const rounds, maxRounds = 6, 40
	dir := t.TempDir()
	var flushed []int
	torn := 0
	for r := 0; r < rounds || (torn == 0 && r < maxRounds); r++ {
		flushed = append(flushed, 0)
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "AIRLOCK_SPOOL_HELPER_DIR="+dir, "AIRLOCK_SPOOL_HELPER_ROUND="+strconv.Itoa(r))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		target := 1500 + 700*r
		if r%2 == 1 {
			target = 300
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if n, ok := strings.CutPrefix(line, "flushed "); ok {
				flushed[r], _ = strconv.Atoi(n)
				if flushed[r] >= target {
					break
				}
			} else if strings.HasPrefix(line, "error") {
				t.Fatalf("child: %s", line)
			}
		}
		if r%2 == 1 {
			// Kill it the moment its newest segment grows: a write of
			// megabytes is then most likely still copying pages.
			killWhenGrowing(dir)
		} else {
			time.Sleep(time.Duration(r%3) * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if flushed[r] < target {
			t.Fatalf("round %d: the child flushed only %d events; stderr:\n%s", r, flushed[r], stderr.String())
		}
		// Did the kill tear a record? (Informative: it usually does.)
		if segs, _ := listSegments(dir); len(segs) > 0 {
			if sc, err := scanSegment(segPath(dir, segs[len(segs)-1])); err == nil && sc.validEnd < sc.size {
				torn++
			}
		}
	}
	t.Logf("flushed per round %v; %d of %d kills left a torn tail", flushed, torn, len(flushed))
	if torn == 0 {
		t.Fatal("no kill landed inside a write: the test did not exercise a torn tail")
	}

	sp := openSpool(t, dir, WithUploadBatch(1000, 0))
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 30*time.Second, func() bool { return sp.Pending() == 0 })
	got := c.ids()
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s is in the spool %d times", id, n)
		}
	}
	for r := range flushed {
		for i := range flushed[r] {
			if id := testEvent("s1", r, i).ID; seen[id] != 1 {
				t.Fatalf("round %d: flushed event %s is missing", r, id)
			}
		}
	}
	// Nothing out of order, and nothing invented: each round's events are a
	// prefix of what the child recorded, in order.
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("event %s comes after %s", got[i], got[i-1])
		}
	}
	t.Logf("%d events in the spool after %d kills; %d were flushed", len(got), len(flushed), sum(flushed))
}

// killWhenGrowing returns when the newest segment in dir changes size (or
// after a second).
func killWhenGrowing(dir string) {
	size := func() int64 {
		segs, _ := listSegments(dir)
		if len(segs) == 0 {
			return -1
		}
		info, err := os.Stat(segPath(dir, segs[len(segs)-1]))
		if err != nil {
			return -1
		}
		return info.Size()
	}
	first := size()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if s := size(); s != first && s > headerSize {
			return
		}
	}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func FuzzScanSegment(f *testing.F) {
	var seg []byte
	seg = append(seg, segmentMagic...)
	b, _ := json.Marshal(testEvent("s1", 0, 1))
	seg = appendRecord(seg, b)
	f.Add(seg)
	f.Add(append(seg, 0, 0, 0))
	f.Add([]byte(segmentMagic[:3]))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := scanSegmentReader(bytes.NewReader(data), int64(len(data)), nil)
		if err != nil {
			return
		}
		if sc.validEnd > sc.size {
			t.Fatalf("valid end %d beyond size %d", sc.validEnd, sc.size)
		}
		// Every record scan accepts reads back intact.
		for i, off := range sc.starts {
			end := sc.validEnd
			if i+1 < len(sc.starts) {
				end = sc.starts[i+1]
			}
			br := bufio.NewReader(bytes.NewReader(data[off:end]))
			if _, n, err := readRecord(br, end-off, nil); err != nil || n != end-off {
				t.Fatalf("record at %d: %d bytes, %v", off, n, err)
			}
		}
	})
}
