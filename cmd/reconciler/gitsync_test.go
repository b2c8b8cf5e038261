package main

import (
	"bytes"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/gitsync"
	"swarmvlan/state"
)

func gitDaemon(t *testing.T, role string) (*daemon, *bytes.Buffer) {
	t.Helper()
	store, err := state.New(state.Config{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d := &daemon{role: role, store: store, log: slog.New(slog.NewTextHandler(&logs, nil))}
	d.http = &httpAPI{metrics: newMetrics(store, d.leading.Load)}
	if role != "host" {
		d.cluster = &cluster.Cluster{}
	}
	return d, &logs
}

func TestInitGitFlags(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("hook-secret-value\n"), 0o600)
	cases := []struct {
		name    string
		role    string
		args    []string
		wantErr string
	}{
		{"off", "manager", nil, ""},
		{"branch without url", "manager", []string{"--git-branch", "main"}, "--git-branch: needs --git-url"},
		{"host role", "host", []string{"--git-url", "https://git.example/ops/docs"}, "only managers sync"},
		{"bad drift", "manager", []string{"--git-url", "https://git.example/ops/docs", "--git-drift", "ignore"}, "--git-drift"},
		{"ssh without known hosts", "manager", []string{"--git-url", "git@git.example:ops/docs.git", "--git-ssh-key", secret}, "--git-known-hosts"},
		{"ssh without key", "manager", []string{"--git-url", "ssh://git@git.example/ops/docs.git"}, "--git-ssh-key"},
		{"bad scheme", "manager", []string{"--git-url", "ftp://git.example/docs"}, "scheme"},
		{"missing secret file", "manager", []string{"--git-url", "https://git.example/ops/docs", "--git-webhook-secret-file", filepath.Join(dir, "nope")}, "--git-webhook-secret-file"},
		{"full", "manager", []string{"--git-url", "https://sync:pa55word@git.example/ops/docs", "--git-path", "cluster/", "--git-webhook-secret-file", secret}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			f := registerGitFlags(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			d, logs := gitDaemon(t, c.role)
			err := d.initGit(f, "m1")
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err %v, want %q", err, c.wantErr)
			}
			for _, secret := range []string{"pa55word", "hook-secret-value"} {
				if strings.Contains(logs.String(), secret) || err != nil && strings.Contains(err.Error(), secret) {
					t.Fatalf("a secret shows: %s %v", logs.String(), err)
				}
			}
			if c.name == "full" && (d.git == nil || d.git.webhook == nil || !strings.Contains(logs.String(), "repo=https://git.example/ops/docs")) {
				t.Fatalf("full: %+v\n%s", d.git, logs.String())
			}
		})
	}
}

func TestSyncLine(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	st := gitsync.Status{
		Repo: "https://git.example/ops/docs", Branch: "main", Path: "cluster",
		Commit:      &gitsync.Commit{Hash: "3f2a91c0d4e1aaaabbbbccccddddeeeeffff0000", Author: "Ann <ann@example>", Time: now.Add(-time.Hour), Message: "web to 4\n\nbody"},
		LastAttempt: now.Add(-12 * time.Second), LastResult: gitsync.ResultInvalid, LastCommit: "9b1c27e0aa31ffffeeeeddddccccbbbbaaaa9999",
		LastError: "commit 9b1c27e0aa31: 1 problem(s); nothing applied",
		Problems:  []gitsync.Problem{{File: "cluster/api.yaml", Problem: "spec.image: required"}},
		DriftMode: "revert", DriftCorrections: 2,
	}
	want := `sync: https://git.example/ops/docs main /cluster: commit 3f2a91c0d4e1 in force (Ann <ann@example>, 2026-12-02T03:00:00Z, "web to 4"); last attempt 12s ago: invalid (commit 9b1c27e0aa31); drift revert, 2 corrected
  error: commit 9b1c27e0aa31: 1 problem(s); nothing applied
  cluster/api.yaml: spec.image: required
`
	if got := syncLine(st, now); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	st = gitsync.Status{Repo: "r", DriftMode: "report", Drift: []string{"services/web"}}
	if got := syncLine(st, now); got != "sync: r: no commit in force yet; drift report, 0 corrected, differing now: services/web\n" {
		t.Fatalf("got %q", got)
	}
}
