package webconsole

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/session"
)

// fakeSessions is the session service as a console sees it.
type fakeSessions struct {
	mu     sync.Mutex
	status string
	reason string
	ended  map[string]string // session id: why EndWeb was called
}

func (f *fakeSessions) CreateWeb(context.Context, string, string, string, string, string, ...session.CreateOption) (*session.Created, error) {
	panic("not used")
}

func (f *fakeSessions) Get(_ context.Context, id string) (*session.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &session.Session{ID: id, Status: f.status, EndReason: f.reason}, nil
}

func (f *fakeSessions) EndWeb(ctx context.Context, id, why string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if api.PrincipalFrom(ctx) == nil {
		panic("EndWeb without a principal")
	}
	f.ended[id] = why
	return nil
}

func (f *fakeSessions) ClientSeen(context.Context, string) {}

func (f *fakeSessions) PresenceInterval() time.Duration { return time.Second }

func (f *fakeSessions) endedWhy(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ended[id]
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestManager(t *testing.T) (*Manager, *fakeSessions, *clock) {
	t.Helper()
	fs := &fakeSessions{status: session.StatusActive, ended: map[string]string{}}
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	m, err := New(Config{Sessions: fs, Now: clk.Now, CheckEvery: 5 * time.Millisecond,
		Dial: func(context.Context, string, string) (net.Conn, error) { panic("not used") }})
	if err != nil {
		t.Fatal(err)
	}
	return m, fs, clk
}

// add registers a console without a connection, as Open would.
func (m *Manager) add(id string, attached bool) *Console {
	now := m.cfg.Now()
	c := &Console{ID: id, SessionID: "s-" + id, owner: &api.Principal{Kind: api.SubjectUser, ID: "u1"}, web: "w1",
		opened: now, lastUsed: now, attached: attached, done: make(chan struct{})}
	m.mu.Lock()
	m.consoles[id] = c
	m.mu.Unlock()
	go m.watch(c)
	return c
}

func waitDone(t *testing.T, c *Console) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("console %s did not end", c.ID)
	}
}

func TestIdleConsoleEnds(t *testing.T) {
	m, fs, clk := newTestManager(t)
	c := m.add("a", true)
	time.Sleep(30 * time.Millisecond)
	select {
	case <-c.Done():
		t.Fatal("a fresh console ended")
	default:
	}
	clk.add(DefaultIdleTimeout)
	waitDone(t, c)
	if why := fs.endedWhy("s-a"); !strings.Contains(why, "idle for 10m") {
		t.Fatalf("ended with %q", why)
	}
	if _, err := m.Get("a", &api.Principal{Kind: api.SubjectUser, ID: "u1"}, "w1"); err == nil {
		t.Fatal("an ended console is still found")
	}
}

func TestConsoleWhosePageNeverConnectsEnds(t *testing.T) {
	m, fs, clk := newTestManager(t)
	c := m.add("b", false)
	clk.add(AttachTimeout)
	waitDone(t, c)
	if why := fs.endedWhy("s-b"); !strings.Contains(why, "never connected") {
		t.Fatalf("ended with %q", why)
	}
}

func TestConsoleClosesWhenItsSessionEndsElsewhere(t *testing.T) {
	m, fs, _ := newTestManager(t)
	c := m.add("c", true)
	fs.mu.Lock()
	fs.status, fs.reason = session.StatusEnded, session.Terminated
	fs.mu.Unlock()
	waitDone(t, c)
	if !strings.Contains(c.EndReason(), "terminated by an administrator") {
		t.Fatalf("the console says %q", c.EndReason())
	}
	if why := fs.endedWhy("s-c"); why != "" {
		t.Fatalf("the console ended an ended session again (%q)", why)
	}
}

func TestConsoleBelongsToItsBrowserLogin(t *testing.T) {
	m, _, _ := newTestManager(t)
	m.add("d", true)
	owner := &api.Principal{Kind: api.SubjectUser, ID: "u1"}
	if _, err := m.Get("d", owner, "w1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("d", owner, "w2"); err == nil {
		t.Fatal("another browser login of the same user got the console")
	}
	if _, err := m.Get("d", &api.Principal{Kind: api.SubjectUser, ID: "u2"}, "w1"); err == nil {
		t.Fatal("another user got the console")
	}
}

func TestSQLOverOneMiBIsRefusedBeforeItIsSent(t *testing.T) {
	c := &Console{} // no connection: nothing may be sent
	_, err := c.Run(context.Background(), "select '"+strings.Repeat("x", MaxSQLBytes)+"'", time.Second)
	if err == nil || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("Run: %v", err)
	}
}

func TestTypeName(t *testing.T) {
	for _, tc := range []struct {
		oid  uint32
		mod  int32
		want string
	}{
		{23, -1, "int4"}, {25, -1, "text"}, {1043, 24, "varchar(20)"}, {1700, (10<<16 | 2) + 4, "numeric(10,2)"}, {999999, -1, "oid 999999"},
	} {
		if got := typeName(tc.oid, tc.mod); got != tc.want {
			t.Errorf("typeName(%d, %d) = %q, want %q", tc.oid, tc.mod, got, tc.want)
		}
	}
}
