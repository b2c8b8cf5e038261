package gitsync

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"swarmvlan/lab"
	"swarmvlan/state"
)

// world is one test's real Consul agent, real git server and a leader.
type world struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	addr  string
	git   *lab.GitServer
	lead  *state.Leadership
	log   *slog.Logger
}

func newWorld(t *testing.T, gopts lab.GitServerOptions) *world {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Consul agent and git (not -short)")
	}
	if os.Getenv(lab.ConsulEnv) == "" {
		if _, err := lab.ConsulBinary(); err != nil {
			t.Fatalf("no consul binary: %v", err)
		}
	}
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	w := &world{t: t, ctx: ctx, store: store, addr: agent.Addr, git: lab.StartGitServer(t, gopts), log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	w.lead = w.campaign(store)
	return w
}

func (w *world) campaign(store *state.Store) *state.Leadership {
	w.t.Helper()
	lead, err := store.Campaign(w.ctx, state.LeaderOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(lead.Resign)
	return lead
}

// syncer is a syncer of the world's repository at path.
func (w *world) syncer(path string, mod func(*Config)) *Syncer {
	w.t.Helper()
	src, err := NewSource(w.git.URL, "", path, Credentials{})
	if err != nil {
		w.t.Fatal(err)
	}
	repo, err := Open(src)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg := Config{Store: w.store, Repo: repo, Interval: time.Hour, Log: w.log, Holder: "test"}
	if mod != nil {
		mod(&cfg)
	}
	return New(cfg)
}

// kv is the spec tree: key under spec/ → value, documents only.
func (w *world) kv() map[string]string {
	w.t.Helper()
	docs, err := w.store.SpecDocs(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range docs {
		out[d.Key[len(w.store.SpecPrefix()):]] = string(d.Value)
	}
	return out
}

func (w *world) put(key, value string) {
	w.t.Helper()
	if _, err := w.store.Apply(w.ctx, []state.SpecDoc{{Key: w.store.SpecPrefix() + key, Value: []byte(value)}}, state.ApplyOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) status() Status {
	w.t.Helper()
	var st Status
	found, err := w.store.ReadSyncStatus(w.ctx, &st)
	if err != nil || !found {
		w.t.Fatalf("sync status: found %v, %v", found, err)
	}
	return st
}

type testWriter struct{ t *testing.T }

func (tw testWriter) Write(p []byte) (int, error) {
	tw.t.Log(string(p))
	return len(p), nil
}

func vlanDoc(name string) string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: %s}
spec:
  id: 40
  trunk: eth1
  subnet: 172.80.0.0/16
  gateway: 172.80.0.1
  rangePlan: {chunkPrefix: 24, exclude: [172.80.0.0/24]}
`, name)
}

func serviceDoc(name string, replicas int) string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata: {name: %s}
spec:
  image: swarmvlan-testapp:dev
  networks: [vlan40]
  replicas: %d
`, name, replicas)
}
