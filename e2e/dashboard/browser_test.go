package dashboard

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"swarmvlan/lab"
)

// newBrowser starts a headless chromium for the test and returns its first
// tab's context; more tabs are chromedp.NewContext of it.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not installed (scripts/ensure-chromium.sh installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("renderer-process-limit", "4"),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// do runs steps in tab ctx within timeout, failing the test on error.
func do(t *testing.T, ctx context.Context, timeout time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in tab ctx.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// viewport sets the tab's size (a phone is 390 CSS px wide).
func viewport(width, height int64, mobile bool) chromedp.Action[chromedp.Void] {
	if mobile {
		return chromedp.EmulateViewport(width, height, chromedp.EmulateMobile)
	}
	return chromedp.EmulateViewport(width, height)
}

// waitFor polls a JavaScript predicate in tab ctx until it holds.
// A navigation under way (a form's submit) ends the document the poll runs
// in; the poll starts again in the next one.
func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		_, err := chromedp.Run(pctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond)))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "context with specified id") {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
}

// waitRendered waits until the page has rendered a synced snapshot.
func waitRendered(t *testing.T, ctx context.Context) {
	t.Helper()
	waitFor(t, ctx, 30*time.Second, "wait for the first render", `!!(window.swarmvlan && window.swarmvlan.firstRender > 0)`)
}

// noHorizontalScroll fails the test when the page is wider than its
// viewport.
func noHorizontalScroll(t *testing.T, ctx context.Context) {
	t.Helper()
	w := eval[struct{ Scroll, Inner float64 }](t, ctx, `({Scroll: document.documentElement.scrollWidth, Inner: window.innerWidth})`)
	if w.Scroll > w.Inner {
		t.Errorf("page scrolls horizontally: %v px wide in a %v px viewport", w.Scroll, w.Inner)
	}
}

// screenshot saves the whole page as name.png in the test's artifact
// directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	buf, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	p := filepath.Join(artifactDir(t), name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

// viewShot saves what the viewport shows as name.png.
func viewShot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	buf, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	p := filepath.Join(artifactDir(t), name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

// artifactDir is t.ArtifactDir() when go test runs with -artifacts (the
// screenshots then land under -outputdir); otherwise a directory under the
// module's .run/ (not in git) that outlives the test.
func artifactDir(t *testing.T) string {
	t.Helper()
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		return t.ArtifactDir()
	}
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".run", "artifacts", "dashboard", t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
