package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/state"
)

// Settings of the dashboard the test reads.
const (
	// uiToken logs in to the dashboard, apiToken scales.
	uiToken  = "dashboard-test-ui-token"
	apiToken = "dashboard-test-api-token"
	// uiPort is the follower's listener on h1's management address.
	uiPort = "8481"
	// pages is how many event streams (pages) are open while the Consul
	// rate is measured.
	pages = 50
	// rateWindow is each window the Consul requests are counted over.
	rateWindow = 15 * time.Second
	// demoService is the demo's Service document.
	demoService = "web"
)

// countingProxy forwards to a Consul agent and counts the requests.
type countingProxy struct {
	addr     string
	requests atomic.Uint64
}

// newCountingProxy listens on host (an address the lab hosts reach) and
// forwards to target.
func newCountingProxy(t *testing.T, host, target string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{addr: ln.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// demoDocs reads examples/demo.
func demoDocs(t *testing.T) []string {
	t.Helper()
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "examples", "demo", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples/demo: %v (%d files)", err, len(files))
	}
	var docs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	return docs
}

// pageChunk is a chunk card as the page shows it.
type pageChunk struct {
	Node  string   `json:"node"`
	Chunk string   `json:"chunk"`
	Down  bool     `json:"down"`
	Addrs []string `json:"addrs"`
}

// pageTask is a task row of the demo service as the page shows it.
type pageTask struct {
	ID   string   `json:"id"`
	Node string   `json:"node"`
	Down bool     `json:"down"`
	Addr []string `json:"addr"`
}

const chunksJS = `[...document.querySelectorAll('#vlans .chunk.chunk[data-chunk]')].filter(e => !e.classList.contains('quarantined')).map(e => ({
	node: e.dataset.node, chunk: e.dataset.chunk, down: e.dataset.down === 'true',
	addrs: [...e.querySelectorAll('[data-task-addr]')].map(a => a.dataset.taskAddr).sort()}))`

const tasksJS = `[...document.querySelectorAll('#services [data-service="web"] tr[data-task]')].map(e => ({
	id: e.dataset.task, node: e.querySelector('[data-h="node"]').dataset.node, down: e.classList.contains('down'),
	addr: [...e.querySelectorAll('[data-addr]')].map(a => a.dataset.addr)}))`

// TestDashboardLab runs the demo on three lab hosts and a fourth manager
// process on h1 (a follower, its Consul requests through a counting proxy,
// listening on h1's management address so it needs a login) and reads its
// dashboard in chromium: the login, each host's chunk and each task's
// address as Docker reports them, fifty open event streams against the
// Consul request rate, a scale change through the API appearing without a
// reload, and a killed host marked.
func TestDashboardLab(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Apply(demoDocs(t)...)
	b.WaitFor("the demo's 3 tasks running and passing", 4*time.Minute, func(ctx context.Context) error {
		tasks, err := b.Running(ctx, demoService)
		if err != nil {
			return err
		}
		passing, err := b.Passing(ctx, b.H1, demoService)
		if err != nil {
			return err
		}
		if len(tasks) != 3 || len(passing) != 3 {
			return fmt.Errorf("%d running, %d passing", len(tasks), len(passing))
		}
		return nil
	})

	proxy := newCountingProxy(t, b.Cluster.Gateway, b.H1.ConsulAddr)
	bin := filepath.Join(b.Cluster.Dir, "reconciler-ui")
	copyBinary(t, bed.ReconcilerBinary(), bin)
	tokens := filepath.Join(b.H1.Dir, "api-tokens")
	if err := os.WriteFile(tokens, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := net.JoinHostPort(b.H1.Addr, uiPort)
	ui := b.H1.StartProcess(t, bin, "run", "--role", "manager", "--node-name", "h1-ui", "--listen", listen,
		"--consul-addr", proxy.addr, "--ui-token", uiToken, "--token-file", tokens)
	base := "http://" + listen
	b.WaitFor("the follower's dashboard", time.Minute, func(ctx context.Context) error {
		if !ui.Running() {
			return errors.New("exited:\n" + bed.LastLines(ui.Logs(), 20))
		}
		code, body, err := get(ctx, base+"/v1/overview", "Bearer "+uiToken)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("GET /v1/overview: %d %v", code, err)
		}
		var o struct{ Synced bool }
		if err := json.Unmarshal([]byte(body), &o); err != nil || !o.Synced {
			return fmt.Errorf("not synced: %v", err)
		}
		return nil
	})

	t.Run("login", func(t *testing.T) {
		for _, path := range []string{"/", "/v1/events", "/v1/overview"} {
			code, _, err := get(b.Ctx, base+path, "")
			if err != nil || code != http.StatusUnauthorized {
				t.Errorf("GET %s without a login: %d %v, want 401", path, code, err)
			}
		}
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
		resp, err := c.PostForm(base+"/ui/login", url.Values{"token": {"not-the-token"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("login with a wrong token: %d, want 401", resp.StatusCode)
		}
		resp, err = c.PostForm(base+"/ui/login", url.Values{"token": {uiToken}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("login: %d", resp.StatusCode)
		}
		ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events", nil)
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || line != "event: overview\n" {
			t.Errorf("event stream after login: %d %q", resp.StatusCode, line)
		}
	})

	ctx := newBrowser(t)
	t.Run("browser login", func(t *testing.T) {
		do(t, ctx, time.Minute, "log in", chromedp.Navigate(base+"/"),
			chromedp.SetValue(chromedp.CSS(`input[name="token"]`), uiToken),
			chromedp.Submit(chromedp.CSS(`form`)))
		waitRendered(t, ctx)
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("chunks and addresses", func(t *testing.T) {
		// The first snapshot goes in section by section: all of it first.
		waitFor(t, ctx, 30*time.Second, "wait for the whole first snapshot", `swarmvlan.complete > 0`)
		leader, err := b.Leader(b.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		var last string
		deadline := time.Now().Add(time.Minute)
		for {
			last = compareWithLab(t, b, ctx)
			if last == "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if last != "" {
			t.Fatalf("the page differs from the lab: %s", last)
		}
		who := eval[map[string]string](t, ctx, `({leader: document.querySelector('[data-leader]').textContent, who: document.getElementById('who').textContent})`)
		if who["leader"] != leader.Name || !strings.Contains(who["who"], "h1-ui, a follower; leader "+leader.Name) {
			t.Errorf("the page says %q, leader %q; want the follower h1-ui and leader %s", who["who"], who["leader"], leader.Name)
		}
		screenshot(t, ctx, "lab-1280")
		do(t, ctx, 10*time.Second, "narrow", viewport(390, 844, true))
		noHorizontalScroll(t, ctx)
		screenshot(t, ctx, "lab-390")
		do(t, ctx, 10*time.Second, "wide", viewport(1280, 900, false))
	})

	t.Run("fifty pages", func(t *testing.T) {
		count := func() uint64 {
			n := proxy.requests.Load()
			select {
			case <-time.After(rateWindow):
			case <-b.Ctx.Done():
				t.Fatal(b.Ctx.Err())
			}
			return proxy.requests.Load() - n
		}
		quiet := count()
		// A browser opens at most 6 connections to one host over HTTP/1.1,
		// so fifty pages' event streams are fifty clients of their own,
		// each logged in with the cookie, as the page's EventSource is.
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar}
		resp, err := c.PostForm(base+"/ui/login", url.Values{"token": {uiToken}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		sctx, stop := context.WithCancel(b.Ctx)
		defer stop()
		var open, events atomic.Int64
		var g errgroup.Group
		for range pages {
			first := make(chan error, 1)
			g.Go(func() error {
				req, _ := http.NewRequestWithContext(sctx, "GET", base+"/v1/events", nil)
				resp, err := c.Do(req)
				if err != nil {
					first <- err
					return nil
				}
				defer resp.Body.Close()
				r := bufio.NewReader(resp.Body)
				open.Add(1)
				defer open.Add(-1)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						first <- err
						return nil
					}
					if line == "event: overview\n" {
						if events.Add(1); len(first) == 0 {
							first <- nil
						}
					}
				}
			})
			if err := <-first; err != nil {
				t.Fatalf("event stream: %v", err)
			}
		}
		busy := count()
		stillOpen := open.Load()
		stop()
		_ = g.Wait()
		t.Logf("FIGURE dashboard_consul_requests_no_pages: %d per %s", quiet, rateWindow)
		t.Logf("FIGURE dashboard_consul_requests_%d_pages: %d per %s", pages, busy, rateWindow)
		if stillOpen != pages {
			t.Errorf("%d of %d event streams open at the end of the window", stillOpen, pages)
		}
		// One request per page, or per page and snapshot, would add 50.
		if busy > quiet+quiet/4+5 {
			t.Errorf("the follower sent Consul %d requests in %s with %d pages open, %d without", busy, rateWindow, pages, quiet)
		}
	})

	t.Run("scale", func(t *testing.T) {
		if !eval[bool](t, ctx, `window.notReloaded = true`) {
			t.Fatal("could not mark the page")
		}
		before := map[string]bool{}
		for _, tk := range eval[[]pageTask](t, ctx, tasksJS) {
			before[tk.ID] = true
		}
		body := `{"replicas": 4, "reason": "dashboard test"}`
		req, _ := http.NewRequestWithContext(b.Ctx, "POST", base+"/v1/services/"+demoService+"/scale", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("scale: %d %s", resp.StatusCode, out)
		}
		scaled := time.Now()
		kv := b.Consul(b.H1).KV()
		var inKV, onPage time.Time
		var newID string
		for deadline := scaled.Add(2 * time.Minute); time.Now().Before(deadline) && onPage.IsZero(); time.Sleep(50 * time.Millisecond) {
			if inKV.IsZero() {
				if id := newTaskInStatus(b.Ctx, kv, before); id != "" {
					inKV = time.Now()
				}
			}
			for _, tk := range eval[[]pageTask](t, ctx, tasksJS) {
				if !before[tk.ID] {
					onPage, newID = time.Now(), tk.ID
				}
			}
		}
		if onPage.IsZero() {
			t.Fatalf("no new task on the page within 2 min of the scale request")
		}
		if inKV.IsZero() || inKV.After(onPage) {
			inKV = onPage // seen on the page at the same poll
		}
		bed.Figure(t, "dashboard_scale_request_to_page", onPage.Sub(scaled))
		bed.Figure(t, "dashboard_status_to_page", onPage.Sub(inKV))
		if d := onPage.Sub(inKV); d > 2*time.Second {
			t.Errorf("new task %s on the page %s after the leader recorded it, want within 2 s", newID, d)
		}
		if !eval[bool](t, ctx, `window.notReloaded === true`) {
			t.Errorf("the page reloaded")
		}
		// And the page follows it until it runs with its address.
		var last string
		deadline := time.Now().Add(2 * time.Minute)
		for {
			last = compareWithLab(t, b, ctx)
			if last == "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if last != "" {
			t.Errorf("after the scale, the page differs from the lab: %s", last)
		}
		screenshot(t, ctx, "lab-scaled")
	})

	t.Run("host killed", func(t *testing.T) {
		leader, err := b.Leader(b.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		victim := b.Cluster.Host(3)
		if victim.Name == leader.Name {
			victim = b.Cluster.Host(2)
		}
		var onVictim []string
		for _, tk := range eval[[]pageTask](t, ctx, tasksJS) {
			if tk.Node == victim.Name {
				onVictim = append(onVictim, tk.ID)
			}
		}
		b.Crash(victim)
		killed := time.Now()
		var last string
		for deadline := killed.Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			last = victimMarked(t, ctx, victim.Name, onVictim)
			if last == "" {
				break
			}
		}
		if last != "" {
			t.Fatalf("%s killed: %s", victim.Name, last)
		}
		bed.Figure(t, "dashboard_host_killed_to_marked", time.Since(killed))
		screenshot(t, ctx, "lab-host-killed")
	})
}

// compareWithLab returns how the page's chunks and task addresses differ
// from what the hosts' engines report ("" when they agree).
func compareWithLab(t *testing.T, b *bed.Bed, ctx context.Context) string {
	t.Helper()
	chunks, err := b.Chunks(b.Ctx)
	if err != nil {
		return err.Error()
	}
	tasks, err := b.Running(b.Ctx, demoService)
	if err != nil {
		return err.Error()
	}
	wantAddrs := map[string][]string{}
	wantTask := map[string]bed.Task{}
	for _, tk := range tasks {
		wantAddrs[tk.Host] = append(wantAddrs[tk.Host], tk.Addr.String())
		wantTask[tk.TaskID] = tk
	}
	var diffs []string
	got := map[string]pageChunk{}
	for _, c := range eval[[]pageChunk](t, ctx, chunksJS) {
		got[c.Node] = c
	}
	for host, chunk := range chunks {
		c, ok := got[host]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("no chunk card for %s (its config network holds %s)", host, chunk))
		case c.Chunk != chunk.String():
			diffs = append(diffs, fmt.Sprintf("%s: page shows chunk %s, Docker %s", host, c.Chunk, chunk))
		default:
			want := slices.Sorted(slices.Values(wantAddrs[host]))
			if !slices.Equal(c.Addrs, want) {
				diffs = append(diffs, fmt.Sprintf("%s: page shows addresses %v in %s, Docker %v", host, c.Addrs, chunk, want))
			}
		}
	}
	rows := map[string]pageTask{}
	for _, r := range eval[[]pageTask](t, ctx, tasksJS) {
		rows[r.ID] = r
	}
	for _, id := range slices.Sorted(maps.Keys(wantTask)) {
		want := wantTask[id]
		r, ok := rows[id]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("task %s (on %s) has no row", id, want.Host))
			continue
		}
		if r.Node != want.Host || !slices.Equal(r.Addr, []string{want.Addr.String()}) {
			diffs = append(diffs, fmt.Sprintf("task %s: row shows %s %v, Docker %s %s", id, r.Node, r.Addr, want.Host, want.Addr))
		}
	}
	if len(rows) != len(wantTask) {
		diffs = append(diffs, fmt.Sprintf("%d task rows, %d running tasks", len(rows), len(wantTask)))
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}

// victimMarked returns what the page does not yet show of host's death:
// its chunk marked down, its node card not live, and its tasks' rows
// marked (or gone, once the leader recorded their replacements).
func victimMarked(t *testing.T, ctx context.Context, host string, tasks []string) string {
	t.Helper()
	var missing []string
	found := false
	for _, c := range eval[[]pageChunk](t, ctx, chunksJS) {
		if c.Node == host {
			found = true
			if !c.Down {
				missing = append(missing, "chunk "+c.Chunk+" not marked down")
			}
		}
	}
	if !found {
		missing = append(missing, "no chunk card")
	}
	if eval[string](t, ctx, fmt.Sprintf(`(document.querySelector('#nodes [data-node=%q]') || {dataset: {}}).dataset.live`, host)) != "false" {
		missing = append(missing, "node card not marked")
	}
	rows := map[string]pageTask{}
	for _, r := range eval[[]pageTask](t, ctx, tasksJS) {
		rows[r.ID] = r
	}
	for _, id := range tasks {
		if r, ok := rows[id]; ok && !r.Down {
			missing = append(missing, "task "+id+" not marked")
		}
	}
	return strings.Join(missing, "; ")
}

// newTaskInStatus returns a task of the demo service in its status key
// that is not in before.
func newTaskInStatus(ctx context.Context, kv *api.KV, before map[string]bool) string {
	p, _, err := kv.Get(bed.KVPrefix+"status/services/"+demoService, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil || p == nil {
		return ""
	}
	var st state.Status
	var det cluster.ServiceDetails
	if json.Unmarshal(p.Value, &st) != nil || json.Unmarshal(st.Details, &det) != nil {
		return ""
	}
	for _, tk := range det.Service.Tasks {
		if !before[tk.ID] {
			return tk.ID
		}
	}
	return ""
}

// get fetches url (with an Authorization header when auth is set).
func get(ctx context.Context, url, auth string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp.StatusCode, "", nil
	}
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func copyBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
