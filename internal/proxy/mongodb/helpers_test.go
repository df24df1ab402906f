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
	rec  *memRecorder
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	addr string
}

// startProxy serves cfg on 127.0.0.1 at a free port under a new Session
// with a recorder (and opts).
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
	p.sess = common.NewSession("sess-test", append([]common.SessionOption{common.WithRecorder(p.rec)}, opts...)...)
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
