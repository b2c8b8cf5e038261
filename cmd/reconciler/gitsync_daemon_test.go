package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile/gitsync"
)

const daemonHookSecret = "daemon-hook-secret-77"

func hmacHex(body []byte, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// TestGitSyncDaemons runs two managers (`reconciler run --role manager
// --git-url`, no Docker Engine: this is about the sync) against a real
// Consul agent and a real git server: webhooks through the leader and
// through the follower, refused webhooks, the status line and metrics, and
// the leader SIGKILLed between the transactions of a sync.
func TestGitSyncDaemons(t *testing.T) {
	agent := lab.StartConsul(t)
	kv := agent.Client(t).KV()
	g := lab.StartGitServer(t, lab.GitServerOptions{})
	files := map[string]string{"cluster/vlan.yaml": vlanDoc, "cluster/apps/web.yaml": scaledServiceDoc("web", 2, 1, 10)}
	head := g.Commit(t, files, "vlan and web")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(daemonHookSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--git-url", g.URL, "--git-path", "cluster", "--git-interval", "1h",
		"--git-webhook-secret-file", secret, "--git-txn-pause", "1s"}

	record := func() gitsync.Status {
		var st gitsync.Status
		if p, _, err := kv.Get("swarmvlan/status/sync", nil); err == nil && p != nil {
			json.Unmarshal(p.Value, &st)
		}
		return st
	}
	inForce := func(hash string) func() bool {
		return func() bool { st := record(); return st.Commit != nil && st.Commit.Hash == hash }
	}
	a, aAddr := startRunHTTP(t, agent.Addr, "a", flags...)
	waitFor(t, 20*time.Second, "a to lead", a.leading)
	waitFor(t, 20*time.Second, "the first commit in force", inForce(head))
	b, bAddr := startRunHTTP(t, agent.Addr, "b", flags...)
	waitFor(t, 20*time.Second, "b to serve", func() bool { return strings.Contains(b.Logs(), "git sync configured") })

	hook := func(addr string, body []byte, headers map[string]string) (int, string) {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/git/webhook", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(msg)
	}
	github := func(body []byte) map[string]string {
		return map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex(body, daemonHookSecret)}
	}
	payload := func(ref, hash string) []byte { return []byte(`{"ref":"` + ref + `","after":"` + hash + `"}`) }

	// A push, announced to the leader and then to the follower: the time
	// from the end of the push to the record naming the commit, seen with
	// a blocking query.
	for i, via := range []struct{ name, addr string }{{"the leader", aAddr}, {"a follower", bAddr}} {
		files["cluster/apps/web.yaml"] = scaledServiceDoc("web", 3+i, 1, 10)
		head = g.Commit(t, files, fmt.Sprintf("web to %d", 3+i))
		pushed := time.Now()
		if code, msg := hook(via.addr, payload("refs/heads/main", head), github(payload("refs/heads/main", head))); code != http.StatusAccepted {
			t.Fatalf("webhook to %s: %d %s", via.name, code, msg)
		}
		var index uint64
		for !inForce(head)() {
			_, meta, err := kv.Get("swarmvlan/status/sync", &api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			index = meta.LastIndex
			if time.Since(pushed) > 10*time.Second {
				t.Fatalf("commit not in force 10s after the push via %s", via.name)
			}
		}
		took := time.Since(pushed)
		figure(t, "git push to the commit in KV, webhook through "+via.name+" (daemons)", took)
		if took > time.Second {
			t.Errorf("via %s: %s from push to KV, want within 1s", via.name, took)
		}
		p, _, _ := kv.Get("swarmvlan/spec/services/web", nil)
		if p == nil || !strings.Contains(string(p.Value), fmt.Sprintf("replicas: %d", 3+i)) {
			t.Fatalf("spec/services/web after the sync: %v", p)
		}
	}

	// Refused: nothing is triggered, nothing synced.
	before := record()
	trig, _, _ := kv.Get("swarmvlan/state/sync/trigger", nil)
	body := payload("refs/heads/main", head)
	huge := append(bytes.Repeat([]byte(" "), 10<<20), body...)
	bad := []byte(`{"ref": "refs/heads/main", `)
	for _, c := range []struct {
		name    string
		body    []byte
		headers map[string]string
		want    int
	}{
		{"bad signature", body, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex(body, "guess")}, 401},
		{"no signature", body, map[string]string{"X-GitHub-Event": "push"}, 401},
		{"gitlab wrong token", body, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "guess"}, 401},
		{"10 MB", huge, github(huge), 413},
		{"malformed JSON", bad, map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": hmacHex(bad, daemonHookSecret)}, 400},
		{"another branch", payload("refs/heads/dev", head), github(payload("refs/heads/dev", head)), 200},
	} {
		for _, addr := range []string{aAddr, bAddr} {
			if code, msg := hook(addr, c.body, c.headers); code != c.want || strings.Contains(msg, daemonHookSecret) {
				t.Errorf("%s to %s: %d %q, want %d", c.name, addr, code, msg, c.want)
			}
		}
	}
	time.Sleep(2 * time.Second)
	if after := record(); !after.LastAttempt.Equal(before.LastAttempt) {
		t.Errorf("refused webhooks made a sync: last attempt %s, was %s", after.LastAttempt, before.LastAttempt)
	}
	if now, _, _ := kv.Get("swarmvlan/state/sync/trigger", nil); now != nil && (trig == nil || now.ModifyIndex != trig.ModifyIndex) {
		t.Errorf("refused webhooks wrote the trigger key")
	}
	for _, p := range []*proc{a, b} {
		if logs := p.Logs(); !strings.Contains(logs, "git webhook refused") || strings.Contains(logs, daemonHookSecret) {
			t.Errorf("%s: refusal not logged, or the secret is", p.name)
		}
	}

	// The status line and the leader's metrics.
	if code, out, errOut := run(t, agent.Addr, "", "status"); code != 0 || !strings.Contains(out, "sync: "+g.URL+" main /cluster: commit "+head[:12]+" in force (Test Author <author@example.test>") {
		t.Fatalf("status: %d\n%s%s", code, out, errOut)
	}
	fams := scrape(t, "http://"+aAddr+"/metrics")
	for _, name := range []string{"swarmvlan_git_last_sync_timestamp_seconds", "swarmvlan_git_commit_age_seconds", "swarmvlan_git_sync_failures_total", "swarmvlan_git_drift_corrections"} {
		if fams[name] == nil {
			t.Errorf("leader's /metrics has no %s", name)
		}
	}
	if m := sample(scrape(t, "http://"+bAddr+"/metrics"), "swarmvlan_git_webhook_requests_total", "result", "unauthorized"); m == nil || m.GetCounter().GetValue() != 3 {
		t.Errorf("follower's unauthorized webhook count: %v", m)
	}

	// The leader SIGKILLed between the transactions of a sync of 150 more
	// documents (three transactions, a second apart): the follower takes
	// over and finishes that commit; KV then holds it exactly.
	for i := range 150 {
		files[fmt.Sprintf("cluster/hosts/h%03d.yaml", i)] = fmt.Sprintf("apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: h%03d}\nspec: {trunk: eth9}\n", i)
	}
	big := g.Commit(t, files, "150 hosts")
	hook(aAddr, payload("refs/heads/main", big), github(payload("refs/heads/main", big)))
	waitFor(t, 10*time.Second, "the sync in flight", func() bool {
		p, _, _ := kv.Get("swarmvlan/spec/.sync", nil)
		return p != nil
	})
	a.cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	keys, _, _ := kv.Keys("swarmvlan/spec/", "", nil)
	t.Logf("leader killed mid-sync with %d keys under spec/ (the commit has 152 documents)", len(keys))
	if len(keys) >= 152 {
		t.Fatal("the sync was not cut")
	}
	waitFor(t, 60*time.Second, "b to finish the sync", func() bool {
		p, _, _ := kv.Get("swarmvlan/spec/.sync", nil)
		return p == nil && inForce(big)()
	})
	figure(t, "leader SIGKILLed mid-sync to the sync finished by the next (daemons)", time.Since(killed))
	if st := record(); st.LastResult != gitsync.ResultResumed {
		t.Errorf("last result %q, want %q", st.LastResult, gitsync.ResultResumed)
	}
	keys, _, _ = kv.Keys("swarmvlan/spec/", "", nil)
	if len(keys) != 152 {
		t.Fatalf("%d keys under spec/ after the roll-forward, want the commit's 152", len(keys))
	}
	if !strings.Contains(b.Logs(), "sync in flight; holding spec changes back") || !strings.Contains(b.Logs(), "sync finished; spec changes in force") {
		t.Errorf("b's spec watch did not hold back during the sync")
	}
}
