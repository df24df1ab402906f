package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/airlockpam/airlock/internal/proxy/common"
	pgengine "github.com/airlockpam/airlock/internal/proxy/postgres"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

// The gateway takes streams only from the server's relay, inside the CLI's
// end-to-end TLS, so the gateway process cannot be measured alone. What the
// gateway adds of its own, the PostgreSQL engine (credential injection,
// protocol parsing, recording into the spool), can: the harness runs it in a
// process of its own (this binary again, with engineHopEnv set) on a plain
// TCP port, as PgBouncer runs, and measures it as a fourth target. It has no
// tunnel, no TLS and no relay; the spool's events are read back and dropped
// instead of uploaded.

// engineHopEnv, when set in the environment, makes the harness binary serve
// the engine hop instead of measuring; its value is the JSON of hopConfig.
const engineHopEnv = "AIRLOCK_BENCH_ENGINE_HOP"

// hopConfig is what the engine hop process needs.
type hopConfig struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Database string `json:"database"`
	User     string `json:"user"`
	Password string `json:"password"`
	SpoolDir string `json:"spoolDir"`
	// Mode is what the process serves: hopEngine, or one of the floor
	// relays (floor.go).
	Mode string `json:"mode,omitempty"`
}

// maybeServeEngineHop serves the engine hop and exits if this process was
// started as one; otherwise it returns at once.
func maybeServeEngineHop() {
	raw := os.Getenv(engineHopEnv)
	if raw == "" {
		return
	}
	if err := serveEngineHop(raw); err != nil {
		fmt.Fprintln(os.Stderr, "engine hop:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveEngineHop listens on 127.0.0.1, prints "listening PORT", and serves
// every connection with the PostgreSQL engine until SIGTERM or SIGINT.
func serveEngineHop(raw string) error {
	var cfg hopConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("%s: %w", engineHopEnv, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if cfg.Mode != hopEngine {
		return serveFloor(ctx, cfg)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := pgengine.NewEngine(pgengine.WithLogger(log))
	if err != nil {
		return err
	}
	spool, err := sessionlog.OpenSpool(cfg.SpoolDir, sessionlog.WithLogger(log))
	if err != nil {
		return err
	}
	defer spool.Close()
	discard := sessionlog.UploaderFunc(func(context.Context, sessionlog.Batch) error { return nil })
	go spool.Run(ctx, discard)
	sess := common.NewSession("bench-engine-hop", common.WithRecorder(spool))
	target := pgengine.Config{Host: cfg.Host, Port: cfg.Port, Database: cfg.Database, User: cfg.User, Password: cfg.Password}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)
	return serveEach(ctx, ln, func(c net.Conn) { eng.Serve(ctx, c, sess, target) })
}

// serveEach serves every connection ln accepts on a goroutine of its own,
// until ctx ends (nil) or accepting fails (the error).
func serveEach(ctx context.Context, ln net.Listener, serve func(net.Conn)) error {
	context.AfterFunc(ctx, func() { ln.Close() })
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go serve(c)
	}
}

// startHop starts a hop process in front of pg, serving mode (hopEngine or
// a floor relay), and returns its process and port.
func (e *environment) startHop(ctx context.Context, pg *postgres, mode string) (*proc, int, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, 0, err
	}
	name := "engine-hop"
	if mode != hopEngine {
		name = "relay-" + mode
	}
	cfg := hopConfig{Host: "127.0.0.1", Port: pg.Port, Mode: mode}
	if mode == hopEngine {
		// Only the engine logs in for the client; the relays pass the
		// client's own login through.
		cfg.Database, cfg.User, cfg.Password = pg.Database, pg.User, pg.Password
		cfg.SpoolDir = filepath.Join(e.work, name+"-spool")
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), engineHopEnv+"="+string(raw))
	p, err := e.procs.start(name, cmd, filepath.Join(e.work, name+".log"), startOptions{StopSig: syscall.SIGTERM, WantLines: true})
	if err != nil {
		return nil, 0, err
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-p.Lines:
			if !ok {
				<-p.Done()
				return nil, 0, fmt.Errorf("the %s exited before listening (%v):\n%s", name, p.waitErr, p.tail(20))
			}
			if rest, found := strings.CutPrefix(l, "listening "); found {
				port, err := strconv.Atoi(rest)
				if err != nil {
					return nil, 0, fmt.Errorf("the %s printed %q", name, l)
				}
				go func() { // keep reading, so the process never blocks on stdout
					for range p.Lines {
					}
				}()
				return p, port, nil
			}
		case <-timeout:
			p.stop(5 * time.Second)
			return nil, 0, fmt.Errorf("the %s did not start listening within 30 s", name)
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}
