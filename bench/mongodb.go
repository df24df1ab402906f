package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/airlockpam/airlock/internal/testenv"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The MongoDB measurement: find-by-_id against FerretDB (the MongoDB wire
// protocol on SQLite), directly and through Airlock's full path, with the
// official Go driver.
const (
	mongoResourceName = "bench-mongo"
	mongoAccountName  = "bench-mongo"
	mongoUser         = "bench" // FerretDB's setup user, in the admin database
	mongoAuthDB       = "admin"
	mongoDatabase     = "bench"
	mongoCollection   = "docs"
)

// The seeded documents have string _ids mongoID(0) … mongoID(n-1). Strings,
// because FerretDB v1's SQLite backend pushes an _id equality down to SQLite
// only for strings and ObjectIDs (any other filter is applied in FerretDB
// after reading every document). Even then SQLite scans the table: FerretDB
// v1.24 indexes _id as `_ferretdb_sjson->"_id"` but queries
// `_ferretdb_sjson->'$._id'`, which the index does not match. So a find costs
// FerretDB time in proportion to the collection's size, and the documents
// are kept small (about 50 bytes).

// Targets of the MongoDB table. The direct target is FerretDB; the Airlock
// target is the same full path as for PostgreSQL.
const targetMongoDirect = targetDirect

var mongoTargetNames = []string{targetMongoDirect, targetAirlock}

// mongoWorkloads are the find-by-_id runs: a Go loop per client, each
// client its own driver client with one connection (as pgbench's clients).
var mongoWorkloads = []workload{
	{Key: "M-1", Clients: 1},
	{Key: "M-8", Clients: 8},
}

// ferretDB is the FerretDB server the MongoDB measurement runs against: its
// own SQLite directory, on 127.0.0.1 at a free port, without TLS (as
// PostgreSQL: no target pays for TLS to the database).
type ferretDB struct {
	Port           int
	User, Password string
	Version        string
	proc           *proc
}

// mongoID returns the _id of the i-th seeded document.
func mongoID(i int) string { return fmt.Sprintf("doc-%05d", i) }

func (f *ferretDB) addr() string { return "127.0.0.1:" + strconv.Itoa(f.Port) }

// mongoEndpoint is where the driver connects for one target, and which
// processes are the proxy whose CPU time is counted.
type mongoEndpoint struct {
	Target string
	URI    string
	Cred   *options.Credential // nil through Airlock: the gateway logs in
	Docs   int                 // seeded documents
	Procs  []namedPID
}

func (ep mongoEndpoint) clientOptions() *options.ClientOptions {
	o := options.Client().ApplyURI(ep.URI).
		SetServerSelectionTimeout(30 * time.Second).
		SetConnectTimeout(30 * time.Second).
		SetMaxPoolSize(1)
	if ep.Cred != nil {
		o.SetAuth(*ep.Cred)
	}
	return o
}

// ferretdbBinary returns the FerretDB binary that internal/testenv builds
// into its cache, building it (about a minute, once) if it is missing.
func (e *environment) ferretdbBinary(ctx context.Context) (string, error) {
	dir, err := testenv.CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "ferretdb-"+testenv.FerretDBVersion)
	if !isExecutableFile(bin) {
		e.logf("building FerretDB %s into %s (about a minute, once)", testenv.FerretDBVersion, dir)
		if err := testenv.EnsureBinaries(ctx); err != nil {
			return "", fmt.Errorf("build FerretDB: %w", err)
		}
		if !isExecutableFile(bin) {
			return "", fmt.Errorf("no FerretDB binary at %s after testenv.EnsureBinaries", bin)
		}
	}
	return bin, nil
}

func isExecutableFile(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0
}

// startFerretDB starts FerretDB on SQLite in the work directory with a setup
// user, and waits until that user can log in.
func (e *environment) startFerretDB(ctx context.Context) (*ferretDB, error) {
	bin, err := e.ferretdbBinary(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.work, "ferretdb")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	f := &ferretDB{User: mongoUser, Password: randomHex(16), Version: testenv.FerretDBVersion}
	if f.Port, err = freePort(); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--handler=sqlite",
		"--sqlite-url=file:"+dir+"/",
		"--state-dir="+dir,
		"--listen-addr="+f.addr(),
		"--debug-addr=-",
		"--telemetry=disable",
		"--log-level=error", // warn logs every command it does not support
		"--test-enable-new-auth",
		"--setup-database="+mongoAuthDB,
		"--setup-username="+f.User,
		"--setup-password="+f.Password)
	cmd.Dir = dir
	e.logf("starting FerretDB %s (SQLite) on %s", f.Version, f.addr())
	if f.proc, err = e.procs.start("ferretdb", cmd, filepath.Join(e.work, "ferretdb.log"), startOptions{StopSig: syscall.SIGTERM}); err != nil {
		return nil, err
	}
	if err := f.waitLogin(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *ferretDB) direct() mongoEndpoint {
	return mongoEndpoint{
		Target: targetMongoDirect,
		URI:    "mongodb://" + f.addr() + "/?directConnection=true",
		Cred:   &options.Credential{AuthSource: mongoAuthDB, Username: f.User, Password: f.Password},
	}
}

// waitLogin waits until the setup user can log in: FerretDB creates it just
// after it starts listening.
func (f *ferretDB) waitLogin(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	o := f.direct().clientOptions().SetServerSelectionTimeout(2 * time.Second)
	for {
		c, err := mongo.Connect(o)
		if err == nil {
			err = c.Ping(ctx, nil)
			c.Disconnect(context.WithoutCancel(ctx))
		}
		if err == nil {
			return nil
		}
		select {
		case <-f.proc.Done():
			return fmt.Errorf("FerretDB exited: %v", f.proc.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("FerretDB: the setup user could not log in within 30 s: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// seed fills the collection with n small documents with the _ids
// mongoID(0) … mongoID(n-1).
func (f *ferretDB) seed(ctx context.Context, n int) error {
	c, err := mongo.Connect(f.direct().clientOptions())
	if err != nil {
		return err
	}
	defer c.Disconnect(context.WithoutCancel(ctx))
	coll := c.Database(mongoDatabase).Collection(mongoCollection)
	docs := make([]any, n)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: mongoID(i)}, {Key: "n", Value: int32(i)}}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		return fmt.Errorf("seed FerretDB: %w", err)
	}
	count, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("seed FerretDB: count: %w", err)
	}
	if count != int64(n) {
		return fmt.Errorf("seed FerretDB: %d documents after inserting %d", count, n)
	}
	return nil
}

// addMongo registers f as a MongoDB resource with an account for its setup
// user, and starts `airlock db access` on it.
func (a *airlock) addMongo(ctx context.Context, f *ferretDB) error {
	if _, err := a.output(ctx, "", "resources", "create", "mongodb", "--project-id", a.Project, "--name", mongoResourceName,
		"--gateway", gatewayName, "--connection-string", "mongodb://"+f.addr()+"/", "--ssl-enabled=false"); err != nil {
		return err
	}
	if _, err := a.output(ctx, f.Password, "accounts", "create", "--project-id", a.Project, "--resource", mongoResourceName,
		"--name", mongoAccountName, "--username", f.User, "--password-stdin"); err != nil {
		return err
	}
	p, url, took, err := a.startAccess(ctx, mongoResourceName, mongoAccountName, mongoAccessURLLine)
	if err != nil {
		return err
	}
	a.MongoAccess, a.MongoAccessURL = p, url
	a.e.logf("airlock db access (MongoDB) listening: %s (session start %s)", url, took.Round(time.Millisecond))
	return nil
}

// measureMongo starts FerretDB, registers it in Airlock and runs the
// find-by-_id workloads against both targets in alternating rounds.
func (e *environment) measureMongo(ctx context.Context, al *airlock, res *results) error {
	f, err := e.startFerretDB(ctx)
	if err != nil {
		return err
	}
	res.FerretDBVersion = f.Version
	start := time.Now()
	if err := f.seed(ctx, e.cfg.MongoDocs); err != nil {
		return err
	}
	e.logf("seeded %d documents in %s", e.cfg.MongoDocs, time.Since(start).Round(time.Millisecond))
	if err := al.addMongo(ctx, f); err != nil {
		return err
	}
	direct := f.direct()
	direct.Docs = e.cfg.MongoDocs
	eps := []mongoEndpoint{
		direct,
		{Target: targetAirlock, URI: al.MongoAccessURL, Docs: e.cfg.MongoDocs,
			Procs: []namedPID{{"gateway", al.Gateway.PID()}, {"server", al.Server.PID()}, {"cli", al.MongoAccess.PID()}}},
	}
	for _, ep := range eps {
		if err := checkMongo(ctx, ep); err != nil {
			return err
		}
	}
	if e.cfg.Warmup > 0 {
		for _, ep := range eps {
			e.logf("warm-up: MongoDB %s, 8 clients, %s", ep.Target, e.cfg.Warmup)
			if _, err := runMongo(ctx, ep, mongoWorkloads[1], e.cfg.Warmup, e.logf); err != nil {
				return err
			}
		}
	}
	total := e.cfg.Rounds * len(mongoWorkloads) * len(eps)
	n := 0
	for round := 0; round < e.cfg.Rounds; round++ {
		for _, w := range mongoWorkloads {
			for i := range eps {
				ep := eps[(i+round)%len(eps)]
				n++
				r, err := runMongo(ctx, ep, w, e.cfg.Duration, e.logf)
				if err != nil {
					return err
				}
				if res.Mongo[w.Key] == nil {
					res.Mongo[w.Key] = map[string]*cell{}
				}
				c := res.Mongo[w.Key][ep.Target]
				if c == nil {
					c = &cell{}
					res.Mongo[w.Key][ep.Target] = c
				}
				c.add(r)
				e.logf("[%d/%d] round %d, MongoDB %s, %s: %.0f ops/s, %d operations", n, total, round+1, w.Key, ep.Target, r.TPS, r.Tx)
			}
		}
	}
	// End the MongoDB session so that it does not run during the
	// measurements that follow.
	return endAccess(al.MongoAccess)
}

// checkMongo makes sure a find through ep works and sees the seeded
// documents.
func checkMongo(ctx context.Context, ep mongoEndpoint) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := mongo.Connect(ep.clientOptions())
	if err != nil {
		return fmt.Errorf("MongoDB: connect to %s: %w", ep.Target, err)
	}
	defer c.Disconnect(context.WithoutCancel(ctx))
	var doc struct {
		ID string `bson:"_id"`
		N  int32  `bson:"n"`
	}
	if err := c.Database(mongoDatabase).Collection(mongoCollection).FindOne(ctx, bson.D{{Key: "_id", Value: mongoID(ep.Docs - 1)}}).Decode(&doc); err != nil {
		return fmt.Errorf("MongoDB: find through %s: %w", ep.Target, err)
	}
	if doc.ID != mongoID(ep.Docs-1) || int(doc.N) != ep.Docs-1 {
		return fmt.Errorf("MongoDB: find through %s: unexpected document %+v", ep.Target, doc)
	}
	return nil
}

// runMongo runs w.Clients loops of FindOne({_id: random}) against ep for d,
// each on its own driver client with one connection (connected and
// authenticated before the clock starts), reading the CPU time of ep's proxy
// processes just before and just after. A client stops at its first error,
// as a pgbench client does; the error is returned if no operation succeeded.
func runMongo(ctx context.Context, ep mongoEndpoint, w workload, d time.Duration, logf func(string, ...any)) (runResult, error) {
	clients := make([]*mongo.Client, w.Clients)
	defer func() {
		for _, c := range clients {
			if c != nil {
				dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c.Disconnect(dctx)
				cancel()
			}
		}
	}()
	for i := range clients {
		c, err := mongo.Connect(ep.clientOptions())
		if err != nil {
			return runResult{}, fmt.Errorf("MongoDB %s against %s: connect: %w", w.Key, ep.Target, err)
		}
		clients[i] = c
		// One find, so that the connection is set up and logged in on every
		// hop before the clock starts.
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = c.Database(mongoDatabase).Collection(mongoCollection).FindOne(pctx, bson.D{{Key: "_id", Value: mongoID(i)}}).Err()
		cancel()
		if err != nil {
			return runResult{}, fmt.Errorf("MongoDB %s against %s: first find: %w", w.Key, ep.Target, err)
		}
	}

	ids := make([]string, ep.Docs)
	for i := range ids {
		ids[i] = mongoID(i)
	}
	type clientResult struct {
		ops, failed int64
		lat         []uint32
		err         error
	}
	out := make([]clientResult, len(clients))
	before, err := cpuTimes(ep.Procs)
	if err != nil {
		return runResult{}, err
	}
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &out[i]
			r.lat = make([]uint32, 0, 1<<14)
			coll := c.Database(mongoDatabase).Collection(mongoCollection)
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			for {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					return
				}
				n := rng.IntN(ep.Docs)
				raw, err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: ids[n]}}).Raw()
				took := time.Since(t0)
				if err == nil {
					if got, ok := raw.Lookup("n").Int32OK(); !ok || int(got) != n {
						err = fmt.Errorf("find _id %q returned %s", ids[n], raw)
					}
				}
				if err != nil {
					r.failed++
					r.err = err
					return
				}
				r.ops++
				r.lat = append(r.lat, uint32(min(took.Microseconds(), int64(^uint32(0)))))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	after, err := cpuTimes(ep.Procs)
	if err != nil {
		return runResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return runResult{}, err
	}
	var r runResult
	var errs []error
	for _, c := range out {
		r.Tx += c.ops
		r.Failed += c.failed
		r.Latencies = append(r.Latencies, c.lat...)
		if c.err != nil {
			errs = append(errs, c.err)
		}
	}
	if r.Tx == 0 {
		return r, fmt.Errorf("MongoDB %s against %s: no operation succeeded: %w", w.Key, ep.Target, errors.Join(errs...))
	}
	for _, err := range errs {
		logf("MongoDB %s against %s: a client stopped: %v", w.Key, ep.Target, err)
	}
	r.TPS = float64(r.Tx) / elapsed.Seconds()
	r.CPU = map[string]time.Duration{}
	for k, v := range after {
		r.CPU[k] = v - before[k]
	}
	return r, nil
}
