package mongodb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/auth"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/description"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/mnet"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Validate logs in to the deployment with cfg's credentials, exactly as
// Serve does (server selection, TLS, SCRAM through the driver), and runs
// ping on the authentication database. It reports success, or a failure
// classified by its Code (tunnel.Code*) with a message a user can act on.
// The message never holds the password.
func Validate(ctx context.Context, cfg Config) tunnel.Result {
	return validate(ctx, cfg, nil)
}

// validate is Validate with the connections opened by dial (nil: the
// driver's own dialer), as Engine.Validate does with the engine's dialer.
func validate(ctx context.Context, cfg Config, dial common.DialFunc) tunnel.Result {
	conn, done, res := login(ctx, cfg, dial)
	if conn == nil {
		return res
	}
	defer done()
	pctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout())
	defer cancel()
	body := bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).AppendString("$db", cfg.authDatabase()).Build()
	rp, err := runCommand(pctx, conn, body)
	if err != nil {
		f := describeConnectError(cfg, err)
		return tunnel.Result{Code: f.code, Message: "logged in, but ping failed: " + f.message}
	}
	if !replyOK(rp.body) {
		code, m := errorOf(rp.body)
		return tunnel.Result{Code: tunnel.CodeInternal, Message: redact(fmt.Sprintf("logged in, but ping failed: %s (code %s)", m, code), cfg.Password)}
	}
	return tunnel.Result{OK: true}
}

// login opens a connection to a writable server of cfg's deployment,
// authenticated as cfg's user, through dial (nil: the driver's own
// dialer). On failure conn is nil and res says why, in words that never
// hold the password; otherwise done closes the connection and its
// topology.
func login(ctx context.Context, cfg Config, dial common.DialFunc) (conn *mnet.Connection, done func(), res tunnel.Result) {
	if err := cfg.Check(); err != nil {
		return nil, nil, tunnel.Result{Code: tunnel.CodeInvalid, Message: redact(err.Error(), cfg.Password)}
	}
	topo, err := newTopology(cfg, dial)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		// A mongodb+srv:// host is looked up while the URI is read: a
		// host that does not resolve is unreachable, not a malformed URI.
		f := describeConnectError(cfg, err)
		return nil, nil, tunnel.Result{Code: f.code, Message: f.message}
	}
	if err != nil {
		return nil, nil, tunnel.Result{Code: tunnel.CodeInvalid, Message: redact(err.Error(), cfg.Password)}
	}
	disconnect := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), disconnectTimeout)
		defer cancel()
		_ = topo.Disconnect(dctx)
	}
	conn, err = acquire(ctx, topo, cfg)
	if err != nil {
		disconnect()
		f := describeConnectError(cfg, err)
		return nil, nil, tunnel.Result{Code: f.code, Message: f.message}
	}
	return conn, func() { expire(conn); disconnect() }, tunnel.Result{}
}

// runCommand sends one command document on conn and returns its reply.
func runCommand(ctx context.Context, conn *mnet.Connection, body bsoncore.Document) (*reply, error) {
	if err := conn.Write(ctx, appendMsg(nil, wiremessage.NextRequestID(), 0, body)); err != nil {
		return nil, err
	}
	msg, err := conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	return parseReply(msg)
}

// writable selects the servers a client's commands may go to: the
// primary of a replica set, a mongos, a standalone; in a direct connection
// or behind a load balancer, the one server there is.
type writable struct{}

func (writable) SelectServer(t description.Topology, candidates []description.Server) ([]description.Server, error) {
	switch t.Kind {
	case description.TopologyKindSingle, description.TopologyKindLoadBalanced:
		return candidates, nil
	}
	var out []description.Server
	for _, c := range candidates {
		switch c.Kind {
		case description.ServerKindRSPrimary, description.ServerKindMongos, description.ServerKindStandalone:
			out = append(out, c)
		}
	}
	return out, nil
}

// acquire checks out an authenticated connection to a writable server of
// topo, within cfg's connect timeout.
func acquire(ctx context.Context, topo *topology.Topology, cfg Config) (*mnet.Connection, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout())
	defer cancel()
	srv, err := topo.SelectServer(ctx, writable{})
	if err != nil {
		return nil, err
	}
	return srv.Connection(ctx)
}

// expire closes an upstream connection for good rather than return it to
// the pool: a client may have left it in any state.
func expire(conn *mnet.Connection) {
	if e, ok := conn.ReadWriteCloser.(driver.Expirable); ok {
		_ = e.Expire()
		return
	}
	_ = conn.Close()
}

// connectFailure is a classified upstream connection failure.
type connectFailure struct {
	code    string // a tunnel.Code* constant
	message string // for a user; never holds the password
	// mongoCode is the error code a client is answered with.
	mongoCode int32
}

// describeConnectError classifies an error from connecting to cfg's
// deployment, with any occurrence of the password removed.
func describeConnectError(cfg Config, err error) connectFailure {
	f := classify(cfg, err)
	f.message = redact(f.message, cfg.Password)
	if f.mongoCode == 0 {
		f.mongoCode = codeHostUnreachable
	}
	return f
}

func classify(cfg Config, err error) connectFailure {
	// A server selection that timed out says why in the servers' last
	// errors (a refused dial, a TLS failure, an authentication failure
	// met by the monitor).
	var sse topology.ServerSelectionError
	if errors.As(err, &sse) {
		for _, s := range sse.Desc.Servers {
			if s.LastError != nil {
				f := classify(cfg, s.LastError)
				if f.code != tunnel.CodeInternal {
					return f
				}
			}
		}
		return connectFailure{code: tunnel.CodeUnreachable,
			message: fmt.Sprintf("cannot reach a writable MongoDB server for %s within %s (servers seen: %s)", cfg.URI, cfg.connectTimeout(), describeServers(sse.Desc))}
	}
	if msg, ok := describeTLSError(err); ok {
		return connectFailure{code: tunnel.CodeTLS, message: fmt.Sprintf("TLS connection to MongoDB at %s failed: %s", cfg.URI, msg)}
	}
	var de driver.Error
	if errors.As(err, &de) && (de.Code == codeAuthenticationFailed || de.Name == "AuthenticationFailed") {
		return connectFailure{code: tunnel.CodeAuthFailed, mongoCode: codeAuthenticationFailed,
			message: fmt.Sprintf("MongoDB refused the login for user %s: wrong username or password (auth database %s)", cfg.User, cfg.authDatabase())}
	}
	var ae *auth.Error
	if errors.As(err, &ae) {
		return connectFailure{code: tunnel.CodeAuthFailed, mongoCode: codeAuthenticationFailed,
			message: fmt.Sprintf("MongoDB refused the login for user %s: %s", cfg.User, ae.Error())}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		reason := dnsErr.Err
		if dnsErr.IsNotFound {
			reason = "no such host"
		}
		// A mongodb+srv:// host is looked up as _SERVICE._tcp.HOST.
		if _, host, ok := strings.Cut(dnsErr.Name, "._tcp."); ok && strings.HasPrefix(dnsErr.Name, "_") {
			return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("cannot resolve host %s (its SRV record %s): %s", host, dnsErr.Name, reason)}
		}
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("cannot resolve host %s: %s", dnsErr.Name, reason)}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("cannot reach MongoDB at %s: %s", opErr.Addr, innermost(opErr))}
	}
	if errors.Is(err, context.Canceled) {
		return connectFailure{code: tunnel.CodeInternal, message: fmt.Sprintf("the connection to MongoDB at %s was canceled", cfg.URI)}
	}
	if errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err) {
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("cannot reach MongoDB at %s: no answer within %s", cfg.URI, cfg.connectTimeout())}
	}
	if opErr != nil {
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("the connection to MongoDB at %s broke: %s", cfg.URI, innermost(opErr))}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return connectFailure{code: tunnel.CodeUnreachable, message: fmt.Sprintf("MongoDB at %s closed the connection during the login (is it a MongoDB server, and does it expect TLS?)", cfg.URI)}
	}
	if errors.As(err, &de) {
		return connectFailure{code: tunnel.CodeInternal, message: fmt.Sprintf("MongoDB at %s refused the connection: %s (code %d)", cfg.URI, de.Message, de.Code)}
	}
	return connectFailure{code: tunnel.CodeInternal, message: fmt.Sprintf("cannot connect to MongoDB at %s: %v", cfg.URI, err)}
}

// describeServers lists the servers of a topology description and their
// kinds, for an error message.
func describeServers(t description.Topology) string {
	if len(t.Servers) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(t.Servers))
	for _, s := range t.Servers {
		parts = append(parts, fmt.Sprintf("%s %s", s.Addr, s.Kind))
	}
	return strings.Join(parts, ", ")
}

// redactErr is err with the password removed from its text.
func redactErr(err error, password string) error {
	return errors.New(redact(err.Error(), password))
}

// The helpers both engines share.
var (
	describeTLSError = common.DescribeTLSError
	isNetTimeout     = common.IsNetTimeout
	innermost        = common.Innermost
	redact           = common.Redact
)
