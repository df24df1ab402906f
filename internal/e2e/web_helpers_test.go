package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// webBrowser is a headless Chromium tab on an Airlock server's web UI.
type webBrowser struct {
	t    *testing.T
	ctx  context.Context
	base string
}

// newWebBrowser starts Debian's Chromium (headless, its own profile) for the
// test; confirm dialogs are accepted.
func newWebBrowser(t *testing.T, base string) *webBrowser {
	t.Helper()
	path := testenv.Chromium(t)
	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000)}
	opts = append(opts, chromedp.DefaultExecAllocatorOptions[:]...)
	for k, v := range testenv.ChromiumFlags {
		opts = append(opts, chromedp.Flag(k, v))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &webBrowser{t: t, ctx: ctx, base: base}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	go func() {
		for _, err := range chromedp.Events(ctx, page.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return b
}

// do runs steps, failing the test (with the page's text) after a minute.
func (b *webBrowser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v\npage: %s", err, b.pageText())
	}
}

func (b *webBrowser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.location.href + "\n" + document.body.innerText`))
	return s
}

// open navigates to path and waits for the element sel.
func (b *webBrowser) open(path string, sel chromedp.CSS) {
	b.t.Helper()
	// A navigation typed while the previous page still loads is aborted by
	// the browser (net::ERR_ABORTED), as it would be for a person: type it
	// again.
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
		err := chromedp.Do(ctx, chromedp.Navigate(b.base+path), chromedp.WaitVisible(sel))
		cancel()
		if err == nil {
			return
		}
		if attempt == 3 || !strings.Contains(err.Error(), "ERR_ABORTED") {
			b.t.Fatalf("browser: opening %s: %v\npage: %s", path, err, b.pageText())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// submit clicks sel, which leaves the page (a form's submit button or a
// link), and waits until the next page has loaded. Without it, a wait that
// follows could be met by the page being left (a notice of the previous
// step, the rows before a filter) and the next navigation would race the
// one still in flight.
func submit[S chromedp.Selectable](sel S) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`window.airlockLeaving = true`)(ctx, t)
			return err
		}),
		chromedp.Click(sel),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			for {
				// Evaluating fails while the old page is torn down: try again.
				if loaded, err := chromedp.Evaluate[bool](`window.airlockLeaving !== true && document.readyState === "complete"`)(ctx, t); err == nil && loaded {
					return nil
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("the page did not change after the click: %w", ctx.Err())
				case <-time.After(50 * time.Millisecond):
				}
			}
		}),
	)
}

// waitText waits, without navigating, until the text of sel contains want.
func (b *webBrowser) waitText(sel chromedp.CSS, want string, timeout time.Duration) string {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if s := b.text(sel); strings.Contains(s, want) {
			return s
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s never showed %q\npage: %s", sel, want, b.pageText())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// text returns the visible text of sel.
func (b *webBrowser) text(sel chromedp.CSS) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		b.t.Fatalf("text of %s: %v\npage: %s", sel, err, b.pageText())
	}
	return s
}

// has reports whether the current page has an element matching sel.
func (b *webBrowser) has(sel string) bool {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector(`+jsString(sel)+`) !== null`))
	if err != nil {
		b.t.Fatal(err)
	}
	return ok
}

// html returns the page's HTML.
func (b *webBrowser) html() string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// eval evaluates a promise-returning expression in the page.
func (b *webBrowser) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	return s
}

// reloadUntil opens path until the text of sel contains want, for up to
// timeout.
func (b *webBrowser) reloadUntil(path string, sel chromedp.CSS, want string, timeout time.Duration) string {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b.do(chromedp.Navigate(b.base + path))
		if b.has(string(sel)) {
			if s := b.text(sel); strings.Contains(s, want) {
				return s
			}
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s never showed %q in %s\npage: %s", path, want, sel, b.pageText())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (b *webBrowser) login(email, password string) {
	b.t.Helper()
	b.open("/login", "#login-form")
	b.do(chromedp.SendKeys(chromedp.ID("email"), email), chromedp.SendKeys(chromedp.ID("password"), password),
		submit(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("signed-in")))
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// shellProcess is a command run by sh, its output read line by line.
type shellProcess struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   strings.Builder
	lines chan string
	done  chan struct{}
}

// runShell runs command with sh as user u, with the airlock binary first
// on PATH; it is interrupted when the test ends.
func runShell(t *testing.T, u *e2e.User, command string) *shellProcess {
	t.Helper()
	cmd := exec.Command("sh", "-c", command)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(e2e.Bin)+":"+os.Getenv("PATH"), "AIRLOCK_CONFIG_DIR="+u.Config)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &shellProcess{cmd: cmd, lines: make(chan string, 100), done: make(chan struct{})}
	cmd.Stderr = &lockedWriter{p: p}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("sh -c %s:\n%s", command, p.output())
		}
	})
	return p
}

type lockedWriter struct{ p *shellProcess }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func (p *shellProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *shellProcess) waitLine(t *testing.T, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.lines:
			if re.MatchString(l) {
				return l
			}
		case <-p.done:
			t.Fatalf("the command exited before printing %s:\n%s", re, p.output())
		case <-deadline:
			t.Fatalf("no line matching %s within %s:\n%s", re, timeout, p.output())
		}
	}
}

func (p *shellProcess) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("the command did not exit within %s:\n%s", timeout, p.output())
	}
}

// httpGet fetches url with a plain client.
func httpGet(t *testing.T, method, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}
