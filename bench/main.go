// Command bench measures what Airlock's PostgreSQL path costs next to a
// direct connection and PgBouncer, on one machine in one run, and writes the
// figures into BENCHMARKS.md.
//
//	go run ./bench -out BENCHMARKS.md      # the full run, about 9 minutes
//	go run ./bench -smoke                  # a few seconds per measurement
//
// It starts a PostgreSQL 15 cluster of its own (postgres.go), PgBouncer in
// session mode (pgbouncer.go), Airlock: a server with the embedded store, a
// gateway and `airlock db access` (airlock.go), the gateway's engine alone
// (enginehop.go) and two Go relays that only copy bytes, the floors
// (floor.go). It then runs pgbench against them in alternating rounds, reads
// the CPU time and memory of the proxies' processes from /proc (measure.go),
// and writes Markdown tables with the targets of the benchmark issue, each
// marked met or missed (report.go). A second, smaller table compares MongoDB find-by-_id against
// FerretDB directly and through Airlock (mongodb.go). It reports; it never
// asserts.
//
// Every process it starts is stopped when it ends, also on failure or Ctrl+C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// config is what one run does.
type config struct {
	// Out is the Markdown file whose marked section receives the table;
	// empty means only print it.
	Out string
	// Smoke shortens everything: it checks the harness works, its figures
	// mean little.
	Smoke bool
	// Duration is the length of one pgbench run.
	Duration time.Duration
	// Rounds is how many times every (measurement, target) pair runs; the
	// targets alternate within each round so drift hits them alike.
	Rounds int
	// Warmup is the length of one 8-client warm-up run per target before the
	// rounds; zero skips it.
	Warmup time.Duration
	// Scale is pgbench's scale factor (-i -s).
	Scale int
	// Idle is the number of idle connections for the memory measurement.
	Idle int
	// SessionStarts is how many `airlock db access` starts are timed.
	SessionStarts int
	// Mongo adds the MongoDB find-by-_id measurement against FerretDB
	// (mongodb.go).
	Mongo bool
	// MongoDocs is how many documents the MongoDB collection holds.
	MongoDocs int
	// ServerTLS serves the Airlock server over HTTPS (a generated CA), as in
	// production; false serves plain HTTP.
	ServerTLS bool
	// PerfDir, when set, receives `perf record -g` profiles of the Airlock
	// processes during an extra 8-client run and an extra -C run, which are
	// not counted.
	PerfDir string
	// DebugPort, when set, is the first of three loopback ports where the
	// server, the gateway and the PostgreSQL `db access` serve Go profiles.
	DebugPort int
	// AirlockBin is a prebuilt airlock binary to run instead of building
	// this module's (e.g. one built with other flags).
	AirlockBin string
	// Cmdline is how the run was started, for the report.
	Cmdline string
	// Note is added to the report's run line (e.g. what binary was run).
	Note string
	// Keep leaves the work directory (logs, data) in place.
	Keep bool
	// Log receives progress lines.
	Log io.Writer
}

func defaultConfig() config {
	return config{
		Duration:      8 * time.Second,
		Rounds:        3,
		Warmup:        3 * time.Second,
		Scale:         10,
		Idle:          1000,
		SessionStarts: 10,
		Mongo:         true,
		MongoDocs:     1000,
		ServerTLS:     true,
		Log:           os.Stderr,
	}
}

// applySmoke shortens c for a smoke run.
func (c *config) applySmoke() {
	c.Smoke = true
	c.Duration = 2 * time.Second
	c.Rounds = 1
	c.Warmup = 0
	c.Scale = 1
	c.Idle = 50
	c.SessionStarts = 3
}

func main() {
	maybeServeEngineHop()
	cfg := defaultConfig()
	flag.StringVar(&cfg.Out, "out", "", "Markdown file to write the results into, between <!-- bench:start --> and <!-- bench:end --> (e.g. BENCHMARKS.md); empty prints only")
	flag.BoolVar(&cfg.Smoke, "smoke", false, "smoke mode: 2 s per run, one round, scale 1, 50 idle connections, 3 session starts")
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each pgbench run (whole seconds)")
	flag.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds of alternating runs per measurement")
	flag.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "warm-up run per target before the rounds (0 to skip)")
	flag.IntVar(&cfg.Scale, "scale", cfg.Scale, "pgbench scale factor")
	flag.IntVar(&cfg.Idle, "idle", cfg.Idle, "idle connections for the memory measurement")
	flag.IntVar(&cfg.SessionStarts, "session-starts", cfg.SessionStarts, "timed `airlock db access` starts")
	flag.BoolVar(&cfg.Mongo, "mongodb", cfg.Mongo, "also measure MongoDB find-by-_id against FerretDB, direct and through Airlock (builds FerretDB into internal/testenv's cache on first use)")
	flag.IntVar(&cfg.MongoDocs, "mongodb-docs", cfg.MongoDocs, "documents in the MongoDB collection (FerretDB v1 scans them for every find by _id)")
	flag.BoolVar(&cfg.ServerTLS, "server-tls", cfg.ServerTLS, "serve the Airlock server over HTTPS, as in production")
	flag.IntVar(&cfg.DebugPort, "debug-port", 0, "serve Go profiles (airlock --debug-addr) of the server, the gateway and the PostgreSQL `db access` on 127.0.0.1 at this port and the next two")
	flag.StringVar(&cfg.PerfDir, "perf", "", "directory for `perf record -g` profiles of the Airlock processes and the engine hop during an extra 8-client run and an extra -C run (not counted)")
	flag.StringVar(&cfg.AirlockBin, "airlock-bin", "", "run this airlock binary instead of building ./cmd/airlock")
	flag.StringVar(&cfg.Note, "note", "", "a remark for the report's run line, e.g. which Airlock build was measured")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the work directory (logs and data) for inspection")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if cfg.Smoke {
		// Explicit flags still win over the smoke defaults.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		s := cfg
		s.applySmoke()
		keep := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		keep("duration", func() { cfg.Duration = s.Duration })
		keep("rounds", func() { cfg.Rounds = s.Rounds })
		keep("warmup", func() { cfg.Warmup = s.Warmup })
		keep("scale", func() { cfg.Scale = s.Scale })
		keep("idle", func() { cfg.Idle = s.Idle })
		keep("session-starts", func() { cfg.SessionStarts = s.SessionStarts })
	}

	cfg.Cmdline = strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " "))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(res.Markdown())
}

// run sets everything up, measures, stops everything, and writes the report
// into cfg.Out if set.
func run(ctx context.Context, cfg config) (_ *results, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(cfg.Log, "bench: "+format+"\n", a...)
	}
	raiseFileLimit(logf)

	work, err := os.MkdirTemp(tempParent(), "airlock-bench-")
	if err != nil {
		return nil, fmt.Errorf("create the work directory: %w", err)
	}
	// The postgres user must reach its files below.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	procs := &procSet{}
	defer func() {
		interrupted := err != nil && ctx.Err() != nil
		if interrupted {
			err = fmt.Errorf("interrupted: %w", context.Cause(ctx))
		}
		if stopErr := procs.stopAll(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		if err != nil && !interrupted {
			for _, t := range procs.logTails(40) {
				fmt.Fprintln(cfg.Log, t)
			}
		}
		if cfg.Keep || (err != nil && !interrupted) {
			logf("work directory kept: %s", work)
		} else {
			os.RemoveAll(work)
		}
	}()

	started := time.Now()
	env := &environment{cfg: cfg, work: work, procs: procs, logf: logf}
	res, err := env.measureAll(ctx)
	if err != nil {
		return nil, err
	}
	res.Took = time.Since(started)
	if cfg.Out != "" {
		if err := writeReport(cfg.Out, res.Markdown()); err != nil {
			return res, err
		}
		logf("wrote %s", cfg.Out)
	}
	return res, nil
}

func (c *config) validate() error {
	if c.Duration < time.Second || c.Duration%time.Second != 0 {
		return fmt.Errorf("-duration %s: give whole seconds, at least 1s (pgbench -T)", c.Duration)
	}
	if c.Warmup != 0 && (c.Warmup < time.Second || c.Warmup%time.Second != 0) {
		return fmt.Errorf("-warmup %s: give whole seconds, or 0", c.Warmup)
	}
	if c.Rounds < 1 {
		return fmt.Errorf("-rounds %d: at least 1", c.Rounds)
	}
	if c.Scale < 1 {
		return fmt.Errorf("-scale %d: at least 1", c.Scale)
	}
	if c.Idle < 1 || c.Idle > 5000 {
		return fmt.Errorf("-idle %d: between 1 and 5000", c.Idle)
	}
	if c.SessionStarts < 1 {
		return fmt.Errorf("-session-starts %d: at least 1", c.SessionStarts)
	}
	if c.Mongo && (c.MongoDocs < 1 || c.MongoDocs > 1_000_000) {
		return fmt.Errorf("-mongodb-docs %d: between 1 and 1000000", c.MongoDocs)
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.AirlockBin != "" {
		abs, err := filepath.Abs(c.AirlockBin)
		if err != nil {
			return err
		}
		if info, err := os.Stat(abs); err != nil || info.Mode()&0o111 == 0 {
			return fmt.Errorf("-airlock-bin %s: not an executable file", c.AirlockBin)
		}
		c.AirlockBin = abs
	}
	if c.Out != "" {
		abs, err := filepath.Abs(c.Out)
		if err != nil {
			return err
		}
		c.Out = abs
	}
	return nil
}

// raiseFileLimit sets the soft limit of open files to the hard limit, so that
// the idle-connection measurement (a socket per connection in this process,
// the CLI, the gateway and PgBouncer) does not run out. Children inherit it:
// an explicit Setrlimit stops Go from restoring the original limit in them.
func raiseFileLimit(logf func(string, ...any)) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logf("cannot read the open-file limit: %v", err)
		return
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logf("cannot raise the open-file limit: %v", err)
	}
	if lim.Cur < 8192 {
		logf("warning: the open-file limit is %d; the idle-connection measurement may fail (raise it with ulimit -n)", lim.Cur)
	}
}

// tempParent returns a directory for the work directory that every user can
// enter (the postgres user must reach the cluster's files).
func tempParent() string {
	dir := os.TempDir()
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil || info.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if d == "/" {
			return dir
		}
	}
}

// environment is one run's work directory, processes and configuration.
type environment struct {
	cfg   config
	work  string
	procs *procSet
	logf  func(string, ...any)
}

// measureAll starts PostgreSQL, PgBouncer and Airlock and takes every
// measurement.
func (e *environment) measureAll(ctx context.Context) (*results, error) {
	res := &results{Cfg: e.cfg, Started: time.Now(), Cells: map[string]map[string]*cell{}, Mongo: map[string]map[string]*cell{}}
	loadStart := loadAverage()
	pg, err := e.startPostgres(ctx)
	if err != nil {
		return nil, err
	}
	res.PostgresVersion = pg.Version
	bouncer, err := e.startPgbouncer(ctx, pg)
	if err != nil {
		return nil, err
	}
	res.PgbouncerVersion = bouncer.Version
	al, err := e.startAirlock(ctx, pg)
	if err != nil {
		return nil, err
	}
	res.AirlockBuild = al.Build
	accessPort, err := urlPort(al.AccessURL)
	if err != nil {
		return nil, err
	}
	hop, hopPort, err := e.startHop(ctx, pg, hopEngine)
	if err != nil {
		return nil, err
	}
	relay, relayPort, err := e.startHop(ctx, pg, hopGoroutineRelay)
	if err != nil {
		return nil, err
	}
	loop, loopPort, err := e.startHop(ctx, pg, hopEventLoopRelay)
	if err != nil {
		return nil, err
	}
	eps := []endpoint{
		{Target: targetDirect, Host: "127.0.0.1", Port: pg.Port, User: pg.User, Password: pg.Password, Database: pg.Database},
		{Target: targetPgbouncer, Host: "127.0.0.1", Port: bouncer.Port, User: pg.User, Password: pg.Password, Database: pg.Database,
			Procs: []namedPID{{"pgbouncer", bouncer.proc.PID()}}},
		{Target: targetAirlock, Host: "127.0.0.1", Port: accessPort, User: pg.User, Database: pg.Database,
			Procs: []namedPID{{"gateway", al.Gateway.PID()}, {"server", al.Server.PID()}, {"cli", al.Access.PID()}}},
		{Target: targetHop, Host: "127.0.0.1", Port: hopPort, User: pg.User, Database: pg.Database,
			Procs: []namedPID{{"engine", hop.PID()}}},
		{Target: targetGoroutineRelay, Host: "127.0.0.1", Port: relayPort, User: pg.User, Password: pg.Password, Database: pg.Database,
			Procs: []namedPID{{"relay", relay.PID()}}, Floor: true},
		{Target: targetEventLoopRelay, Host: "127.0.0.1", Port: loopPort, User: pg.User, Password: pg.Password, Database: pg.Database,
			Procs: []namedPID{{"relay", loop.PID()}}, Floor: true},
	}
	for _, ep := range eps {
		if err := checkEndpoint(ctx, ep, e.cfg.Scale); err != nil {
			return nil, err
		}
	}
	logDir := filepath.Join(e.work, "pgbench")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		return nil, err
	}

	if e.cfg.Warmup > 0 {
		for _, ep := range eps {
			e.logf("warm-up: %s, 8 clients, %s", ep.Target, e.cfg.Warmup)
			if _, err := runPgbench(ctx, ep, workloads[1], e.cfg.Warmup, logDir); err != nil {
				return nil, err
			}
		}
	}
	total := 0
	for _, w := range workloads {
		for _, ep := range eps {
			if !ep.Floor || !w.Connect {
				total += e.cfg.Rounds
			}
		}
	}
	n := 0
	for round := 0; round < e.cfg.Rounds; round++ {
		for _, w := range workloads {
			for i := range eps {
				// Each round starts with another target.
				ep := eps[(i+round)%len(eps)]
				if ep.Floor && w.Connect {
					continue // the floors are for the per-query costs
				}
				n++
				r, err := runPgbench(ctx, ep, w, e.cfg.Duration, logDir)
				if err != nil {
					return nil, err
				}
				if res.Cells[w.Key] == nil {
					res.Cells[w.Key] = map[string]*cell{}
				}
				c := res.Cells[w.Key][ep.Target]
				if c == nil {
					c = &cell{}
					res.Cells[w.Key][ep.Target] = c
				}
				c.add(r)
				e.logf("[%d/%d] round %d, %s, %s: %.0f tps, %d transactions", n, total, round+1, w.Key, ep.Target, r.TPS, r.Tx)
			}
		}
	}

	if e.cfg.Mongo {
		if err := e.measureMongo(ctx, al, res); err != nil {
			return nil, err
		}
	}

	if e.cfg.PerfDir != "" {
		for _, ep := range eps[2:4] { // Airlock's processes and the engine hop
			files, err := e.profile(ctx, ep, logDir)
			if err != nil {
				return nil, err
			}
			res.PerfFiles = append(res.PerfFiles, files...)
		}
	}

	e.logf("timing %d session starts", e.cfg.SessionStarts)
	for i := 0; i < e.cfg.SessionStarts; i++ {
		p, _, took, err := al.startAccess(ctx, resourceName, accountName, accessURLLine)
		if err != nil {
			return nil, err
		}
		if err := endAccess(p); err != nil {
			return nil, err
		}
		res.SessionStarts = append(res.SessionStarts, took)
	}

	settle := 3 * time.Second
	if e.cfg.Smoke {
		settle = time.Second
	}
	e.logf("opening %d idle connections through Airlock", e.cfg.Idle)
	if res.IdleAirlock, err = measureIdle(ctx, eps[2], e.cfg.Idle, settle); err != nil {
		return nil, err
	}
	// The gateway closes its upstream connections when the clients go;
	// wait for PostgreSQL to see them gone before PgBouncer needs as many.
	if err := waitBackends(ctx, pg, 20); err != nil {
		return nil, err
	}
	e.logf("opening %d idle connections through PgBouncer", e.cfg.Idle)
	if res.IdlePgbouncer, err = measureIdle(ctx, eps[1], e.cfg.Idle, settle); err != nil {
		return nil, err
	}
	res.Machine = readMachine()
	res.Machine.LoadStart, res.Machine.LoadEnd = loadStart, loadAverage()
	return res, nil
}

// checkEndpoint makes sure a query through ep works and sees the pgbench
// tables.
func checkEndpoint(ctx context.Context, ep endpoint, scale int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, ep.URL())
	if err != nil {
		return fmt.Errorf("connect to %s: %w", ep.Target, err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	rs, err := c.Exec(ctx, "SELECT count(*) FROM pgbench_branches").ReadAll()
	if err != nil {
		return fmt.Errorf("query through %s: %w", ep.Target, err)
	}
	if len(rs) != 1 || len(rs[0].Rows) != 1 || string(rs[0].Rows[0][0]) != strconv.Itoa(scale) {
		return fmt.Errorf("query through %s: unexpected answer %v", ep.Target, rs)
	}
	return nil
}

// waitBackends waits until at most n backends of the bench role remain.
func waitBackends(ctx context.Context, pg *postgres, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := pgconn.Connect(ctx, pg.superURL("postgres"))
		if err != nil {
			return err
		}
		rs, err := c.Exec(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = '"+pg.User+"'").ReadAll()
		c.Close(ctx)
		if err != nil {
			return err
		}
		count, _ := strconv.Atoi(string(rs[0].Rows[0][0]))
		if count <= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections of %s still open in PostgreSQL 30 s after the clients closed them", count, pg.User)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func urlPort(raw string) (int, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return 0, fmt.Errorf("the URL of airlock db access %q: %w", raw, err)
	}
	return strconv.Atoi(u.Port())
}

// profile records `perf record -g` of ep's proxy processes during one
// extra run of each of the 8-client and the new-connection workloads, which
// are not counted in the results.
func (e *environment) profile(ctx context.Context, ep endpoint, logDir string) ([]string, error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return nil, errors.New("-perf needs the perf program (Debian's linux-perf)")
	}
	if err := os.MkdirAll(e.cfg.PerfDir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, w := range []workload{workloads[1], workloads[2]} {
		var recs []*proc
		for _, p := range ep.Procs {
			f, err := filepath.Abs(filepath.Join(e.cfg.PerfDir, fmt.Sprintf("perf-%s-%s.data", w.Key, p.Name)))
			if err != nil {
				return nil, err
			}
			cmd := exec.Command(perf, "record", "-F", "997", "-g", "-o", f, "-p", strconv.Itoa(p.PID))
			r, err := e.procs.start("perf "+p.Name, cmd, filepath.Join(e.work, "perf.log"), startOptions{StopSig: syscall.SIGINT})
			if err != nil {
				return nil, err
			}
			recs = append(recs, r)
			files = append(files, f)
		}
		time.Sleep(500 * time.Millisecond) // let perf attach
		e.logf("profiling: %s, %s, %s (not counted)", ep.Target, w.Key, e.cfg.Duration)
		_, err = runPgbench(ctx, ep, w, e.cfg.Duration, logDir)
		for _, r := range recs {
			if serr := r.stop(30 * time.Second); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		e.logf("profile: %s", f)
	}
	e.logf("read them with: perf report --no-children -i FILE")
	return files, nil
}
