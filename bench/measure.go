package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Targets: what pgbench connects to.
const (
	targetDirect    = "Direct"
	targetPgbouncer = "PgBouncer (session)"
	targetAirlock   = "Airlock full path"
	targetHop       = "Gateway engine alone"
	// The floors (floor.go): relays that only copy bytes.
	targetGoroutineRelay = "Go relay, goroutines"
	targetEventLoopRelay = "Go relay, epoll loop"
)

var (
	targetNames = []string{targetDirect, targetPgbouncer, targetAirlock, targetHop}
	floorNames  = []string{targetGoroutineRelay, targetEventLoopRelay}
)

// endpoint is where pgbench connects for one target, and which processes
// are the proxy whose CPU time is counted.
type endpoint struct {
	Target   string
	Host     string
	Port     int
	User     string
	Password string // empty through Airlock: the gateway injects it
	Database string
	Procs    []namedPID
	// Floor marks the floor relays, measured at 1 and 8 clients only.
	Floor bool
}

// URL returns a pgx URL for the endpoint.
func (e endpoint) URL() string {
	return pgURL(e.User, e.Password, fmt.Sprintf("%s:%d", e.Host, e.Port), e.Database)
}

// namedPID is a proxy process: "pgbouncer", "gateway", "server", "cli".
type namedPID struct {
	Name string
	PID  int
}

// workload is one kind of pgbench run.
type workload struct {
	Key     string // short, for logs
	Clients int
	Connect bool // -C: a new connection per transaction
}

var workloads = []workload{
	{Key: "S-1", Clients: 1},
	{Key: "S-8", Clients: 8},
	{Key: "S-C-1", Clients: 1, Connect: true},
}

// runResult is one pgbench run.
type runResult struct {
	Tx         int64
	Failed     int64
	TPS        float64
	ConnTimeMs float64 // pgbench's average connection time (-C only)
	Latencies  []uint32
	CPU        map[string]time.Duration // per proxy process
}

// cell is every run of one workload against one target.
type cell struct {
	Runs       int
	Tx         int64
	Failed     int64
	TPSPerRun  []float64
	ConnTimeMs float64 // weighted by transactions
	Latencies  []uint32
	CPU        map[string]time.Duration
}

func (c *cell) add(r runResult) {
	if c.CPU == nil {
		c.CPU = map[string]time.Duration{}
	}
	if c.Tx+r.Tx > 0 {
		c.ConnTimeMs = (c.ConnTimeMs*float64(c.Tx) + r.ConnTimeMs*float64(r.Tx)) / float64(c.Tx+r.Tx)
	}
	c.Runs++
	c.Tx += r.Tx
	c.Failed += r.Failed
	c.TPSPerRun = append(c.TPSPerRun, r.TPS)
	c.Latencies = append(c.Latencies, r.Latencies...)
	for k, v := range r.CPU {
		c.CPU[k] += v
	}
}

// TPS is the mean of the runs' tps (the runs are equally long).
func (c *cell) TPS() float64 { return mean(c.TPSPerRun) }

// AvgLatencyMs is the mean transaction latency from pgbench's log.
func (c *cell) AvgLatencyMs() float64 {
	if len(c.Latencies) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, l := range c.Latencies {
		sum += float64(l)
	}
	return sum / float64(len(c.Latencies)) / 1000
}

// P99LatencyMs is the 99th percentile of the transaction latencies.
func (c *cell) P99LatencyMs() float64 { return percentile(c.Latencies, 0.99) / 1000 }

// CPUPerTxUs returns the CPU time of the named processes per transaction, in
// microseconds; with no names, of every process counted.
func (c *cell) CPUPerTxUs(names ...string) float64 {
	if c.Tx == 0 || len(c.CPU) == 0 {
		return math.NaN()
	}
	var sum time.Duration
	for k, v := range c.CPU {
		if len(names) == 0 || slices.Contains(names, k) {
			sum += v
		}
	}
	return float64(sum.Microseconds()) / float64(c.Tx)
}

// runPgbench runs one pgbench measurement against ep, reading the CPU time
// of ep's proxy processes just before and just after.
func runPgbench(ctx context.Context, ep endpoint, w workload, d time.Duration, logDir string) (runResult, error) {
	prefix := filepath.Join(logDir, "pgbench")
	args := []string{"-n", "-S", "-c", strconv.Itoa(w.Clients), "-j", strconv.Itoa(w.Clients),
		"-T", strconv.Itoa(int(d / time.Second)), "-l", "--log-prefix=" + prefix,
		"-h", ep.Host, "-p", strconv.Itoa(ep.Port), "-U", ep.User}
	if w.Connect {
		args = append(args, "-C")
	}
	args = append(args, ep.Database)
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Env = pgEnv(ep.Password)
	cmd.Dir = logDir

	before, err := cpuTimes(ep.Procs)
	if err != nil {
		return runResult{}, err
	}
	out, err := runCmd(cmd)
	after, cerr := cpuTimes(ep.Procs)
	if err != nil {
		return runResult{}, fmt.Errorf("pgbench %s against %s: %w", w.Key, ep.Target, err)
	}
	if cerr != nil {
		return runResult{}, cerr
	}
	r, err := parsePgbench(string(out))
	if err != nil {
		return r, fmt.Errorf("pgbench %s against %s: %w", w.Key, ep.Target, err)
	}
	if r.Tx == 0 {
		return r, fmt.Errorf("pgbench %s against %s processed no transaction:\n%s", w.Key, ep.Target, out)
	}
	r.CPU = map[string]time.Duration{}
	for k, v := range after {
		r.CPU[k] = v - before[k]
	}
	logs, err := filepath.Glob(prefix + ".*")
	if err != nil || len(logs) == 0 {
		return r, fmt.Errorf("pgbench %s against %s wrote no transaction log (%s.*)", w.Key, ep.Target, prefix)
	}
	for _, f := range logs {
		if r.Latencies, err = readLatencies(f, r.Latencies); err != nil {
			return r, err
		}
		os.Remove(f)
	}
	return r, nil
}

var (
	reTx       = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	reFailed   = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	reTPS      = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	reConnTime = regexp.MustCompile(`(?m)^average connection time = ([0-9.]+) ms`)
)

// parsePgbench reads the summary pgbench prints.
func parsePgbench(out string) (runResult, error) {
	var r runResult
	m := reTx.FindStringSubmatch(out)
	t := reTPS.FindStringSubmatch(out)
	if m == nil || t == nil {
		return r, fmt.Errorf("unexpected pgbench output:\n%s", tailString(out, 2000))
	}
	r.Tx, _ = strconv.ParseInt(m[1], 10, 64)
	r.TPS, _ = strconv.ParseFloat(t[1], 64)
	if f := reFailed.FindStringSubmatch(out); f != nil {
		r.Failed, _ = strconv.ParseInt(f[1], 10, 64)
	}
	if c := reConnTime.FindStringSubmatch(out); c != nil {
		r.ConnTimeMs, _ = strconv.ParseFloat(c[1], 64)
	}
	return r, nil
}

// readLatencies appends the transaction latencies (µs, the third field of
// each line of pgbench's --log) in path to lat.
func readLatencies(path string, lat []uint32) ([]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return lat, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		v, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil {
			continue // "failed" or "skipped" transactions carry no latency
		}
		lat = append(lat, uint32(v))
	}
	return lat, sc.Err()
}

// percentile returns the p-quantile (0 < p <= 1) of v by the nearest-rank
// method; v is sorted in place.
func percentile(v []uint32, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	i := int(math.Ceil(p*float64(len(v)))) - 1
	return float64(v[max(0, min(i, len(v)-1))])
}

func median(v []time.Duration) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
var clockTicks = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100 // Linux's USER_HZ on every common architecture
})

// cpuTime returns the user plus system CPU time of every thread of pid, from
// /proc/<pid>/stat (utime and stime, in clock ticks).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the CPU time of pid %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %w", pid, err)
	}
	return time.Duration((ut + st) * int64(time.Second) / clockTicks()), nil
}

func cpuTimes(procs []namedPID) (map[string]time.Duration, error) {
	m := map[string]time.Duration{}
	for _, p := range procs {
		t, err := cpuTime(p.PID)
		if err != nil {
			return nil, err
		}
		m[p.Name] = t
	}
	return m, nil
}

// rss returns the resident set size of pid in bytes (VmRSS).
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the memory of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("unexpected VmRSS line %q", line)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// idleResult is the memory the proxy processes hold for idle connections.
type idleResult struct {
	Conns   int
	Before  map[string]int64
	After   map[string]int64
	Connect time.Duration // to open them all
}

// PerConn returns the growth of the named process's RSS per connection, in
// bytes.
func (r idleResult) PerConn(name string) float64 {
	if r.Conns == 0 {
		return math.NaN()
	}
	return float64(r.After[name]-r.Before[name]) / float64(r.Conns)
}

// measureIdle opens n connections to ep (pgx's pgconn), leaves them idle for
// settle, reads the RSS of ep's proxy processes, and closes them.
func measureIdle(ctx context.Context, ep endpoint, n int, settle time.Duration) (idleResult, error) {
	r := idleResult{Conns: n, Before: map[string]int64{}, After: map[string]int64{}}
	for _, p := range ep.Procs {
		v, err := rss(p.PID)
		if err != nil {
			return r, err
		}
		r.Before[p.Name] = v
	}
	conns := make([]*pgconn.PgConn, n)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range conns {
			if c != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					c.Close(cctx)
				}()
			}
		}
		wg.Wait()
	}()
	start := time.Now()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, 16)
	url := ep.URL()
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			c, err := pgconn.Connect(cctx, url)
			if err == nil {
				// One round trip, so the connection is fully set up on
				// every hop before it idles.
				_, err = c.Exec(cctx, "SELECT 1").ReadAll()
			}
			mu.Lock()
			defer mu.Unlock()
			if c != nil {
				conns[i] = c
			}
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("idle connection %d of %d to %s: %w", i+1, n, ep.Target, err)
			}
		}()
	}
	wg.Wait()
	r.Connect = time.Since(start)
	if firstErr != nil {
		return r, firstErr
	}
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(settle):
	}
	for _, p := range ep.Procs {
		v, err := rss(p.PID)
		if err != nil {
			return r, err
		}
		r.After[p.Name] = v
	}
	return r, nil
}
