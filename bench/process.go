package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procSet holds every long-lived process the harness started, to stop them
// all, by PID, at the end.
type procSet struct {
	mu    sync.Mutex
	procs []*proc
}

// proc is one started process. Its stdout and stderr go to LogPath; with
// Lines set, stdout is also delivered line by line.
type proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	// Lines receives stdout lines when the process was started with
	// wantLines; it is closed when stdout ends.
	Lines <-chan string

	stopSig syscall.Signal
	done    chan struct{}
	waitErr error
}

// startOptions says how to start a process.
type startOptions struct {
	// Cred runs the process as another user (root starting PostgreSQL).
	Cred *syscall.Credential
	// StopSig asks the process to end; SIGKILL follows after a grace period.
	StopSig syscall.Signal
	// WantLines delivers stdout line by line on proc.Lines.
	WantLines bool
}

// start starts cmd, logging its output to logPath, and remembers it. The
// process gets its own process group (so a Ctrl+C at the terminal reaches
// only the harness, which then stops it in order) and dies with the harness
// if the harness is killed (Pdeathsig).
func (s *procSet) start(name string, cmd *exec.Cmd, logPath string, o startOptions) (*proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: o.Cred}
	cmd.Stderr = logFile
	var stdout io.ReadCloser
	if o.WantLines {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			logFile.Close()
			return nil, err
		}
	} else {
		cmd.Stdout = logFile
	}
	if o.StopSig == 0 {
		o.StopSig = syscall.SIGTERM
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, cmd.Path, err)
	}
	p := &proc{Name: name, Cmd: cmd, LogPath: logPath, stopSig: o.StopSig, done: make(chan struct{})}
	var copied sync.WaitGroup
	if stdout != nil {
		lines := make(chan string, 64)
		p.Lines = lines
		copied.Add(1)
		go func() {
			defer copied.Done()
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				fmt.Fprintln(logFile, sc.Text())
				select {
				case lines <- sc.Text():
				default: // nobody listens any more
				}
			}
		}()
	}
	go func() {
		copied.Wait()
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// PID returns the process ID.
func (p *proc) PID() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has ended.
func (p *proc) Done() <-chan struct{} { return p.done }

// stop signals the process group and waits up to grace before killing it.
func (p *proc) stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = syscall.Kill(-p.PID(), p.stopSig)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("%s (pid %d) ignored %s for %s and was killed", p.Name, p.PID(), p.stopSig, grace)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID())
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stopAll stops the processes in the reverse order of their start; those
// that ended already are skipped.
func (s *procSet) stopAll() error {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// logTails returns the end of every process's log, for a failed run.
func (s *procSet) logTails(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.procs {
		if t := p.tail(n); t != "" {
			out = append(out, fmt.Sprintf("--- %s (%s), last lines:\n%s", p.Name, filepath.Base(p.LogPath), t))
		}
	}
	return out
}

// runCmd runs a short command and returns its combined output, with the
// output in the error if it fails.
func runCmd(cmd *exec.Cmd) ([]byte, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", filepath.Base(cmd.Path), strings.Join(cmd.Args[1:], " "), err, tailString(string(out), 3000))
	}
	return out, nil
}

func tailString(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
