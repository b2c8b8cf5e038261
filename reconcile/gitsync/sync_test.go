package gitsync

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/state"
)

// base is a repository whose documents live under cluster/, in
// subdirectories, beside files that are not documents and a hidden
// directory whose YAML must not be read.
func base(replicas int) map[string]string {
	return map[string]string{
		"README.md":                  "# docs\n",
		"cluster/net/vlan40.yaml":    vlanDoc("vlan40"),
		"cluster/apps/web/web.yml":   serviceDoc("web", replicas),
		"cluster/apps/api.json":      `{"apiVersion":"swarmvlan/v1","kind":"Service","metadata":{"name":"api"},"spec":{"image":"swarmvlan-testapp:dev","networks":["vlan40"],"replicas":1}}`,
		"cluster/.github/ci.yaml":    "not: [a document",
		"cluster/apps/.draft.yaml":   "kind: nonsense",
		"cluster/notes.txt":          "kind: Service",
		"elsewhere/other.yaml":       serviceDoc("other", 1),
		"cluster/apps/web/README.md": "web",
	}
}

func TestSyncCommitPutsTheTreeInKV(t *testing.T) {
	w := newWorld(t, lab.GitServerOptions{})
	hash := w.git.Commit(t, base(2), "first commit\n\nwith a body")
	s := w.syncer("cluster", nil)
	st := s.SyncOnce(w.ctx, w.lead)
	if st.LastResult != ResultSynced || st.Commit == nil || st.Commit.Hash != hash {
		t.Fatalf("status after the first sync: %+v", st)
	}
	if got := slices.Sorted(maps.Keys(w.kv())); !slices.Equal(got, []string{"vlans/vlan40", "services/api", "services/web"}) &&
		!slices.Equal(got, []string{"services/api", "services/web", "vlans/vlan40"}) {
		t.Fatalf("spec tree: %v", got)
	}
	rec := w.status()
	if rec.Commit.Hash != hash || rec.Commit.Author != "Test Author <author@example.test>" || !strings.HasPrefix(rec.Commit.Message, "first commit") ||
		rec.Commit.Time.IsZero() || rec.Branch != "main" || rec.Path != "cluster" || len(rec.Documents) != 3 {
		t.Fatalf("record: %+v", rec)
	}

	// Nothing new: unchanged, nothing written but the record.
	if st := s.SyncOnce(w.ctx, w.lead); st.LastResult != ResultUnchanged {
		t.Fatalf("second sync: %s %s", st.LastResult, st.LastError)
	}

	// A change and a deletion in the next commit.
	files := base(5)
	delete(files, "cluster/apps/api.json")
	next := w.git.Commit(t, files, "scale web, drop api")
	st = s.SyncOnce(w.ctx, w.lead)
	kv := w.kv()
	if st.Commit.Hash != next || len(kv) != 2 || !strings.Contains(kv["services/web"], "replicas: 5") {
		t.Fatalf("after the second commit: %s %v", st.LastResult, kv)
	}
}

func TestInvalidDocumentAppliesNothing(t *testing.T) {
	w := newWorld(t, lab.GitServerOptions{})
	good := w.git.Commit(t, base(2), "good")
	s := w.syncer("cluster", nil)
	s.SyncOnce(w.ctx, w.lead)
	before := w.kv()

	files := base(7)                                                                                                        // a valid change ...
	files["cluster/apps/new.yaml"] = serviceDoc("new", 1)                                                                   // ... a valid new one ...
	files["cluster/apps/broken.yaml"] = strings.Replace(serviceDoc("broken", 1), "  image: swarmvlan-testapp:dev\n", "", 1) // ... and one without an image
	files["cluster/apps/worse.yaml"] = strings.Replace(serviceDoc("worse", 1), "replicas: 1", "replicas: many", 1)
	bad := w.git.Commit(t, files, "one bad apple")
	st := s.SyncOnce(w.ctx, w.lead)
	if st.LastResult != ResultInvalid || st.LastCommit != bad || st.Commit.Hash != good {
		t.Fatalf("status: %+v", st)
	}
	if after := w.kv(); !maps.Equal(before, after) {
		t.Fatalf("KV changed by an invalid commit:\nbefore %v\nafter  %v", before, after)
	}
	rec := w.status()
	var sawImage, sawReplicas bool
	for _, p := range rec.Problems {
		t.Logf("problem: %s", p)
		sawImage = sawImage || p.File == "cluster/apps/broken.yaml" && strings.Contains(p.Problem, "spec.image")
		sawReplicas = sawReplicas || p.File == "cluster/apps/worse.yaml" && strings.Contains(p.Problem, "replicas")
	}
	if !sawImage || !sawReplicas {
		t.Fatalf("problems do not name both files and fields: %+v", rec.Problems)
	}
	if !strings.Contains(rec.LastError, bad[:12]) {
		t.Fatalf("last error does not name the commit: %q", rec.LastError)
	}

	// Fixed in the next commit: in force, problems gone.
	delete(files, "cluster/apps/broken.yaml")
	delete(files, "cluster/apps/worse.yaml")
	fixed := w.git.Commit(t, files, "fixed")
	if st := s.SyncOnce(w.ctx, w.lead); st.LastResult != ResultSynced || st.Commit.Hash != fixed || len(st.Problems) > 0 || len(w.kv()) != 4 {
		t.Fatalf("after the fix: %+v %v", st, w.kv())
	}
}

func TestDeleteEverythingIsRefused(t *testing.T) {
	w := newWorld(t, lab.GitServerOptions{})
	w.git.Commit(t, base(2), "docs")
	s := w.syncer("cluster", nil)
	s.SyncOnce(w.ctx, w.lead)
	before := w.kv()

	w.git.Commit(t, map[string]string{"README.md": "moved everything away"}, "oops")
	st := s.SyncOnce(w.ctx, w.lead)
	if st.LastResult != ResultRefused || !strings.Contains(st.LastError, AllowEmptyMarker) {
		t.Fatalf("status: %+v", st)
	}
	if !maps.Equal(before, w.kv()) {
		t.Fatalf("KV changed: %v", w.kv())
	}

	emptied := w.git.Commit(t, map[string]string{"cluster/" + AllowEmptyMarker: ""}, "empty it, on purpose")
	if st := s.SyncOnce(w.ctx, w.lead); st.LastResult != ResultSynced || st.Commit.Hash != emptied || len(w.kv()) != 0 {
		t.Fatalf("with the marker: %+v %v", st, w.kv())
	}
}

func TestDriftRevertedAndCounted(t *testing.T) {
	w := newWorld(t, lab.GitServerOptions{})
	w.git.Commit(t, base(2), "docs")
	s := w.syncer("cluster", nil)
	s.SyncOnce(w.ctx, w.lead)
	want := w.kv()

	w.put("services/web", serviceDoc("web", 9))                            // edited by hand
	w.put("services/handmade", serviceDoc("handmade", 1))                  // added by hand
	if _, err := w.store.DeleteSpec(w.ctx, "Service", "api"); err != nil { // deleted by hand
		t.Fatal(err)
	}
	st := s.SyncOnce(w.ctx, w.lead)
	if !maps.Equal(want, w.kv()) {
		t.Fatalf("drift not reverted: %v", w.kv())
	}
	if st.DriftCorrections != 3 || !slices.Equal(st.Drift, []string{"services/api", "services/handmade", "services/web"}) {
		t.Fatalf("drift: %d %v", st.DriftCorrections, st.Drift)
	}
	if st := s.SyncOnce(w.ctx, w.lead); st.DriftCorrections != 3 || len(st.Drift) != 0 || st.LastResult != ResultUnchanged {
		t.Fatalf("after the revert: %+v", st)
	}
	// Reformatting a document is no drift.
	w.put("services/web", strings.ReplaceAll(want["services/web"], "metadata: {name: web}", "metadata:\n  name: web"))
	if st := s.SyncOnce(w.ctx, w.lead); st.DriftCorrections != 3 {
		t.Fatalf("a reformatted document counted as drift: %+v", st)
	}

	// A new leader carries the count on.
	s2 := w.syncer("cluster", nil)
	if err := s2.resume(w.ctx); err != nil {
		t.Fatal(err)
	}
	w.put("services/web", serviceDoc("web", 8))
	if st := s2.SyncOnce(w.ctx, w.lead); st.DriftCorrections != 4 {
		t.Fatalf("count after resume: %d", st.DriftCorrections)
	}
}

func TestDriftReportKeepsTheEdit(t *testing.T) {
	w := newWorld(t, lab.GitServerOptions{})
	w.git.Commit(t, base(2), "docs")
	s := w.syncer("cluster", func(c *Config) { c.Drift = DriftReport })
	s.SyncOnce(w.ctx, w.lead)
	edited := serviceDoc("web", 9)
	w.put("services/web", edited)
	st := s.SyncOnce(w.ctx, w.lead)
	if w.kv()["services/web"] != edited || st.DriftCorrections != 0 || !slices.Equal(st.Drift, []string{"services/web"}) {
		t.Fatalf("report mode: %+v %q", st, w.kv()["services/web"])
	}
	// The rest of a new commit still goes in.
	files := base(2)
	files["cluster/apps/more.yaml"] = serviceDoc("more", 1)
	w.git.Commit(t, files, "more")
	st = s.SyncOnce(w.ctx, w.lead)
	if _, ok := w.kv()["services/more"]; !ok || w.kv()["services/web"] != edited || !slices.Equal(st.Drift, []string{"services/web"}) {
		t.Fatalf("report mode, next commit: %+v %v", st, w.kv())
	}
}

func TestForcePushIsACommitLikeAnyOther(t *testing.T) {
	w := newWorld(t, lab.GitServerOptions{})
	w.git.Commit(t, base(2), "docs")
	files := base(2)
	files["cluster/apps/x.yaml"] = serviceDoc("x", 1)
	w.git.Commit(t, files, "add x")
	s := w.syncer("cluster", nil)
	s.SyncOnce(w.ctx, w.lead)
	if _, ok := w.kv()["services/x"]; !ok {
		t.Fatal("x not synced")
	}
	files = base(2)
	files["cluster/apps/y.yaml"] = serviceDoc("y", 1)
	rewritten := w.git.ForcePush(t, files, "add y instead")
	st := s.SyncOnce(w.ctx, w.lead)
	kv := w.kv()
	if _, x := kv["services/x"]; x || kv["services/y"] == "" || st.Commit.Hash != rewritten || st.DriftCorrections != 0 {
		t.Fatalf("after the force-push: %+v %v", st, slices.Sorted(maps.Keys(kv)))
	}
}

func TestUnreachableRepositoryDeletesNothing(t *testing.T) {
	w := newWorld(t, lab.GitServerOptions{})
	hash := w.git.Commit(t, base(2), "docs")
	s := w.syncer("cluster", nil)
	s.SyncOnce(w.ctx, w.lead)
	before := w.kv()
	w.git.SetDown(true)
	for range 3 {
		st := s.SyncOnce(w.ctx, w.lead)
		if st.LastResult != ResultUnreachable || !strings.Contains(st.LastError, "503") || st.Commit.Hash != hash || st.Branch != "main" {
			t.Fatalf("while down: %+v", st)
		}
	}
	if !maps.Equal(before, w.kv()) || s.Failures() != 3 {
		t.Fatalf("KV changed while the repository was away, or failures %d", s.Failures())
	}
	rec := w.status()
	t.Logf("status while down: %s: %s", rec.LastResult, rec.LastError)
	w.git.SetDown(false)
	next := w.git.Commit(t, base(4), "while it was away")
	if st := s.SyncOnce(w.ctx, w.lead); st.LastResult != ResultSynced || st.Commit.Hash != next || st.LastError != "" {
		t.Fatalf("after the repository came back: %+v", st)
	}
}

func TestCutSyncIsRolledForwardByTheNextLeader(t *testing.T) {
	w := newWorld(t, lab.GitServerOptions{})
	old := map[string]string{"cluster/vlan40.yaml": vlanDoc("vlan40")}
	for i := range 100 {
		old[fmt.Sprintf("cluster/apps/old-%03d.yaml", i)] = serviceDoc(fmt.Sprintf("old-%03d", i), 1)
	}
	w.git.Commit(t, old, "old")
	s := w.syncer("cluster", nil)
	if st := s.SyncOnce(w.ctx, w.lead); st.LastResult != ResultSynced || st.Transactions < 2 {
		t.Fatalf("first sync: %+v", st)
	}

	// The next commit replaces every service: 150 writes and 100
	// deletions, five transactions; the leader dies after the second.
	next := map[string]string{"cluster/vlan40.yaml": vlanDoc("vlan40")}
	for i := range 150 {
		next[fmt.Sprintf("cluster/apps/new-%03d.yaml", i)] = serviceDoc(fmt.Sprintf("new-%03d", i), 2)
	}
	hash := w.git.Commit(t, next, "new")

	view := reconcile.NewView(w.store.SpecPrefix())
	go reconcile.WatchSpec(w.ctx, w.store, view, state.WatchOptions{}, func([]reconcile.Key) {}, w.log)
	waitFor(t, "view of the old commit", func() bool { return len(view.List("Service")) == 100 })

	dead := errors.New("leader killed")
	cut := w.syncer("cluster", func(c *Config) {
		c.Commit.BetweenTxns = func(done, total int) error {
			if done == 2 {
				return dead
			}
			return nil
		}
	})
	if err := cut.resume(w.ctx); err != nil {
		t.Fatal(err)
	}
	st := cut.SyncOnce(w.ctx, w.lead)
	if st.LastResult != ResultError || !strings.Contains(st.LastError, "cut") {
		t.Fatalf("cut sync: %+v", st)
	}
	marker := w.markerPresent()
	kv := w.kv()
	t.Logf("after the cut: %d documents in KV, marker %v", len(kv), marker)
	if !marker || len(kv) == 101 || len(kv) == 151 {
		t.Fatalf("the cut did not leave a half-applied sync: marker %v, %d documents", marker, len(kv))
	}
	// The view holds the old commit while the marker is there.
	time.Sleep(300 * time.Millisecond)
	if n := len(view.List("Service")); n != 100 {
		t.Fatalf("view moved during the sync: %d services", n)
	}

	// Another leader (new process: new store, new clone) finishes it.
	w.lead.Resign()
	store2, err := state.New(state.Config{Address: w.addr})
	if err != nil {
		t.Fatal(err)
	}
	w2 := *w
	w2.store = store2
	lead2 := w2.campaign(store2)
	s2 := w2.syncer("cluster", nil)
	if err := s2.resume(w.ctx); err != nil {
		t.Fatal(err)
	}
	st = s2.SyncOnce(w.ctx, lead2)
	if st.LastResult != ResultResumed || st.Commit.Hash != hash || w.markerPresent() {
		t.Fatalf("roll forward: %+v marker %v", st, w.markerPresent())
	}
	kv = w.kv()
	for k := range kv {
		if strings.HasPrefix(k, "services/old-") {
			t.Fatalf("%s of the old commit left", k)
		}
	}
	if len(kv) != 151 {
		t.Fatalf("%d documents, want the new commit's 151", len(kv))
	}
	waitFor(t, "view of the new commit", func() bool { return len(view.List("Service")) == 150 })
	if svc := view.List("Service"); svc[0].Key.Name != "new-000" {
		t.Fatalf("view: %v", svc[0].Key)
	}
}

func (w *world) markerPresent() bool {
	w.t.Helper()
	pairs, err := w.store.SpecPairs(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return w.store.SyncMarkerIn(pairs) != nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
