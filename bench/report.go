package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The marked section of BENCHMARKS.md that the harness owns.
const (
	markStart = "<!-- bench:start -->"
	markEnd   = "<!-- bench:end -->"
)

// results is everything one run measured.
type results struct {
	Cfg              config
	Machine          machine
	Started          time.Time
	Took             time.Duration
	PostgresVersion  string
	PgbouncerVersion string
	FerretDBVersion  string
	AirlockBuild     string
	// Cells[workload key][target].
	Cells map[string]map[string]*cell
	// Mongo[MongoDB workload key][target], when Cfg.Mongo.
	Mongo         map[string]map[string]*cell
	SessionStarts []time.Duration
	IdleAirlock   idleResult
	IdlePgbouncer idleResult
	PerfFiles     []string
}

// machine describes where the run happened.
type machine struct {
	CPU, Kernel, OS, Go string
	Cores               int
	MemoryGiB           float64
	// LoadStart and LoadEnd are the 1-minute load averages when the run
	// began and ended: other work on the machine skews every figure.
	LoadStart, LoadEnd string
}

// loadAverage returns the 1-minute load average.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func readMachine() machine {
	m := machine{CPU: "unknown", Kernel: "unknown", OS: "unknown", Go: runtime.Version(), Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
				m.MemoryGiB = kb / (1 << 20)
			}
		}
	}
	return m
}

// Row labels of the results table, in order. The smoke test checks that
// every one is in the report.
var (
	workloadTitles = map[string]string{
		"S-1":   "`-S`, 1 client",
		"S-8":   "`-S`, 8 clients (`-j 8`)",
		"S-C-1": "`-S -C` (new connection per transaction), 1 client",
	}
	rowTPS        = "tps"
	rowAvgLat     = "average latency (ms)"
	rowP99Lat     = "p99 latency (ms)"
	rowConnTime   = "average connection time (ms)"
	rowCPUTotal   = "proxy CPU per transaction, all proxy processes (µs)"
	rowCPUByProc  = "proxy CPU per transaction by process (µs)"
	rowIdleMemory = "memory per idle connection (RSS growth with %d idle connections ÷ %d)"
	rowSession    = "session start: `airlock db access` to the URL line, median of %d (ms)"

	// The floor table's rows.
	rowFloorAddedLat = "`-S`, 1 client: average latency added over direct (ms)"
	rowFloorTPS      = "`-S`, 8 clients: tps"
	rowFloorCPU      = "`-S`, 8 clients: proxy CPU per transaction (µs)"
)

// tableRowLabels returns the first-column label of every row of the table.
func (r *results) tableRowLabels() []string {
	var labels []string
	for _, w := range workloads {
		rows := []string{rowTPS, rowAvgLat, rowP99Lat}
		if w.Connect {
			rows = append(rows, rowConnTime)
		}
		rows = append(rows, rowCPUTotal, rowCPUByProc)
		for _, row := range rows {
			labels = append(labels, workloadTitles[w.Key]+": "+row)
		}
	}
	labels = append(labels,
		fmt.Sprintf(rowIdleMemory, r.Cfg.Idle, r.Cfg.Idle),
		fmt.Sprintf(rowSession, r.Cfg.SessionStarts),
		rowFloorAddedLat, rowFloorTPS, rowFloorCPU)
	if r.Cfg.Mongo {
		for _, w := range mongoWorkloads {
			for _, row := range []string{rowOps, rowAvgLat, rowP99Lat, rowCPUPerOpTotal, rowCPUPerOpByProc} {
				labels = append(labels, mongoTitles[w.Key]+": "+row)
			}
		}
	}
	return labels
}

// Row labels of the MongoDB table.
var (
	mongoTitles = map[string]string{
		"M-1": "find-by-_id, 1 client",
		"M-8": "find-by-_id, 8 concurrent clients",
	}
	rowOps            = "operations per second"
	rowCPUPerOpTotal  = "proxy CPU per operation, all proxy processes (µs)"
	rowCPUPerOpByProc = "proxy CPU per operation by process (µs)"
)

func (r *results) mongoCell(w, target string) *cell {
	if c := r.Mongo[w][target]; c != nil {
		return c
	}
	return &cell{}
}

// mongoMarkdown renders the MongoDB table.
func (r *results) mongoMarkdown(p func(string, ...any)) {
	p("#### MongoDB find-by-_id\n\n")
	p("FerretDB %s on SQLite, %d documents; each operation is a `FindOne({_id: random})` with the official Go driver (go.mongodb.org/mongo-driver/v2), each client its own driver client with one connection; targets alternating as above. Direct logs in with SCRAM-SHA-256; through Airlock the gateway logs in.\n\n",
		r.FerretDBVersion, r.Cfg.MongoDocs)
	p("| Measurement | %s (FerretDB) | %s | Airlock ÷ direct |\n", targetMongoDirect, targetAirlock)
	p("| --- | ---: | ---: | ---: |\n")
	for _, w := range mongoWorkloads {
		title := mongoTitles[w.Key] + ": "
		d, a := r.mongoCell(w.Key, targetMongoDirect), r.mongoCell(w.Key, targetAirlock)
		p("| %s | %s | %s | %s |\n", title+rowOps, f0(d.TPS()), f0(a.TPS()), ratio(a.TPS()/d.TPS()))
		p("| %s | %s | %s | %s |\n", title+rowAvgLat, f3(d.AvgLatencyMs()), f3(a.AvgLatencyMs()), ratio(a.AvgLatencyMs()/d.AvgLatencyMs()))
		p("| %s | %s | %s | %s |\n", title+rowP99Lat, f3(d.P99LatencyMs()), f3(a.P99LatencyMs()), ratio(a.P99LatencyMs()/d.P99LatencyMs()))
		p("| %s | — | %s | — |\n", title+rowCPUPerOpTotal, f1(a.CPUPerTxUs()))
		p("| %s | — | gateway %s · server %s · CLI %s | — |\n", title+rowCPUPerOpByProc,
			f1(a.CPUPerTxUs("gateway")), f1(a.CPUPerTxUs("server")), f1(a.CPUPerTxUs("cli")))
	}
	p("\n")
}

// Targets of the benchmark issue, as labelled in the report.
const (
	goalGatewayCPU  = "Gateway CPU per query ≤ PgBouncer's (8 clients)"
	goalTPS         = "Full-path tps at 8 clients ≥ 0.8 × PgBouncer"
	goalLatency     = "Added latency at 1 client ≤ 2 × PgBouncer's added latency"
	goalConnSetup   = "Connection setup ≤ 1.5 × direct"
	goalIdleMemory  = "Gateway memory per idle connection ≤ 64 KiB"
	goalSessionTime = "Session start ≤ 500 ms (median)"
)

var goalLabels = []string{goalGatewayCPU, goalTPS, goalLatency, goalConnSetup, goalIdleMemory, goalSessionTime}

// goal is one target with its result.
type goal struct {
	Label, Result string
	Met           bool
	Known         bool // false when a figure is missing
}

func (r *results) cell(w, target string) *cell {
	if c := r.Cells[w][target]; c != nil {
		return c
	}
	return &cell{}
}

func (r *results) goals() []goal {
	dir1, bnc1, air1 := r.cell("S-1", targetDirect), r.cell("S-1", targetPgbouncer), r.cell("S-1", targetAirlock)
	bnc8, air8 := r.cell("S-8", targetPgbouncer), r.cell("S-8", targetAirlock)
	dirC, airC := r.cell("S-C-1", targetDirect), r.cell("S-C-1", targetAirlock)

	var gs []goal
	add := func(label string, value, limit float64, atMost bool, result string) {
		g := goal{Label: label, Result: result, Known: !math.IsNaN(value) && !math.IsInf(value, 0)}
		if g.Known {
			g.Met = value <= limit
			if !atMost {
				g.Met = value >= limit
			}
		}
		gs = append(gs, g)
	}

	gw, pb := air8.CPUPerTxUs("gateway"), bnc8.CPUPerTxUs("pgbouncer")
	add(goalGatewayCPU, gw/pb, 1, true,
		fmt.Sprintf("gateway %s µs vs PgBouncer %s µs per query: %s (its engine alone: %s µs)", f1(gw), f1(pb), ratio(gw/pb),
			f1(r.cell("S-8", targetHop).CPUPerTxUs("engine"))))

	t := air8.TPS() / bnc8.TPS()
	add(goalTPS, t, 0.8, false,
		fmt.Sprintf("%s vs %s tps: %s", f0(air8.TPS()), f0(bnc8.TPS()), ratio(t)))

	addA, addB := air1.AvgLatencyMs()-dir1.AvgLatencyMs(), bnc1.AvgLatencyMs()-dir1.AvgLatencyMs()
	l, shown := addA/addB, ratio(addA/addB)
	if addB <= 0 && isNum(addA) {
		// PgBouncer added nothing measurable: only adding nothing meets it.
		l, shown = math.MaxFloat64, "PgBouncer added nothing"
		if addA <= 0 {
			l = 0
		}
	}
	add(goalLatency, l, 2, true,
		fmt.Sprintf("Airlock +%s ms, PgBouncer +%s ms over direct (%s ms): %s", f3(addA), f3(addB), f3(dir1.AvgLatencyMs()), shown))

	c := airC.ConnTimeMs / dirC.ConnTimeMs
	add(goalConnSetup, c, 1.5, true,
		fmt.Sprintf("%s ms vs %s ms (pgbench -C average connection time): %s", f3(airC.ConnTimeMs), f3(dirC.ConnTimeMs), ratio(c)))

	m := r.IdleAirlock.PerConn("gateway")
	add(goalIdleMemory, m/1024, 64, true, fmt.Sprintf("%s per connection (%d connections)", kib(m), r.IdleAirlock.Conns))

	s := r.sessionMedian()
	add(goalSessionTime, ms(s), 500, true,
		fmt.Sprintf("%s ms (median of %d; min %s, max %s)", f0(ms(s)), len(r.SessionStarts), f0(ms(minDur(r.SessionStarts))), f0(ms(maxDur(r.SessionStarts)))))
	return gs
}

func (r *results) sessionMedian() time.Duration {
	if len(r.SessionStarts) == 0 {
		return -1
	}
	return median(r.SessionStarts)
}

// Markdown renders the report section (without the markers).
func (r *results) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	mode := "full run"
	if r.Cfg.Smoke {
		mode = "smoke run: the figures mean little"
	}
	cmdline := r.Cfg.Cmdline
	if cmdline == "" {
		cmdline = "go run ./bench"
	}
	p("### Results: %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"))
	p("`%s` (%s): %d round(s) of %s per run, targets alternating; pgbench scale %d; %s in all. Airlock %s.",
		cmdline, mode, r.Cfg.Rounds, r.Cfg.Duration, r.Cfg.Scale, r.Took.Round(time.Second), r.AirlockBuild)
	if r.Cfg.Note != "" {
		p(" %s", r.Cfg.Note)
	}
	p("\n\n")
	m := r.Machine
	ferret := ""
	if r.Cfg.Mongo {
		ferret = "; FerretDB " + r.FerretDBVersion
	}
	p("Machine: %s, %d cores, %.1f GiB; %s; %s; %s; PostgreSQL %s; PgBouncer %s%s; Airlock server over %s. Load average %s at the start, %s at the end.\n\n",
		m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.OS, m.Go, r.PostgresVersion, r.PgbouncerVersion, ferret,
		map[bool]string{true: "HTTPS", false: "HTTP"}[r.Cfg.ServerTLS], m.LoadStart, m.LoadEnd)

	p("| Measurement | %s | %s | %s | %s¹ |\n", targetDirect, targetPgbouncer, targetAirlock, targetHop)
	p("| --- | ---: | ---: | ---: | ---: |\n")
	row := func(label string, vals ...string) {
		p("| %s | %s |\n", label, strings.Join(vals, " | "))
	}
	for _, w := range workloads {
		title := workloadTitles[w.Key] + ": "
		cs := []*cell{r.cell(w.Key, targetDirect), r.cell(w.Key, targetPgbouncer), r.cell(w.Key, targetAirlock), r.cell(w.Key, targetHop)}
		each := func(f func(*cell) string) []string {
			return []string{f(cs[0]), f(cs[1]), f(cs[2]), f(cs[3])}
		}
		row(title+rowTPS, each(func(c *cell) string { return f0(c.TPS()) })...)
		row(title+rowAvgLat, each(func(c *cell) string { return f3(c.AvgLatencyMs()) })...)
		row(title+rowP99Lat, each(func(c *cell) string { return f3(c.P99LatencyMs()) })...)
		if w.Connect {
			row(title+rowConnTime, each(func(c *cell) string { return f3(c.ConnTimeMs) })...)
		}
		row(title+rowCPUTotal, "—", f1(cs[1].CPUPerTxUs()), f1(cs[2].CPUPerTxUs()), f1(cs[3].CPUPerTxUs()))
		row(title+rowCPUByProc, "—", "pgbouncer "+f1(cs[1].CPUPerTxUs("pgbouncer")),
			fmt.Sprintf("gateway %s · server %s · CLI %s", f1(cs[2].CPUPerTxUs("gateway")), f1(cs[2].CPUPerTxUs("server")), f1(cs[2].CPUPerTxUs("cli"))),
			"engine "+f1(cs[3].CPUPerTxUs("engine")))
	}
	ia := r.IdleAirlock
	row(fmt.Sprintf(rowIdleMemory, r.Cfg.Idle, r.Cfg.Idle), "—", "pgbouncer "+kib(r.IdlePgbouncer.PerConn("pgbouncer")),
		fmt.Sprintf("gateway %s · server %s · CLI %s", kib(ia.PerConn("gateway")), kib(ia.PerConn("server")), kib(ia.PerConn("cli"))), "—")
	row(fmt.Sprintf(rowSession, r.Cfg.SessionStarts), "—", "—", f0(ms(r.sessionMedian())), "—")
	p("\n¹ The gateway itself cannot be reached without the CLI and the relay: it takes streams only from the server's relay, inside the CLI's end-to-end mTLS with a session certificate. This column is the gateway's PostgreSQL engine (credential injection, protocol parsing, session recording into a spool) in a process of its own on a plain TCP port, as PgBouncer runs: what the gateway adds before its tunnel, TLS and relay. It is built from this checkout, also with `-airlock-bin`.\n\n")

	r.floorMarkdown(p)

	p("| Target | Result | |\n| --- | --- | :---: |\n")
	for _, g := range r.goals() {
		status := "missed"
		switch {
		case !g.Known:
			status = "no figure"
		case g.Met:
			status = "met"
		}
		p("| %s | %s | %s |\n", g.Label, g.Result, status)
	}

	if r.Cfg.Mongo {
		p("\n")
		r.mongoMarkdown(p)
	}

	p("\n<details><summary>tps of each run, in round order (drift check)</summary>\n\n")
	p("| Workload | %s |\n| --- |%s\n", strings.Join(append(targetNames, floorNames...), " | "), strings.Repeat(" --- |", len(targetNames)+len(floorNames)))
	for _, w := range workloads {
		var vals []string
		for _, t := range append(targetNames, floorNames...) {
			var s []string
			for _, v := range r.cell(w.Key, t).TPSPerRun {
				s = append(s, f0(v))
			}
			if len(s) == 0 {
				s = []string{"—"} // the floors do not run -C
			}
			vals = append(vals, strings.Join(s, ", "))
		}
		p("| %s | %s |\n", workloadTitles[w.Key], strings.Join(vals, " | "))
	}
	if r.Cfg.Mongo {
		for _, w := range mongoWorkloads {
			vals := []string{"", "—", "", "—", "—", "—"}
			for i, t := range []string{targetMongoDirect, targetAirlock} {
				var s []string
				for _, v := range r.mongoCell(w.Key, t).TPSPerRun {
					s = append(s, f0(v))
				}
				vals[i*2] = strings.Join(s, ", ")
			}
			p("| MongoDB %s (operations per second) | %s |\n", mongoTitles[w.Key], strings.Join(vals, " | "))
		}
	}
	p("\nFailed transactions: ")
	var failed []string
	for _, w := range workloads {
		for _, t := range append(targetNames, floorNames...) {
			if n := r.cell(w.Key, t).Failed; n > 0 {
				failed = append(failed, fmt.Sprintf("%s %s: %d", w.Key, t, n))
			}
		}
	}
	for _, w := range mongoWorkloads {
		for _, t := range mongoTargetNames {
			if n := r.mongoCell(w.Key, t).Failed; n > 0 {
				failed = append(failed, fmt.Sprintf("MongoDB %s %s: %d", w.Key, t, n))
			}
		}
	}
	if len(failed) == 0 {
		failed = []string{"none"}
	}
	p("%s. Opening the idle connections took %s through Airlock and %s through PgBouncer.\n\n</details>\n",
		strings.Join(failed, "; "), r.IdleAirlock.Connect.Round(time.Millisecond), r.IdlePgbouncer.Connect.Round(time.Millisecond))
	return b.String()
}

// floorMarkdown renders the floor table: what relays that only copy bytes
// cost here, next to PgBouncer, the engine alone and the full path.
func (r *results) floorMarkdown(p func(string, ...any)) {
	cols := []string{targetPgbouncer, targetGoroutineRelay, targetEventLoopRelay, targetHop, targetAirlock}
	p("What a relay written in Go costs on this machine before it does any of Airlock's work²:\n\n")
	p("| Measurement | %s |\n| --- |%s\n", strings.Join(cols, " | "), strings.Repeat(" ---: |", len(cols)))
	row := func(label string, f func(target string) string) {
		vals := make([]string, len(cols))
		for i, t := range cols {
			vals[i] = f(t)
		}
		p("| %s | %s |\n", label, strings.Join(vals, " | "))
	}
	direct := r.cell("S-1", targetDirect).AvgLatencyMs()
	row(rowFloorAddedLat, func(t string) string { return signed3(r.cell("S-1", t).AvgLatencyMs() - direct) })
	row(rowFloorTPS, func(t string) string { return f0(r.cell("S-8", t).TPS()) })
	row(rowFloorCPU, func(t string) string { return f1(r.cell("S-8", t).CPUPerTxUs()) })
	p("\n² The two Go relays (bench/floor.go) only copy bytes between pgbench and PostgreSQL, in a process of their own: no parsing, no recording, no TLS, no credential injection. \"goroutines\" is the usual Go design, and the one Airlock's processes use: a goroutine per direction, woken by the runtime's network poller. \"epoll loop\" is PgBouncer's design in Go: one thread serving every socket from one epoll loop with raw system calls. The full path has three Go processes (CLI, server, gateway) on the way, each with TLS.\n\n")
}

// writeReport replaces the marked section of path with section, keeping the
// prose around it; a file without the markers gets the section appended, a
// missing file is created.
func writeReport(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	doc := string(b)
	block := markStart + "\n" + strings.TrimRight(section, "\n") + "\n" + markEnd
	i := strings.Index(doc, markStart)
	j := strings.Index(doc, markEnd)
	switch {
	case i >= 0 && j > i:
		doc = doc[:i] + block + doc[j+len(markEnd):]
	case i >= 0 || j >= 0:
		return fmt.Errorf("%s has only one of %s and %s: fix the markers by hand", path, markStart, markEnd)
	case doc == "":
		doc = "# Benchmarks\n\n" + block + "\n"
	default:
		doc = strings.TrimRight(doc, "\n") + "\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

func isNum(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func f0(v float64) string {
	if !isNum(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// signed3 formats a difference with its sign, to three decimals.
func signed3(v float64) string {
	if !isNum(v) {
		return "—"
	}
	return fmt.Sprintf("%+.3f", v)
}

func f1(v float64) string {
	if !isNum(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func f3(v float64) string {
	if !isNum(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func ratio(v float64) string {
	if !isNum(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "×"
}

// kib formats bytes as KiB.
func kib(bytes float64) string {
	if !isNum(bytes) {
		return "—"
	}
	return strconv.FormatFloat(bytes/1024, 'f', 1, 64) + " KiB"
}

func ms(d time.Duration) float64 {
	if d < 0 {
		return math.NaN()
	}
	return float64(d) / float64(time.Millisecond)
}

func minDur(v []time.Duration) time.Duration {
	if len(v) == 0 {
		return -1
	}
	m := v[0]
	for _, d := range v[1:] {
		m = min(m, d)
	}
	return m
}

func maxDur(v []time.Duration) time.Duration {
	if len(v) == 0 {
		return -1
	}
	m := v[0]
	for _, d := range v[1:] {
		m = max(m, d)
	}
	return m
}
