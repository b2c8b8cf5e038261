package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
)

// TestSnapshotRestore restores a Consul snapshot taken before a service was
// deleted and another created: the reconcilers' watches see the index go
// backwards, and Docker must follow the restored documents (the deleted
// service comes back, the new one goes away) while web keeps running.
func TestSnapshotRestore(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Seed()
	old := bed.Want{Service: "old", Replicas: 1}
	b.Apply(bed.ServiceDoc(bed.ServiceOpts{Name: "old", Replicas: 1}))
	b.WaitConverged(old, 3*time.Minute)

	snap, _, err := b.Consul(b.H1).Snapshot().Save((&api.QueryOptions{}).WithContext(b.Ctx))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(snap)
	snap.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot: %d bytes", len(data))

	b.ReconcilerCmd("delete", "service", "old")
	niu := bed.Want{Service: "new", Replicas: 1}
	b.Apply(bed.ServiceDoc(bed.ServiceOpts{Name: "new", Replicas: 1}))
	b.WaitFor("old removed, new running", 3*time.Minute, func(ctx context.Context) error {
		if err := b.ServiceAbsent(ctx, "old"); err != nil {
			return err
		}
		_, err := b.Converged(ctx, niu)
		return err
	})

	if err := b.Consul(b.H1).Snapshot().Restore((&api.WriteOptions{}).WithContext(b.Ctx), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	b.WaitFor("Docker follows the restored documents", 3*time.Minute, func(ctx context.Context) error {
		if err := b.ServiceAbsent(ctx, "new"); err != nil {
			return err
		}
		if _, err := b.Converged(ctx, old); err != nil {
			return err
		}
		_, err := b.Converged(ctx, bed.WebWant(6))
		return err
	})
	t.Logf("restored state in force %s after the restore", time.Since(begin).Round(10*time.Millisecond))
	for _, h := range b.Cluster.Hosts() {
		if p := b.Proc(h); !p.Running() {
			t.Errorf("reconciler on %s exited: %v", h.Name, p.Err())
		}
	}
}

// invalidDocs are the kinds of broken Service document the burst cycles
// through, each wrong in one way, with a word its error must contain. %[1]s
// is the key's name, %[2]s the VLAN.
var invalidDocs = []struct{ doc, wantErr string }{
	{"apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: %[1]s\nspec: [\n", "line"}, // not YAML
	{"apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: %[1]s}\nspec: {networks: [%[2]s], replicas: 1}\n", "spec.image"},
	{"apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: %[1]s-other}\nspec: {image: x, networks: [%[2]s], replicas: 1}\n", "metadata.name"},
	{"apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: %[1]s}\nspec: {image: x, networks: [%[2]s], replicaz: 3}\n", "spec.replicaz"},
	{"apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: %[1]s}\nspec: {image: x, networks: [%[2]s], replicas: -2}\n", "spec.replicas"},
	{"apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: %[1]s}\nspec: {trunk: eth0, subnet: 10.0.0.0/8, rangePlan: {chunkPrefix: 24}}\n", "kind"},
}

// invalidDoc returns the i-th broken document for key name, and what its
// error must mention.
func invalidDoc(name string, i int) (doc, wantErr string) {
	d := invalidDocs[i%len(invalidDocs)]
	return fmt.Sprintf(d.doc, name, bed.VLANName), d.wantErr
}

// TestInvalidDocumentBurst puts 200 invalid Service documents straight
// into KV (as `consul kv put` does) from 8 writers at once, with a broken
// version of web among them and valid changes in the middle: each invalid
// one gets its error in its status, web's last valid version stays in force
// with its tasks untouched, and the valid changes converge.
func TestInvalidDocumentBurst(t *testing.T) {
	b := bed.New(t, 3, 3)
	tasks := b.Seed()
	side := bed.Want{Service: "side", Replicas: 1}
	b.Apply(bed.ServiceDoc(bed.ServiceOpts{Name: "side", Replicas: 1}))
	b.WaitConverged(side, 3*time.Minute)
	was, err := b.World(b.Ctx, "web")
	if err != nil {
		t.Fatal(err)
	}

	kv := b.Consul(b.H1).KV()
	put := func(name, doc string) error {
		_, err := kv.Put(&api.KVPair{Key: bed.KVPrefix + "spec/services/" + name, Value: []byte(doc)}, (&api.WriteOptions{}).WithContext(b.Ctx))
		return err
	}
	const n = 200
	keys := make(chan int)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	begin := time.Now()
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				name := fmt.Sprintf("bad-%03d", i)
				doc, _ := invalidDoc(name, i)
				if err := put(name, doc); err != nil {
					errs[w] = errors.Join(errs[w], err)
				}
				switch i {
				case n / 4:
					// web broken: the last valid version stays in force.
					errs[w] = errors.Join(errs[w], put("web", strings.Replace(bed.WebDoc(6), "replicas: 6", "replicas: -6", 1)))
				case n / 2:
					// Valid changes in the middle of the burst.
					errs[w] = errors.Join(errs[w],
						put("side", bed.ServiceDoc(bed.ServiceOpts{Name: "side", Replicas: 2})),
						put("during", bed.ServiceDoc(bed.ServiceOpts{Name: "during", Replicas: 1})))
				}
			}
		}()
	}
	for i := range n {
		keys <- i
	}
	close(keys)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d invalid documents put in %s", n, time.Since(begin).Round(time.Millisecond))

	b.WaitFor("every invalid document has an error status", 3*time.Minute, func(ctx context.Context) error {
		var missing []string
		for i := range n {
			name := fmt.Sprintf("bad-%03d", i)
			st, ok, err := b.Status(ctx, "services", name)
			if err != nil {
				return err
			}
			valid, _ := bed.Condition(st, "Valid")
			_, wantErr := invalidDoc(name, i)
			if !ok || valid.Status != "False" || !strings.Contains(st.LastError, wantErr) {
				missing = append(missing, fmt.Sprintf("%s (want an error about %s, status %q)", name, wantErr, st.LastError))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d without an error status, e.g. %v", len(missing), missing[:min(5, len(missing))])
		}
		st, _, err := b.Status(ctx, "services", "web")
		if err != nil {
			return err
		}
		if valid, _ := bed.Condition(st, "Valid"); valid.Status != "False" || !strings.Contains(st.LastError, "replicas") {
			return fmt.Errorf("web's status does not report its broken version: %+v, %q", valid, st.LastError)
		}
		return nil
	})
	for i := range invalidDocs {
		st, _, _ := b.Status(b.Ctx, "services", fmt.Sprintf("bad-%03d", i))
		t.Logf("bad-%03d: %s", i, st.LastError)
	}

	b.WaitFor("the valid changes converged", 3*time.Minute, func(ctx context.Context) error {
		if _, err := b.Converged(ctx, bed.Want{Service: "side", Replicas: 2}); err != nil {
			return err
		}
		_, err := b.Converged(ctx, bed.Want{Service: "during", Replicas: 1})
		return err
	})
	svcs, err := b.ManagedServices(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name := range svcs {
		if strings.HasPrefix(name, "bad-") {
			t.Errorf("invalid document %s became a service", name)
		}
	}
	now, err := b.World(b.Ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if err := was.Same(now); err != nil {
		t.Errorf("web's tasks or the networks changed: %v", err)
	}
	if _, err := b.Converged(b.Ctx, bed.WebWant(6)); err != nil {
		t.Errorf("web after the burst: %v (before: %v)", err, tasks)
	}
}

// TestVLANDeletedInUse deletes the VLAN document while web runs on it: the
// tasks keep running, the networks and links stay, and the VLAN's status
// says what blocks its removal.
func TestVLANDeletedInUse(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Seed()
	was, err := b.World(b.Ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	b.ReconcilerCmd("delete", "vlan", bed.VLANName)
	var msg string
	b.WaitFor("the VLAN's status says what blocks removal", 2*time.Minute, func(ctx context.Context) error {
		st, ok, err := b.Status(ctx, "vlans", bed.VLANName)
		if err != nil || !ok {
			return fmt.Errorf("status/vlans/%s: %v (present %v)", bed.VLANName, err, ok)
		}
		ready, _ := bed.Condition(st, "Ready")
		msg = ready.Message
		if ready.Status != "False" || !strings.Contains(msg, "in use") {
			return fmt.Errorf("Ready %+v", ready)
		}
		return nil
	})
	t.Logf("status/vlans/%s: %s", bed.VLANName, msg)
	// Long enough for several retries of the removal (every 10 s) and for
	// Swarm to act on any change of the nodes' labels.
	b.Holds("tasks, networks and links stay", 40*time.Second, 4*time.Second, func(ctx context.Context) error {
		now, err := b.World(ctx, "web")
		if err != nil {
			return err
		}
		return was.Same(now)
	})
	if _, err := b.Converged(b.Ctx, bed.WebWant(6)); err != nil {
		t.Errorf("web after the VLAN's deletion: %v", err)
	}
}
