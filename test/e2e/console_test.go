package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// chromiumPath finds a headless-capable Chromium (Debian's chromium).
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserCtx starts a headless Chromium and returns its context; every
// console error, uncaught exception and error log entry is collected.
func browserCtx(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("no chromium installed (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("ignore-certificate-errors", true), // the demo's certificates are not in a trust store here
		chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	// chromedp reports DOM events its protocol version does not model
	// (newer Chromium): noise, not the page's errors.
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithErrorf(func(format string, args ...any) {
		if msg := fmt.Sprintf(format, args...); !strings.Contains(msg, "unhandled node event") {
			t.Logf("chromedp: %s", msg)
		}
	}))
	t.Cleanup(func() { cancelC(); cancelA() })
	var mu sync.Mutex
	var errs []string
	chromedp.ListenTarget(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			errs = append(errs, "exception: "+e.ExceptionDetails.Error())
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value))
				}
				errs = append(errs, "console.error: "+strings.Join(parts, " "))
			}
		case *log.EventEntryAdded:
			if e.Entry.Level == log.LevelError {
				errs = append(errs, "log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		}
	})
	if err := chromedp.Run(ctx, log.Enable()); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), errs...) }
}

// TestConsoleInBrowser drives the web console in a real headless Chromium:
// sign in, see the three nodes, kill the owner and see the failover appear
// live, switch over from the console, a read-only token sees no actions,
// and no console errors. Screenshots of the main views go to
// $LIFEBOAT_SCREENSHOTS when set (docs/ holds the committed ones).
func TestConsoleInBrowser(t *testing.T) {
	if chromiumPath() == "" {
		t.Skip("no chromium installed (apt-get install chromium)")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "api.tokens")
	const opTok, readTok = "console-operate-0123456789", "console-read-0123456789"
	if err := os.WriteFile(tokens, []byte("oncall operate "+opTok+"\ngrafana read "+readTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, demo.Options{Dir: filepath.Join(dir, "c"), TokenFile: tokens})
	apply(t, c, flagHierarchy("web", []string{"node1", "node2", "node3"}, "", 1, ""))
	waitFor(t, c, "node2", 15*time.Second, "web online on node1", onlineOn("web", "node1"))

	ctx, consoleErrors := browserCtx(t)
	base := "https://" + c.Node("node2").API // not the node killed below
	shots := os.Getenv("LIFEBOAT_SCREENSHOTS")
	if shots != "" {
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			if shots == "" {
				return nil
			}
			var buf []byte
			if err := chromedp.FullScreenshot(&buf, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, "console-"+name+".png"), buf, 0o644)
		})
	}
	run := func(what string, actions ...chromedp.Action) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Run(tctx, actions...); err != nil {
			var html string
			_ = chromedp.Run(ctx, chromedp.OuterHTML("main", &html))
			t.Fatalf("%s: %v\nconsole errors: %v\npage: %.3000s", what, err, consoleErrors(), html)
		}
	}
	ownerIs := func(node string) chromedp.Action {
		return chromedp.Poll(fmt.Sprintf(`(() => { const td = document.querySelector('tr[data-hierarchy="web"] td.owner'); return td && td.textContent === %q })()`, node), nil,
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(25*time.Second))
	}

	// Sign in with the operate token; the three nodes show.
	var nodes []string
	run("sign in",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible("#token", chromedp.ByID),
		chromedp.SendKeys("#token", opTok, chromedp.ByID),
		chromedp.Click(`#signin-form button[type="submit"]`),
		chromedp.WaitVisible(`tr[data-node="node3"]`),
		ownerIs("node1"),
		chromedp.Evaluate(`[...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.node)`, &nodes),
		shot("overview"),
	)
	if strings.Join(nodes, ",") != "node1,node2,node3" {
		t.Fatalf("nodes shown: %v", nodes)
	}
	var summary string
	run("summary", chromedp.Text("#summary", &summary, chromedp.ByID))
	if !strings.HasPrefix(summary, "READY") && !strings.HasPrefix(summary, "NOT READY") {
		t.Errorf("summary line: %q", summary)
	}

	// Kill the owner: the failover appears without a reload.
	if err := c.Signal("node1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	run("the failover appears", ownerIs("node2"))
	seen := time.Now()
	// The cluster's own record: the event of web coming online on node2.
	out, _, _ := lifeboat(t, c, "node2", "events", "--json", "--limit", "0")
	var record time.Time
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e events.Event
		if json.Unmarshal([]byte(line), &e) == nil && e.Node == "node2" && e.Hierarchy == "web" && e.Kind == "action" && e.Action == "restore" && e.Phase == "end" {
			record = e.Time
		}
	}
	if record.IsZero() {
		t.Fatalf("no record of web restored on node2 in the history:\n%s", out)
	}
	lag := seen.Sub(record)
	t.Logf("console showed the failover %v after the cluster recorded it", lag.Round(time.Millisecond))
	if lag > 2*time.Second {
		t.Errorf("the console showed the failover %v after the cluster's record (want within 2 s)", lag)
	}
	// The timeline says how long the failover took.
	var took string
	run("timeline", chromedp.WaitVisible(`#timeline li[data-kind="failover"][data-action="done"]`),
		chromedp.Text(`#timeline li[data-kind="failover"][data-action="done"]`, &took), shot("failover"))
	t.Logf("timeline: %s", took)
	if !strings.Contains(took, "web in service on node2 (from node1)") || !strings.Contains(took, "ms after node1 was reported failed") {
		t.Errorf("timeline's failover line: %q", took)
	}

	// Switch over from the console, to node3, with its readiness shown.
	var ready string
	run("switchover dialog",
		chromedp.Click(`tr[data-hierarchy="web"] button[data-action="switchover"]`),
		chromedp.WaitVisible("#switch-dialog", chromedp.ByID),
		chromedp.SetValue("#switch-to", "node3", chromedp.ByID),
		chromedp.Evaluate(`document.querySelector('#switch-to').dispatchEvent(new Event('change'))`, nil),
		chromedp.Text("#switch-ready", &ready, chromedp.ByID),
		shot("switchover"),
		chromedp.Click("#switch-confirm", chromedp.ByID),
		ownerIs("node3"),
	)
	if !strings.Contains(ready, "node3") {
		t.Errorf("the dialog did not show node3's readiness: %q", ready)
	}
	var moved string
	run("timeline switchover", chromedp.WaitVisible(`#timeline li[data-kind="switchover"][data-action="done"]`),
		chromedp.Text(`#timeline li[data-kind="switchover"][data-action="done"]`, &moved))
	t.Logf("timeline: %s", moved)
	if !strings.Contains(moved, "web in service on node3 (from node2)") || !strings.Contains(moved, "ms after the request") {
		t.Errorf("timeline's switchover line: %q", moved)
	}

	// A read-only token sees the cluster and no action buttons.
	var buttons int
	run("read-only",
		chromedp.Click("#signout", chromedp.ByID),
		chromedp.WaitVisible("#token", chromedp.ByID),
		// By keyboard: the token field has the focus; Enter signs in.
		chromedp.KeyEvent(readTok+kb.Enter),
		chromedp.WaitVisible(`tr[data-hierarchy="web"]`),
		chromedp.Evaluate(`document.querySelectorAll('button[data-action]').length`, &buttons),
	)
	if buttons != 0 {
		t.Errorf("a read-only session sees %d action buttons", buttons)
	}

	// A forged request (the session cookie, no CSRF token) is refused: the
	// page's own fetch without the header, as a script on another page
	// could at best send.
	var forged int
	run("forged request",
		chromedp.Evaluate(`(async () => { const r = await fetch('/v1/maintenance', {method: 'POST', body: '{"scope":"cluster","on":true}', headers: {'Content-Type': 'application/json'}}); return r.status })()`, &forged,
			func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }),
	)
	if forged != 403 {
		t.Errorf("a change without the CSRF token answered %d, want 403", forged)
	}
	// The refused fetch logs one error in the console (Chromium reports
	// any 4xx): it is the test's own, not the page's.
	var pageErrs []string
	for _, e := range consoleErrors() {
		if !strings.Contains(e, "/v1/maintenance") {
			pageErrs = append(pageErrs, e)
		}
	}
	if len(pageErrs) > 0 {
		t.Errorf("console errors: %v", pageErrs)
	}
}
