package gitops

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/reconcile/gitsync"
)

const (
	hookSecret = "e2e-hook-secret-0f3a"
	listenPort = "8480"
	// txnPause is the managers' pause between the transactions of one
	// sync: long enough to kill the leader inside a sync.
	txnPause = 2 * time.Second
)

// gitops is the suite's world: the cluster, the git server and the
// branch's head, shared by the subtests.
type gitops struct {
	*bed.Bed
	git *lab.GitServer
	br  *branch
}

// branch is what main holds: its files and its head commit.
type branch struct {
	files map[string]string
	head  string
}

func webDoc(replicas int) string {
	return bed.ServiceDoc(bed.ServiceOpts{Name: "web", Replicas: replicas})
}

// TestGitOps brings up two managers syncing one repository (polling once
// an hour, so every sync below is a webhook's) and walks through what a
// GitOps user does and what goes wrong.
func TestGitOps(t *testing.T) {
	b := bed.NewCluster(t, lab.ClusterOptions{Hosts: 2, Managers: 2, ConsulServers: 2})
	g := &gitops{Bed: b, git: lab.StartGitServer(t, lab.GitServerOptions{Addr: b.Cluster.Gateway + ":0"}), br: &branch{}}
	g.br.files = map[string]string{
		"README.md":                   "cluster documents\n",
		"cluster/networks/vlan.yaml":  bed.VLANDoc(),
		"cluster/services/web/w.yaml": webDoc(1),
	}
	g.br.head = g.git.Commit(t, g.br.files, "vlan80 and web")
	secretFile := filepath.Join(t.TempDir(), "hook-secret")
	if err := os.WriteFile(secretFile, []byte(hookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, h := range b.Cluster.Hosts() {
		b.StartReconcilerWith(h, "--listen", "0.0.0.0:"+listenPort,
			"--git-url", g.git.URL, "--git-path", "cluster", "--git-interval", "1h",
			"--git-webhook-secret-file", secretFile, "--git-txn-pause", txnPause.String())
	}

	t.Run("commit converges", func(t *testing.T) {
		g := g.For(t)
		g.WaitFor("the first commit in force", time.Minute, g.inForce(g.br.head))
		g.WaitConverged(bed.Want{Service: "web", Replicas: 1}, 3*time.Minute)
		out := g.ReconcilerCmd("status")
		if !strings.Contains(out, "sync: "+g.git.URL+" main /cluster: commit "+g.br.head[:12]+" in force (Test Author") {
			t.Fatalf("reconciler status has no sync line:\n%s", out)
		}
		leader, err := g.Leader(g.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + leader.Addr + ":" + listenPort + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range []string{"swarmvlan_git_last_sync_timestamp_seconds ", "swarmvlan_git_commit_age_seconds ", "swarmvlan_git_sync_failures_total 0"} {
			if !strings.Contains(string(metrics), "\n"+m) {
				t.Errorf("the leader's /metrics has no %q", m)
			}
		}
	})

	t.Run("webhook push within a second", func(t *testing.T) {
		g := g.For(t)
		for i, via := range g.Cluster.Managers() {
			g.br.files["cluster/services/web/w.yaml"] = webDoc(2 + i)
			g.br.head = g.git.Commit(t, g.br.files, fmt.Sprintf("web to %d replicas", 2+i))
			pushed := time.Now()
			if code, body := g.hook(via, "github", g.pushPayload()); code != http.StatusAccepted {
				t.Fatalf("webhook to %s: %d %s", via.Name, code, body)
			}
			took := g.waitKV(g.br.head, 10*time.Second).Sub(pushed)
			leader, _ := g.Leader(g.Ctx)
			role := "a follower"
			if leader == via {
				role = "the leader"
			}
			bed.Figure(t, "git push to the commit in KV, webhook through "+role, took)
			t.Logf("push to KV via %s (%s): %s", via.Name, role, took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("KV held the commit %s after the push, via %s; want within 1s", took, role)
			}
			g.WaitConverged(bed.Want{Service: "web", Replicas: 2 + i}, 3*time.Minute)
		}
	})

	t.Run("refused webhooks sync nothing", func(t *testing.T) {
		g := g.For(t)
		before := g.status(t)
		files := maps.Clone(g.br.files)
		files["cluster/services/web/w.yaml"] = webDoc(1)
		unsynced := g.git.Commit(t, files, "not announced properly")
		body := g.pushPayload()
		mgr := g.Cluster.Managers()[0]
		cases := []struct {
			name string
			req  func() *http.Request
			want int
		}{
			{"bad signature", func() *http.Request {
				r := g.request(mgr, body)
				r.Header.Set("X-GitHub-Event", "push")
				r.Header.Set("X-Hub-Signature-256", "sha256="+sign(body, "not-the-secret"))
				return r
			}, http.StatusUnauthorized},
			{"wrong gitlab token", func() *http.Request {
				r := g.request(mgr, body)
				r.Header.Set("X-Gitlab-Event", "Push Hook")
				r.Header.Set("X-Gitlab-Token", "guess")
				return r
			}, http.StatusUnauthorized},
			{"10 MB payload", func() *http.Request {
				huge := append(bytes.Repeat([]byte(" "), 10<<20), body...)
				r := g.request(mgr, huge)
				r.Header.Set("X-GitHub-Event", "push")
				r.Header.Set("X-Hub-Signature-256", "sha256="+sign(huge, hookSecret))
				return r
			}, http.StatusRequestEntityTooLarge},
			{"malformed JSON", func() *http.Request {
				bad := []byte(`{"ref": "refs/heads/main", "after": `)
				r := g.request(mgr, bad)
				r.Header.Set("X-Gitea-Event", "push")
				r.Header.Set("X-Gitea-Signature", sign(bad, hookSecret))
				return r
			}, http.StatusBadRequest},
			{"push to another branch", func() *http.Request {
				other := []byte(`{"ref":"refs/heads/feature","after":"` + unsynced + `"}`)
				r := g.request(mgr, other)
				r.Header.Set("X-GitHub-Event", "push")
				r.Header.Set("X-Hub-Signature-256", "sha256="+sign(other, hookSecret))
				return r
			}, http.StatusOK},
		}
		for _, c := range cases {
			resp, err := http.DefaultClient.Do(c.req())
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, msg, c.want)
			}
			if strings.Contains(string(msg), hookSecret) {
				t.Errorf("%s: the answer shows the secret", c.name)
			}
		}
		g.Holds("no sync from refused webhooks", 3*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
			st := g.status(t)
			if !st.LastAttempt.Equal(before.LastAttempt) || st.Commit.Hash != g.br.head {
				return fmt.Errorf("a sync ran: last attempt %s (was %s), commit %.12s", st.LastAttempt, before.LastAttempt, st.Commit.Hash)
			}
			return nil
		})
		if !strings.Contains(g.Proc(mgr).Logs(), "git webhook refused") || strings.Contains(g.Proc(mgr).Logs(), hookSecret) {
			t.Errorf("the refusal is not logged, or the log shows the secret")
		}
		// Put the branch back to the head in force for what follows.
		g.br.head = g.git.Commit(t, g.br.files, "back")
		g.sync(t)
	})

	t.Run("invalid document applies nothing", func(t *testing.T) {
		g := g.For(t)
		before := g.kv(t)
		files := maps.Clone(g.br.files)
		files["cluster/services/web/w.yaml"] = webDoc(1)
		files["cluster/services/api.yaml"] = strings.Replace(bed.ServiceDoc(bed.ServiceOpts{Name: "api", Replicas: 1}), "  image: ", "  imag: ", 1)
		bad := g.git.Commit(t, files, "api, with a typo")
		g.hook(g.Cluster.Managers()[1], "gitlab", g.pushPayload())
		g.WaitFor("the invalid commit refused", 20*time.Second, func(ctx context.Context) error {
			st := g.status(t)
			if st.LastCommit != bad || st.LastResult != gitsync.ResultInvalid {
				return fmt.Errorf("last attempt %.12s %s", st.LastCommit, st.LastResult)
			}
			return nil
		})
		st := g.status(t)
		named := false
		for _, p := range st.Problems {
			named = named || p.File == "cluster/services/api.yaml" && strings.Contains(p.Problem, "spec.imag")
		}
		if !named || st.Commit.Hash != g.br.head || !maps.Equal(before, g.kv(t)) {
			t.Fatalf("status %+v; KV changed: %v", st, !maps.Equal(before, g.kv(t)))
		}
		out := g.ReconcilerCmd("status")
		if !strings.Contains(out, "invalid (commit "+bad[:12]+")") || !strings.Contains(out, "cluster/services/api.yaml: ") {
			t.Fatalf("reconciler status does not show the problem:\n%s", out)
		}
		g.Holds("web as it was", 3*time.Second, time.Second, func(ctx context.Context) error {
			_, err := g.Converged(ctx, bed.Want{Service: "web", Replicas: 3})
			return err
		})
	})

	t.Run("delete everything refused", func(t *testing.T) {
		g := g.For(t)
		before := g.kv(t)
		empty := g.git.Commit(t, map[string]string{"README.md": "moved to deploy/\n"}, "move everything")
		g.hook(g.Cluster.Managers()[0], "github", g.pushPayload())
		g.WaitFor("the empty commit refused", 20*time.Second, func(ctx context.Context) error {
			if st := g.status(t); st.LastCommit != empty || st.LastResult != gitsync.ResultRefused {
				return fmt.Errorf("last attempt %.12s %s", st.LastCommit, st.LastResult)
			}
			return nil
		})
		if !maps.Equal(before, g.kv(t)) {
			t.Fatal("KV changed by a refused commit")
		}
		if _, err := g.Converged(g.Ctx, bed.Want{Service: "web", Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		g.br.head = g.git.Commit(t, g.br.files, "put it back")
		g.sync(t)
	})

	t.Run("hand edit reverted and counted", func(t *testing.T) {
		g := g.For(t)
		was := g.status(t).DriftCorrections
		want := g.kv(t)
		if _, err := g.Consul(g.H1).KV().Put(&api.KVPair{Key: bed.KVPrefix + "spec/services/web", Value: []byte(webDoc(1))}, nil); err != nil {
			t.Fatal(err)
		}
		g.WaitConverged(bed.Want{Service: "web", Replicas: 1}, 3*time.Minute) // the reconcilers follow KV
		g.hook(g.Cluster.Managers()[1], "gitea", g.pushPayload())
		g.WaitFor("the edit reverted", 20*time.Second, func(ctx context.Context) error {
			if !maps.Equal(want, g.kv(t)) {
				return errors.New("KV still holds the edit")
			}
			return nil
		})
		st := g.status(t)
		if st.DriftCorrections != was+1 || !slices.Equal(st.Drift, []string{"services/web"}) {
			t.Fatalf("drift: %d corrections (was %d), %v", st.DriftCorrections, was, st.Drift)
		}
		g.WaitConverged(bed.Want{Service: "web", Replicas: 3}, 3*time.Minute)
	})

	t.Run("force-push", func(t *testing.T) {
		g := g.For(t)
		files := maps.Clone(g.br.files)
		files["cluster/services/web/w.yaml"] = webDoc(2)
		rewritten := g.git.ForcePush(t, files, "web to 2, history rewritten")
		g.br.files, g.br.head = files, rewritten
		g.sync(t)
		g.WaitConverged(bed.Want{Service: "web", Replicas: 2}, 3*time.Minute)
	})

	t.Run("repository away for a while", func(t *testing.T) {
		g := g.For(t)
		before := g.kv(t)
		g.git.SetDown(true)
		t.Cleanup(func() { g.git.SetDown(false) })
		away := time.Now()
		for range 3 {
			g.hook(g.Cluster.Managers()[0], "github", g.pushPayload())
			time.Sleep(time.Second)
		}
		st := g.status(t)
		if st.LastResult != gitsync.ResultUnreachable || !strings.Contains(st.LastError, "503") || st.Commit.Hash != g.br.head {
			t.Fatalf("status while away: %+v", st)
		}
		if !maps.Equal(before, g.kv(t)) {
			t.Fatal("KV changed while the repository was away")
		}
		if _, err := g.Converged(g.Ctx, bed.Want{Service: "web", Replicas: 2}); err != nil {
			t.Fatal(err)
		}
		t.Logf("status while away: %s: %s", st.LastResult, st.LastError)
		g.git.SetDown(false)
		g.br.files["cluster/services/web/w.yaml"] = webDoc(3)
		g.br.head = g.git.Commit(t, g.br.files, "while it was away")
		g.sync(t)
		t.Logf("sync resumed %s after the repository went away", time.Since(away).Round(time.Millisecond))
		g.WaitConverged(bed.Want{Service: "web", Replicas: 3}, 3*time.Minute)
	})

	t.Run("leader killed mid-sync", func(t *testing.T) {
		g := g.For(t)
		old, err := g.Leader(g.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		// 150 Host documents (of hosts that do not exist: no Docker
		// objects) make a sync of three transactions, paused between.
		files := maps.Clone(g.br.files)
		for i := range 150 {
			name := fmt.Sprintf("ghost-%03d", i)
			files["cluster/hosts/"+name+".yaml"] = fmt.Sprintf("apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: %s}\nspec: {trunk: eth9}\n", name)
		}
		big := g.git.Commit(t, files, "150 hosts")
		g.hook(old, "github", g.pushPayload())
		g.WaitFor("the sync in flight", 20*time.Second, func(ctx context.Context) error {
			p, _, err := g.Consul(g.H1).KV().Get(bed.KVPrefix+"spec/.sync", (&api.QueryOptions{}).WithContext(ctx))
			if err != nil || p == nil {
				return fmt.Errorf("no in-flight marker: %v", err)
			}
			return nil
		})
		killed := time.Now()
		g.Proc(old).Kill()
		half := len(g.kv(t))
		t.Logf("killed the leader on %s mid-sync: %d documents in KV (the commit has %d)", old.Name, half, 152)
		if half == 152 {
			t.Fatal("the sync was not cut")
		}
		var next *lab.Host
		g.WaitFor("another manager finishes the sync", 2*time.Minute, func(ctx context.Context) error {
			st := g.status(t)
			if st.Commit == nil || st.Commit.Hash != big {
				return fmt.Errorf("commit in force %.12s", st.Commit.Hash)
			}
			p, _, err := g.Consul(g.H1).KV().Get(bed.KVPrefix+"spec/.sync", (&api.QueryOptions{}).WithContext(ctx))
			if err != nil || p != nil {
				return fmt.Errorf("marker still there (%v)", err)
			}
			next, err = g.Leader(ctx)
			return err
		})
		bed.Figure(t, "leader SIGKILLed mid-sync to the sync finished by the next", time.Since(killed))
		if st := g.status(t); st.LastResult != gitsync.ResultResumed {
			t.Errorf("last result %s, want %s", st.LastResult, gitsync.ResultResumed)
		}
		kv := g.kv(t)
		var want []string
		for p := range files {
			if strings.HasSuffix(p, ".yaml") {
				want = append(want, p)
			}
		}
		if len(kv) != len(want) {
			t.Fatalf("KV holds %d documents, the commit %d", len(kv), len(want))
		}
		for i := range 150 {
			if _, ok := kv[fmt.Sprintf("hosts/ghost-%03d", i)]; !ok {
				t.Fatalf("hosts/ghost-%03d missing", i)
			}
		}
		held := false
		for _, h := range g.Cluster.Hosts() {
			if h != old && len(bed.LogLines(g.Proc(h).Logs(), "sync in flight; holding spec changes back")) > 0 {
				held = true
			}
		}
		if !held {
			t.Error("no reconciler held spec changes back during the sync")
		}
		t.Logf("%s finished the sync %s left", next.Name, old.Name)
		g.br.files, g.br.head = files, big
		g.StartReconcilerWith(old, "--listen", "0.0.0.0:"+listenPort,
			"--git-url", g.git.URL, "--git-path", "cluster", "--git-interval", "1h",
			"--git-webhook-secret-file", secretFile, "--git-txn-pause", txnPause.String())
		if _, err := g.Converged(g.Ctx, bed.Want{Service: "web", Replicas: 3}); err != nil {
			t.Fatal(err)
		}
	})
}

func (g *gitops) For(t *testing.T) *gitops {
	c := *g
	c.Bed = g.Bed.For(t)
	return &c
}

// inForce holds once the sync record names hash as the commit in force.
func (g *gitops) inForce(hash string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var st gitsync.Status
		if err := g.readStatus(ctx, &st); err != nil {
			return err
		}
		if st.Commit == nil || st.Commit.Hash != hash {
			return fmt.Errorf("commit in force: %+v (last %s %s)", st.Commit, st.LastResult, st.LastError)
		}
		return nil
	}
}

// sync posts a webhook and waits for the head to be in force.
func (g *gitops) sync(t *testing.T) {
	t.Helper()
	if code, body := g.hook(g.Cluster.Managers()[0], "github", g.pushPayload()); code != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", code, body)
	}
	g.WaitFor("commit "+g.br.head[:12]+" in force", time.Minute, g.inForce(g.br.head))
}

// waitKV watches the sync record with blocking queries until it names
// hash, and returns when it saw it.
func (g *gitops) waitKV(hash string, timeout time.Duration) time.Time {
	begin := time.Now()
	kv := g.Consul(g.H1).KV()
	var index uint64
	for time.Since(begin) < timeout {
		p, meta, err := kv.Get(bed.KVPrefix+"status/sync", (&api.QueryOptions{WaitIndex: index, WaitTime: timeout}).WithContext(g.Ctx))
		if err == nil {
			index = meta.LastIndex
			var st gitsync.Status
			if p != nil && json.Unmarshal(p.Value, &st) == nil && st.Commit != nil && st.Commit.Hash == hash {
				return time.Now()
			}
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return time.Now()
}

func (g *gitops) readStatus(ctx context.Context, st *gitsync.Status) error {
	p, _, err := g.Consul(g.H1).KV().Get(bed.KVPrefix+"status/sync", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	if p == nil {
		return errors.New("no sync record yet")
	}
	return json.Unmarshal(p.Value, st)
}

func (g *gitops) status(t *testing.T) gitsync.Status {
	t.Helper()
	var st gitsync.Status
	if err := g.readStatus(g.Ctx, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// kv is the spec tree's documents: key under spec/ → value.
func (g *gitops) kv(t *testing.T) map[string]string {
	t.Helper()
	pairs, _, err := g.Consul(g.H1).KV().List(bed.KVPrefix+"spec/", (&api.QueryOptions{}).WithContext(g.Ctx))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pairs {
		k := strings.TrimPrefix(p.Key, bed.KVPrefix+"spec/")
		if !strings.HasPrefix(k, ".") {
			out[k] = string(p.Value)
		}
	}
	return out
}

func (g *gitops) pushPayload() []byte {
	return []byte(`{"ref":"refs/heads/main","after":"` + g.br.head + `","repository":{"full_name":"ops/cluster"}}`)
}

func sign(body []byte, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

func (g *gitops) request(h *lab.Host, body []byte) *http.Request {
	r, err := http.NewRequestWithContext(g.Ctx, "POST", "http://"+h.Addr+":"+listenPort+"/v1/git/webhook", bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	r.Header.Set("Content-Type", "application/json")
	return r
}

// hook posts a push notification as provider would, to h's manager.
func (g *gitops) hook(h *lab.Host, provider string, body []byte) (int, string) {
	r := g.request(h, body)
	switch provider {
	case "github":
		r.Header.Set("X-GitHub-Event", "push")
		r.Header.Set("X-Hub-Signature-256", "sha256="+sign(body, hookSecret))
	case "gitea":
		r.Header.Set("X-Gitea-Event", "push")
		r.Header.Set("X-Gitea-Signature", sign(body, hookSecret))
	case "gitlab":
		r.Header.Set("X-Gitlab-Event", "Push Hook")
		r.Header.Set("X-Gitlab-Token", hookSecret)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
