package sessionlog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startOf makes the start record of statement i of writer g: what an
// engine hands Begin before it forwards the statement.
func startOf(session string, g, i int) Event {
	ev := testEvent(session, g, i)
	ev.ID = "start-" + ev.ID
	ev.Outcome, ev.Rows = "", 0
	return ev
}

// finalOf makes the final event of statement i of writer g, naming its
// start.
func finalOf(session string, g, i int) Event {
	ev := testEvent(session, g, i)
	ev.StartID = startOf(session, g, i).ID
	return ev
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Begin writes its record to the segment file before it returns, with no
// fsync of its own: another reader of the file finds it at once, even
// with a writer that would wait an hour to write a batch.
func TestBeginWritesBeforeReturning(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir, WithFlushInterval(time.Hour), WithWriteBatch(1<<20))
	for i := range 20 {
		ev := startOf("s1", 0, i)
		if err := sp.Begin(ev); err != nil {
			t.Fatal(err)
		}
		segs, _ := segmentFiles(t, dir)
		b, err := os.ReadFile(segPath(dir, segs[len(segs)-1]))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`"id":"`+ev.ID+`"`)) {
			t.Fatalf("Begin %d returned and its record is not in the segment file", i)
		}
	}
	sp.mu.Lock()
	written := sp.written
	sp.mu.Unlock()
	if written != 0 {
		t.Fatalf("the writer wrote %d events: Begin must not go through it", written)
	}
}

// TestBeginHelperProcess is the child of TestBeginSurvivesSIGKILL: it
// begins statements and records the final events of some, says "ready"
// on stdout, and waits to be killed.
//
//   - statements 0..99: begun, final recorded, flushed: on disk;
//   - statements 100..199: begun; the final of the even ones recorded but
//     never written (an hour's flush interval), the odd ones still running.
func TestBeginHelperProcess(t *testing.T) {
	dir := os.Getenv("AIRLOCK_BEGIN_HELPER_DIR")
	if dir == "" {
		t.Skip("the child process of TestBeginSurvivesSIGKILL")
	}
	sp, err := OpenSpool(dir, WithFlushInterval(time.Hour), WithWriteBatch(1<<20))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	for i := range 200 {
		if err := sp.Begin(startOf("s1", 0, i)); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		if i < 100 || i%2 == 0 {
			sp.Record(finalOf("s1", 0, i))
		}
		if i == 99 {
			if err := sp.Flush(context.Background()); err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
		}
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
}

// kill -9 after Begin returned loses no statement: after a restart, the
// statements whose final event was on disk are delivered once, as their
// final event; the others (final recorded but only in memory, or still
// running) as their start record, with outcome "outcome unknown" and why.
func TestBeginSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBeginHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "AIRLOCK_BEGIN_HELPER_DIR="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	ready := false
	for !ready && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "error") {
			cmd.Process.Kill()
			t.Fatalf("child: %s", sc.Text())
		}
		ready = sc.Text() == "ready"
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if !ready {
		t.Fatalf("the child never got ready; stderr:\n%s", stderr.String())
	}

	sp := openSpool(t, dir, WithLogger(quietLogger()))
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 })
	c.mu.Lock()
	got := c.got
	c.mu.Unlock()
	if len(got) != 200 {
		t.Fatalf("%d events delivered after the kill; want 200, one per statement", len(got))
	}
	for i, ev := range got {
		switch {
		case i < 100:
			if want := finalOf("s1", 0, i); ev.ID != want.ID || ev.StartID != want.StartID || ev.Outcome != "SELECT 1" {
				t.Fatalf("event %d: %+v; want the final event %s", i, ev, want.ID)
			}
		default:
			want := startOf("s1", 0, i)
			if ev.ID != want.ID || ev.Statement != want.Statement || ev.Outcome != OutcomeUnknown ||
				!strings.Contains(ev.ErrorMsg, "gateway stopped before this statement's answer was recorded") {
				t.Fatalf("event %d: %+v; want the start %s with outcome unknown", i, ev, want.ID)
			}
		}
	}
	// Delivered: a restart sends nothing again.
	sp.Close()
	sp2 := openSpool(t, dir, WithLogger(quietLogger()))
	if n := sp2.Pending(); n != 0 {
		t.Fatalf("after delivery and a restart %d events are pending", n)
	}
}

// The upload never acknowledges past a start record whose final event is
// recorded but only in memory: were the process killed then, the restart
// would resume after the start, and the statement would be lost. Once the
// final event is written, the start is skipped and the final delivered.
func TestUploadWaitsAtStartWithFinalInMemory(t *testing.T) {
	sp := openSpool(t, t.TempDir(), WithFlushInterval(time.Hour), WithWriteBatch(1<<20), WithRunningAfter(time.Hour))
	sp.Record(testEvent("s1", 1, 0)) // an event before the statements
	if err := sp.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := sp.Begin(startOf("s1", 0, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Flush(context.Background()); err != nil { // the starts are durable
		t.Fatal(err)
	}
	sp.Record(finalOf("s1", 0, 0)) // in memory: the flush interval is an hour
	sp.Record(finalOf("s1", 0, 1))
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "the first event", 5*time.Second, func() bool { return len(c.ids()) == 1 })
	time.Sleep(300 * time.Millisecond)
	if ids := c.ids(); len(ids) != 1 || ids[0] != testEvent("s1", 1, 0).ID {
		t.Fatalf("delivered %v before the final events were written", ids)
	}
	sp.mu.Lock()
	ack := sp.ack
	sp.mu.Unlock()
	first, _, err := scanFirstStart(sp.dir)
	if err != nil {
		t.Fatal(err)
	}
	if ack.seg > first.seg || ack.seg == first.seg && ack.off > first.off {
		t.Fatalf("acknowledged up to %v, past the start record at %v whose final event is only in memory", ack, first)
	}
	if err := sp.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the final events", 5*time.Second, func() bool { return sp.Pending() == 0 })
	want := []string{testEvent("s1", 1, 0).ID, finalOf("s1", 0, 0).ID, finalOf("s1", 0, 1).ID}
	if got := c.ids(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v; want %v (no start record)", got, want)
	}
}

// scanFirstStart returns the position of the first start record in the
// spool in dir.
func scanFirstStart(dir string) (position, bool, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return position{}, false, err
	}
	for _, n := range segs {
		found := int64(-1)
		if _, err := scanSegmentVisit(segPath(dir, n), func(off int64, payload []byte) {
			if found < 0 && isStartRecord(payload) {
				found = off
			}
		}); err != nil {
			return position{}, false, err
		}
		if found >= 0 {
			return position{seg: n, off: found}, true, nil
		}
	}
	return position{}, false, nil
}

// A statement that runs longer than WithRunningAfter has its start
// delivered as it is (no outcome: running), and its final event after it,
// once it comes.
func TestUploadDeliversLongRunningStart(t *testing.T) {
	sp := openSpool(t, t.TempDir(), WithFlushInterval(time.Millisecond), WithRunningAfter(100*time.Millisecond))
	c := &collector{}
	runSpool(t, sp, c)
	begun := time.Now()
	if err := sp.Begin(startOf("s1", 0, 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the running statement", 5*time.Second, func() bool { return len(c.ids()) == 1 })
	if waited := time.Since(begun); waited < 100*time.Millisecond {
		t.Fatalf("the start was delivered after %v, before WithRunningAfter", waited)
	}
	c.mu.Lock()
	ev := c.got[0]
	c.mu.Unlock()
	if want := startOf("s1", 0, 0); ev.ID != want.ID || ev.Outcome != "" || ev.Statement != want.Statement {
		t.Fatalf("delivered %+v; want the start record, running", ev)
	}
	sp.Record(finalOf("s1", 0, 0))
	waitFor(t, "the final event", 5*time.Second, func() bool { return sp.Pending() == 0 && len(c.ids()) == 2 })
	if got := c.ids(); got[1] != finalOf("s1", 0, 0).ID {
		t.Fatalf("delivered %v; want the start, then the final event", got)
	}
}

// A start whose final event was dropped (the spool fails open) is
// delivered with outcome unknown, saying why.
func TestUploadDeliversStartOfLostFinal(t *testing.T) {
	var failing atomic.Bool
	sp := openSpool(t, t.TempDir(), WithFailOpen(true), WithFlushInterval(time.Millisecond), WithLogger(quietLogger()))
	sp.failAppend = func() error {
		if failing.Load() {
			return errors.New("input/output error (injected)")
		}
		return nil
	}
	if err := sp.Begin(startOf("s1", 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := sp.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	sp.Record(finalOf("s1", 0, 0))
	waitFor(t, "the final event to be dropped", 5*time.Second, func() bool { return sp.Stats().Dropped == 1 })
	failing.Store(false)
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 5*time.Second, func() bool { return len(c.ids()) == 1 })
	c.mu.Lock()
	ev := c.got[0]
	c.mu.Unlock()
	if ev.ID != startOf("s1", 0, 0).ID || ev.Outcome != OutcomeUnknown || !strings.Contains(ev.ErrorMsg, "could not record this statement's answer") {
		t.Fatalf("delivered %+v; want the start with outcome unknown", ev)
	}
}

// Over the size cap Begin writes nothing and says why (fail closed); under
// WithFailOpen it lets the statement run, counting the loss.
func TestBeginOverSizeCap(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		t.Run(fmt.Sprintf("failOpen=%v", failOpen), func(t *testing.T) {
			dir := t.TempDir()
			sp := openSpool(t, dir, WithMaxSize(4096), WithFailOpen(failOpen), WithLogger(quietLogger()))
			small := startOf("s1", 0, 0)
			if err := sp.Begin(small); err != nil {
				t.Fatal(err)
			}
			_, before := segmentFiles(t, dir)
			big := startOf("s1", 0, 1)
			big.Statement += strings.Repeat("x", 4096)
			err := sp.Begin(big)
			var se *SpoolError
			switch {
			case failOpen && err != nil:
				t.Fatalf("Begin = %v under fail open", err)
			case failOpen && sp.Stats().Dropped != 1:
				t.Fatalf("Stats = %+v; want the lost start counted", sp.Stats())
			case !failOpen && (!errors.As(err, &se) || !se.Full || !strings.Contains(err.Error(), "spool is full")):
				t.Fatalf("Begin over the cap = %v; want a *SpoolError saying the spool is full", err)
			}
			if _, after := segmentFiles(t, dir); after != before {
				t.Fatalf("the segments grew from %d to %d bytes: Begin over the cap wrote", before, after)
			}
			sp.mu.Lock()
			_, kept := sp.starts[big.ID]
			sp.mu.Unlock()
			if kept {
				t.Fatal("the refused start is remembered as running")
			}
		})
	}
}

// A closed spool refuses Begin, with words a client can be told.
func TestBeginAfterClose(t *testing.T) {
	sp := openSpool(t, t.TempDir(), WithLogger(quietLogger()))
	sp.Close()
	err := sp.Begin(startOf("s1", 0, 0))
	var se *SpoolError
	if !errors.As(err, &se) || !se.Closed || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Begin after Close = %v", err)
	}
}

// With WithSyncAlways, Begin returns once an fsync covers its record.
func TestBeginSyncAlways(t *testing.T) {
	sp := openSpool(t, t.TempDir(), WithSyncAlways(true), WithFlushInterval(time.Hour))
	for i := range 20 {
		if err := sp.Begin(startOf("s1", 0, i)); err != nil {
			t.Fatal(err)
		}
		sp.mu.Lock()
		durable := sp.durableLocked(sp.lastBegin)
		sp.mu.Unlock()
		if !durable {
			t.Fatalf("Begin %d returned before its record was fsynced", i)
		}
	}
}

// recordIDs reads the ids of the records the spool writes, and of any
// other JSON by decoding it.
func TestRecordIDs(t *testing.T) {
	for _, tc := range []struct {
		payload     string
		id, startID string
		start       bool
	}{
		{payload: `{"id":"a","startId":"b","sessionId":"s"}`, id: "a", startID: "b"},
		{payload: `{"id":"a","sessionId":"s"}`, id: "a"},
		{payload: `{"start":true,"id":"a","sessionId":"s"}`, id: "a", start: true},
		{payload: `{"id":"a\"q","startId":"b"}`, id: `a"q`, startID: "b"},
		{payload: `{"sessionId":"s","startId":"b","id":"a"}`, id: "a", startID: "b"},
		{payload: `not json`},
	} {
		id, startID, start := recordIDs([]byte(tc.payload))
		if id != tc.id || startID != tc.startID || start != tc.start {
			t.Errorf("recordIDs(%s) = %q, %q, %v; want %q, %q, %v", tc.payload, id, startID, start, tc.id, tc.startID, tc.start)
		}
	}
	// What Begin writes, as the reader sees it.
	rec := appendStartRecord(nil, []byte(`{"id":"x","kind":"query"}`))
	br := bufio.NewReader(bytes.NewReader(rec))
	payload, _, err := readRecord(br, int64(len(rec)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if id, _, start := recordIDs(payload); id != "x" || !start {
		t.Fatalf("a start record reads as %q, start=%v", id, start)
	}
	if got := string(eventOfStart(nil, payload)); got != `{"id":"x","kind":"query"}` {
		t.Fatalf("a start record is delivered as %s", got)
	}
}

// At the size cap, the final event of a young statement may not be
// written until deliveries free space: the upload then delivers its start
// as running rather than wait at it for ever (which would hold back the
// very deliveries that free the space).
func TestUploadAtSizeCapDeliversStartAsRunning(t *testing.T) {
	sp := openSpool(t, t.TempDir(), WithMaxSize(8<<10), WithRunningAfter(time.Hour), WithFlushInterval(time.Millisecond),
		WithBackoff(time.Millisecond, 10*time.Millisecond), WithLogger(quietLogger()))
	if err := sp.Begin(startOf("s1", 0, 0)); err != nil {
		t.Fatal(err)
	}
	big := func(i int) Event {
		ev := testEvent("s1", 1, i)
		ev.Statement += strings.Repeat("z", 3<<10)
		return ev
	}
	for i := range 2 {
		sp.Record(big(i))
		if err := sp.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	sp.Record(big(2)) // over the cap: Err reports it
	waitFor(t, "the spool to be full", 5*time.Second, func() bool {
		var se *SpoolError
		return errors.As(sp.Err(), &se) && se.Full
	})
	sp.Record(finalOf("s1", 0, 0)) // behind the events that do not fit
	c := &collector{}
	runSpool(t, sp, c)
	waitFor(t, "delivery", 10*time.Second, func() bool { return sp.Pending() == 0 && len(c.ids()) == 5 })
	want := []string{startOf("s1", 0, 0).ID, big(0).ID, big(1).ID, big(2).ID, finalOf("s1", 0, 0).ID}
	if got := c.ids(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v; want %v", got, want)
	}
	c.mu.Lock()
	first := c.got[0]
	c.mu.Unlock()
	if first.Outcome != "" {
		t.Fatalf("the start was delivered as %+v; want it running", first)
	}
	waitFor(t, "Err to clear", 5*time.Second, func() bool { return sp.Err() == nil })
}
