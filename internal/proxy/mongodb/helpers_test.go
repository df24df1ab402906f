package mongodb

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// testTimeout bounds every step a test waits for.
const testTimeout = 60 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// memRecorder keeps the events recorded.
type memRecorder struct {
	mu     sync.Mutex
	events []sessionlog.Event
}

func (r *memRecorder) Record(ev sessionlog.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *memRecorder) all() []sessionlog.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sessionlog.Event(nil), r.events...)
}

// commands returns the command events named name.
func (r *memRecorder) commands(name string) []sessionlog.Event {
	var out []sessionlog.Event
	for _, ev := range r.all() {
		if ev.Kind == sessionlog.KindCommand && ev.Command == name {
			out = append(out, ev)
		}
	}
	return out
}

// waRecorder is a memRecorder that also takes start records (a
// sessionlog.WriteAheadRecorder, as the gateway's spool): onBegin, when
// set, runs in Begin, before the command can be forwarded, and its error
// fails Begin.
type waRecorder struct {
	*memRecorder
	onBegin func(ev sessionlog.Event) error

	smu    sync.Mutex
	starts []sessionlog.Event
}

func (r *waRecorder) Begin(ev sessionlog.Event) error {
	if r.onBegin != nil {
		if err := r.onBegin(ev); err != nil {
			return err
		}
	}
	r.smu.Lock()
	defer r.smu.Unlock()
	r.starts = append(r.starts, ev)
	return nil
}

func (r *waRecorder) allStarts() []sessionlog.Event {
	r.smu.Lock()
	defer r.smu.Unlock()
	return append([]sessionlog.Event(nil), r.starts...)
}

// checkStarts checks that each final event that names a start record
// names one of rec's, of the same command and statement, and that no
// start is named twice.
func checkStarts(t testing.TB, rec *waRecorder) {
	t.Helper()
	starts := map[string]sessionlog.Event{}
	for _, st := range rec.allStarts() {
		starts[st.ID] = st
	}
	named := map[string]bool{}
	for _, ev := range rec.all() {
		if ev.StartID == "" {
			continue
		}
		st, ok := starts[ev.StartID]
		switch {
		case !ok:
			t.Errorf("the %s event %s names no start record", ev.Command, ev.ID)
		case named[ev.StartID]:
			t.Errorf("two final events name the start of %s", st.Command)
		case st.Kind != ev.Kind || st.Command != ev.Command || st.Statement != ev.Statement ||
			st.Database != ev.Database || st.Collection != ev.Collection || st.Outcome != "":
			t.Errorf("the %s event %+v names the start %+v", ev.Command, ev, st)
		}
		named[ev.StartID] = true
	}
}

// configFor returns the Config of a FerretDB user.
func configFor(f *testenv.FerretDB, u testenv.MongoUser) Config {
	cfg := Config{
		URI:            "mongodb://" + f.Addr() + "/",
		AuthDatabase:   u.Source,
		User:           u.User,
		Password:       u.Password,
		ConnectTimeout: 10 * time.Second,
	}
	if f.TLS {
		cfg.TLS = tunnel.TLS{Enabled: true, RejectUnauthorized: true, CAPEM: string(f.CA.CertPEM)}
	}
	return cfg
}

// proxy is an Engine serving a local listener for one Session.
type proxy struct {
	t    testing.TB
	ln   net.Listener
	sess *common.Session
	rec  *memRecorder // the final events; the session records into wa
	wa   *waRecorder
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	addr string
}

// startProxy serves cfg on 127.0.0.1 at a free port under a new Session
// with a recorder that takes start records, as the gateway's spool does
// (and opts). When the test ends, each final event must name a start of
// the same command.
func startProxy(t testing.TB, cfg Config, opts ...common.SessionOption) *proxy {
	t.Helper()
	return startProxyWith(t, cfg, nil, opts...)
}

// startProxyWith is startProxy with an Engine configured by engOpts too.
func startProxyWith(t testing.TB, cfg Config, engOpts []Option, opts ...common.SessionOption) *proxy {
	t.Helper()
	logs := &syncBuffer{}
	eng, err := NewEngine(append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}, engOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, rec: &memRecorder{}, addr: ln.Addr().String()}
	p.wa = &waRecorder{memRecorder: p.rec}
	p.sess = common.NewSession("sess-test", append([]common.SessionOption{common.WithRecorder(p.wa)}, opts...)...)
	ctx, cancel := context.WithCancel(context.Background())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				err := eng.Serve(ctx, c, p.sess, cfg)
				p.mu.Lock()
				p.errs = append(p.errs, err)
				p.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		endSession(p.sess)
		cancel()
		done := make(chan struct{})
		go func() { p.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("Serve calls did not return within 10s of the session's close")
		}
		if cfg.Password != "" && strings.Contains(logs.String(), cfg.Password) {
			t.Errorf("the engine's log holds the password")
		}
		checkStarts(t, p.wa)
		if t.Failed() {
			t.Logf("engine log:\n%s", logs.String())
		}
	})
	return p
}

func (p *proxy) uri() string {
	return "mongodb://" + p.addr + "/?directConnection=true"
}

// serveErrors returns the errors Serve returned so far.
func (p *proxy) serveErrors() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.errs...)
}

// connect returns a driver client for the proxy, without credentials.
func (p *proxy) connect(t testing.TB) *mongo.Client {
	t.Helper()
	return connectURI(t, p.uri())
}

func connectURI(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	return connectTimeout(t, uri, 10*time.Second)
}

func connectTimeout(t testing.TB, uri string, selection time.Duration) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(selection).
		SetConnectTimeout(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Disconnect(ctx)
	})
	return c
}

// noSecret fails t if any recorded event holds one of secrets.
func noSecret(t testing.TB, rec *memRecorder, secrets ...string) {
	t.Helper()
	for _, ev := range rec.all() {
		for _, s := range secrets {
			if s == "" {
				continue
			}
			for _, f := range []string{ev.Statement, ev.ErrorMsg, ev.Collection, ev.Command} {
				if strings.Contains(f, s) {
					t.Errorf("event %s %s holds a secret: %q", ev.Kind, ev.Command, f)
				}
			}
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func isSessionClosed(err error) bool { return errors.Is(err, ErrSessionClosed) }

// endSession ends sess as an administrator's termination does.
func endSession(sess *common.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sess.End(ctx, tunnel.EndTerminated, "session terminated by an administrator")
}
