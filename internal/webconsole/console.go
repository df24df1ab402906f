package webconsole

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/pki"
)

// Limits of a console.
const (
	// MaxSQLBytes is the largest batch of SQL a console sends.
	MaxSQLBytes = 1 << 20
	// MaxRows is how many rows of each result a console keeps and shows.
	MaxRows = 1000
	// DefaultStatementTimeout is the statement_timeout of a console's
	// connection.
	DefaultStatementTimeout = 30 * time.Second
	// DefaultIdleTimeout ends a console nobody used for this long.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultDuration is how long a console's session lasts at most (less
	// when the project's maximum session is shorter).
	DefaultDuration = time.Hour
	// AttachTimeout ends a console whose page has not opened its event
	// stream this long after the console opened.
	AttachTimeout = 30 * time.Second
	// maxCellBytes cuts a longer value shown in the grid.
	maxCellBytes = 10 << 10
)

// Column is a result column: its name and its type's name.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Result is what one statement of a batch returned.
type Result struct {
	// Command is the command tag, such as "SELECT 3" or "INSERT 0 1".
	Command string `json:"command"`
	// RowsAffected is the tag's row count (rows returned, inserted,
	// updated or deleted).
	RowsAffected int64       `json:"rowsAffected"`
	Columns      []Column    `json:"columns,omitempty"`
	Rows         [][]*string `json:"rows,omitempty"`
	// Truncated: more rows came than MaxRows; Rows holds the first MaxRows.
	Truncated bool `json:"truncated,omitempty"`
	// TotalRows is how many rows came (when Truncated).
	TotalRows int64 `json:"totalRows,omitempty"`
}

// SQLError is an error the database answered with.
type SQLError struct {
	Severity string `json:"severity,omitempty"`
	Code     string `json:"code,omitempty" doc:"SQLSTATE"`
	Message  string `json:"message"`
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
	Position int32  `json:"position,omitempty"`
}

// RunResult is the answer to a batch: the results of the statements that
// ran, the error that stopped it (if any), and the transaction state after.
type RunResult struct {
	Results []Result  `json:"results"`
	Error   *SQLError `json:"error,omitempty"`
	// TxStatus is idle, in transaction or failed transaction.
	TxStatus string `json:"txStatus"`
	Elapsed  string `json:"elapsed"`
}

// Console is one browser console: a live connection of a web session.
type Console struct {
	ID           string
	SessionID    string
	ProjectID    string
	ResourceID   string
	ResourceName string
	AccountName  string
	Username     string
	Database     string
	ExpiresAt    time.Time
	// StatementTimeout is the connection's statement_timeout (the
	// project's console setting).
	StatementTimeout time.Duration

	owner *api.Principal
	web   string // the web session (browser login) it belongs to
	conn  *pgconn.PgConn

	// run holds the connection for one batch or catalog query at a time;
	// running says a user's batch is running or waiting for it: a second
	// batch is refused, while a batch waits for a catalog query (the
	// schema browser's, bounded to 30 s) instead of failing.
	run     sync.Mutex
	running atomic.Bool

	mu       sync.Mutex
	opened   time.Time
	tx       string // the transaction state (TxStatus)
	attached bool   // its page's event stream has connected
	lastUsed time.Time
	ended    bool
	endWhy   string
	done     chan struct{}
}

// Done is closed when the console has ended.
func (c *Console) Done() <-chan struct{} { return c.done }

// Attach records that the console's page has connected its event stream;
// from then on, the stream's end ends the console. It reports false when
// another stream is attached already (a second tab of the same console).
func (c *Console) Attach() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.attached {
		return false
	}
	c.attached = true
	return true
}

// EndReason says why the console ended ("" while it is live).
func (c *Console) EndReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endWhy
}

// Owns reports whether the console belongs to the principal and browser
// login.
func (c *Console) Owns(p *api.Principal, webSession string) bool {
	return p != nil && p.Kind == c.owner.Kind && p.ID == c.owner.ID && webSession == c.web
}

// TxStatus is the connection's transaction state in words, as the last
// statement left it.
func (c *Console) TxStatus() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tx == "" {
		return "idle"
	}
	return c.tx
}

// touch records that the console was used, and the transaction state its
// last statement left; the caller holds c.run (so the connection is its).
func (c *Console) touch(now time.Time) {
	tx := "idle"
	switch c.conn.TxStatus() {
	case 'T':
		tx = "in transaction"
	case 'E':
		tx = "failed transaction"
	}
	c.mu.Lock()
	c.lastUsed, c.tx = now, tx
	c.mu.Unlock()
}

// errBusy says a batch is running.
var errBusy = errs.E("webconsole.Run", errs.Conflict, "a statement is running: wait for it, or press Cancel")

// Run sends a batch of one or more statements (the simple query protocol,
// as psql does) and reads its results. The gateway records each
// statement. timeout bounds the wait for the answer, beyond the
// database's statement_timeout; the caller's cancellation is ignored (a
// closed request must not cut the connection: use Cancel).
func (c *Console) Run(ctx context.Context, sql string, timeout time.Duration) (*RunResult, error) {
	const op = "webconsole.(*Console).Run"
	if len(sql) > MaxSQLBytes {
		return nil, errs.Ef(op, errs.Invalid, "the SQL is %d bytes; the console sends at most %d (1 MiB)", len(sql), MaxSQLBytes)
	}
	if !c.running.CompareAndSwap(false, true) {
		return nil, errBusy
	}
	defer c.running.Store(false)
	c.run.Lock()
	defer c.run.Unlock()
	if c.conn.IsClosed() {
		return nil, errs.E(op, errs.Conflict, "the console's connection is closed: open Web Access again")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if stmts := splitStatements(sql); len(stmts) == 1 || len(stmts) > 1 && !beginAtomic.MatchString(sql) {
		return c.runStatements(ctx, stmts)
	}
	// No statement (white space, comments), or a batch this console cannot
	// split: sent as one simple query. Rows over MaxRows are then read
	// from the database and dropped.
	start := time.Now()
	out := &RunResult{Results: []Result{}}
	mrr := c.conn.Exec(ctx, sql)
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		res := Result{}
		fds := rr.FieldDescriptions()
		for _, fd := range fds {
			res.Columns = append(res.Columns, Column{Name: fd.Name, Type: typeName(fd.DataTypeOID, fd.TypeModifier)})
		}
		var n int64
		for rr.NextRow() {
			n++
			if n > MaxRows {
				continue // read and dropped: the simple protocol sends every row
			}
			vals := rr.Values()
			row := make([]*string, len(vals))
			for i, v := range vals {
				if v == nil {
					continue
				}
				s := string(v)
				if len(s) > maxCellBytes {
					s = s[:maxCellBytes] + "…"
				}
				row[i] = &s
			}
			res.Rows = append(res.Rows, row)
		}
		tag, err := rr.Close()
		if err != nil {
			break // mrr.Close returns it
		}
		res.Command = tag.String()
		res.RowsAffected = tag.RowsAffected()
		if n > MaxRows {
			res.Truncated, res.TotalRows = true, n
		}
		if fds != nil && res.Rows == nil {
			res.Rows = [][]*string{}
		}
		out.Results = append(out.Results, res)
	}
	err := mrr.Close()
	c.touch(time.Now())
	out.Elapsed = time.Since(start).Round(time.Millisecond).String()
	if err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			if c.conn.IsClosed() {
				return nil, errs.Wrap(op, errs.Unavailable, "the connection to the database was lost (the session may have ended)", err)
			}
			return nil, errs.Wrap(op, errs.Unavailable, "running the SQL failed", err)
		}
		out.Error = &SQLError{Severity: pe.Severity, Code: pe.Code, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint, Position: pe.Position}
	}
	out.TxStatus = c.TxStatus()
	return out, nil
}

// runStatements runs statements with the extended protocol, asking for at
// most MaxRows rows of each (Execute's row limit): the database sends no
// more, and the result says that there were more (PortalSuspended)
// without counting them. One Sync ends the batch, so that, as for a
// simple query of several statements, they run in one implicit
// transaction (unless they hold BEGIN/COMMIT) and an error skips the
// rest.
func (c *Console) runStatements(ctx context.Context, stmts []string) (*RunResult, error) {
	const op = "webconsole.(*Console).runStatements"
	start := time.Now()
	fe := c.conn.Frontend()
	for _, sql := range stmts {
		fe.SendParse(&pgproto3.Parse{Query: sql})
		fe.SendBind(&pgproto3.Bind{})
		fe.SendDescribe(&pgproto3.Describe{ObjectType: 'P'})
		fe.SendExecute(&pgproto3.Execute{MaxRows: MaxRows})
	}
	fe.SendSync(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		c.conn.Close(context.Background())
		return nil, errs.Wrap(op, errs.Unavailable, "the connection to the database was lost (the session may have ended)", err)
	}
	out := &RunResult{Results: []Result{}}
	var res *Result
	result := func() *Result {
		if res == nil {
			res = &Result{}
		}
		return res
	}
	// done ends the current statement's result.
	done := func() {
		out.Results = append(out.Results, *res)
		res = nil
	}
	for {
		msg, err := c.conn.ReceiveMessage(ctx)
		if err != nil {
			c.conn.Close(context.Background())
			return nil, errs.Wrap(op, errs.Unavailable, "the connection to the database was lost (the session may have ended)", err)
		}
		switch m := msg.(type) {
		case *pgproto3.RowDescription:
			r := result()
			r.Rows = [][]*string{}
			for _, f := range m.Fields {
				r.Columns = append(r.Columns, Column{Name: string(f.Name), Type: typeName(f.DataTypeOID, f.TypeModifier)})
			}
		case *pgproto3.DataRow:
			r := result()
			row := make([]*string, len(m.Values))
			for i, v := range m.Values {
				if v == nil {
					continue
				}
				s := string(v)
				if len(s) > maxCellBytes {
					s = s[:maxCellBytes] + "…"
				}
				row[i] = &s
			}
			r.Rows = append(r.Rows, row)
		case *pgproto3.CommandComplete:
			r := result()
			tag := pgconn.NewCommandTag(string(m.CommandTag))
			r.Command, r.RowsAffected = tag.String(), tag.RowsAffected()
			done()
		case *pgproto3.PortalSuspended:
			r := result()
			r.Truncated = true
			r.Command, r.RowsAffected = fmt.Sprintf("SELECT %d (more not fetched)", len(r.Rows)), int64(len(r.Rows))
			done()
		case *pgproto3.EmptyQueryResponse:
			result()
			done()
		case *pgproto3.ErrorResponse:
			res = nil // a statement's rows before its error are not its result
			pe := pgconn.ErrorResponseToPgError(m)
			out.Error = &SQLError{Severity: pe.Severity, Code: pe.Code, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint, Position: pe.Position}
		case *pgproto3.CopyInResponse:
			fe.Send(&pgproto3.CopyFail{Message: "the web console sends no COPY data: use COPY ... TO STDOUT or airlock db access"})
			if err := fe.Flush(); err != nil {
				c.conn.Close(context.Background())
				return nil, errs.Wrap(op, errs.Unavailable, "the connection to the database was lost", err)
			}
		case *pgproto3.ReadyForQuery:
			c.touch(time.Now())
			out.Elapsed = time.Since(start).Round(time.Millisecond).String()
			out.TxStatus = c.TxStatus()
			return out, nil
		}
	}
}

// Cancel asks the database to cancel what the console runs: a real
// CancelRequest, sent through the gateway on a new connection of the
// session.
func (c *Console) Cancel(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.conn.CancelRequest(ctx); err != nil {
		return errs.Wrap("webconsole.(*Console).Cancel", errs.Unavailable, "sending the cancel request failed", err)
	}
	return nil
}

var types = pgtype.NewMap()

// typeName names a column's type, with its length or precision when the
// type modifier gives one.
func typeName(oid uint32, mod int32) string {
	t, ok := types.TypeForOID(oid)
	if !ok {
		return "oid " + strconv.FormatUint(uint64(oid), 10)
	}
	name := t.Name
	switch name {
	case "varchar", "bpchar":
		if mod > 4 {
			return fmt.Sprintf("%s(%d)", name, mod-4)
		}
	case "numeric":
		if mod > 4 {
			return fmt.Sprintf("numeric(%d,%d)", (mod-4)>>16, (mod-4)&0xffff)
		}
	}
	return name
}

// connect opens the console's connection through the relay.
func connect(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), key any, certPEM, caPEM, serverName, user, database string, statementTimeout time.Duration) (*pgconn.PgConn, error) {
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return nil, errors.New("the session has no client certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	pool, err := pki.PoolFromPEM([]byte(caPEM))
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}},
		RootCAs:      pool,
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS13,
	}
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database, cfg.Password = "airlock-gateway", 5432, user, database, ""
	cfg.TLSConfig, cfg.Fallbacks = nil, nil
	cfg.ConnectTimeout = 20 * time.Second
	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
	cfg.RuntimeParams = map[string]string{
		"application_name":  "airlock web console",
		"statement_timeout": strconv.FormatInt(statementTimeout.Milliseconds(), 10),
	}
	cfg.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		raw, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, tc)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("the session's gateway refused the connection: %w", err)
		}
		return c, nil
	}
	return pgconn.ConnectConfig(ctx, cfg)
}
