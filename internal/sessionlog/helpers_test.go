package sessionlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupShared()
	os.Exit(code)
}

// testEvent makes event i of writer g in session. The same arguments give
// the same event; its id sorts by writer, then i.
func testEvent(session string, g, i int) Event {
	return Event{
		ID:        fmt.Sprintf("ev-%02d-%07d-%s", g, i, session),
		SessionID: session,
		Time:      testEpoch.Add(time.Duration(g)*time.Hour + time.Duration(i)*time.Millisecond),
		ConnID:    fmt.Sprintf("conn-%d", g),
		Kind:      KindQuery,
		Statement: fmt.Sprintf("SELECT %d FROM t WHERE writer = %d", i, g),
		Outcome:   "SELECT 1",
		Rows:      1,
	}
}

var testEpoch = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

// collector is an Uploader that keeps what it was sent. It fails the first
// failFirst calls, and every call from acceptUpTo events on (when set).
type collector struct {
	mu         sync.Mutex
	failFirst  int
	acceptUpTo int // 0: no limit
	calls      int
	failures   int
	attempts   [][]string // first id of every call, in order
	got        []Event    // every event of every successful call, in order
	failed     chan struct{}
	failedOnce sync.Once
}

func (c *collector) Upload(ctx context.Context, b Batch) error {
	batch, err := b.Events()
	if err != nil {
		return err
	}
	if len(batch) != b.Len() {
		return fmt.Errorf("the batch holds %d events and says %d", len(batch), b.Len())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.attempts = append(c.attempts, []string{batch[0].ID})
	if c.calls <= c.failFirst || (c.acceptUpTo > 0 && len(c.got)+len(batch) > c.acceptUpTo) {
		c.failures++
		if c.failed != nil {
			c.failedOnce.Do(func() { close(c.failed) })
		}
		return fmt.Errorf("upload %d refused by the test", c.calls)
	}
	c.got = append(c.got, slices.Clone(batch)...)
	return nil
}

func (c *collector) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.got))
	for i, ev := range c.got {
		out[i] = ev.ID
	}
	return out
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runSpool runs sp.Run in the background until the test ends; the returned
// function stops it and returns Run's result.
func runSpool(t *testing.T, sp *Spool, up Uploader) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx, up) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = fmt.Errorf("Run did not return within 10 s of its context ending")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func openSpool(t *testing.T, dir string, opts ...SpoolOption) *Spool {
	t.Helper()
	sp, err := OpenSpool(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// segmentFiles returns the segment files in dir and their total size.
func segmentFiles(t *testing.T, dir string) ([]uint64, int64) {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, n := range segs {
		info, err := os.Stat(segPath(dir, n))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since the listing: delivered
		}
		if err != nil {
			t.Fatal(err)
		}
		total += info.Size()
	}
	return segs, total
}

func segPath(dir string, n uint64) string { return dir + "/" + segmentName(n) }

// checkDelivery checks that got holds every id of want exactly once and
// nothing else, and that each writer's events came in the order recorded.
func checkDelivery(t *testing.T, got []string, want int) {
	t.Helper()
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	if len(seen) != want {
		t.Fatalf("%d distinct events delivered, want %d", len(seen), want)
	}
	last := map[string]string{} // writer -> last id
	for _, id := range got {
		w := id[:len("ev-00")]
		if prev, ok := last[w]; ok && id <= prev {
			t.Fatalf("event %s delivered after %s: out of order", id, prev)
		}
		last[w] = id
	}
}
