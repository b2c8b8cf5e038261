package e2e

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
)

// TestSnapshotRestore restores a Consul snapshot taken before a service was
// deleted and another created: the reconcilers' watches see the index go
// backwards, and Docker must follow the restored documents (the deleted
// service comes back, the new one goes away) while web keeps running.
func TestSnapshotRestore(t *testing.T) {
	b := newBed(t, 3, 3)
	b.seed()
	old := want{service: "old", replicas: 1}
	b.apply(serviceDoc(serviceOpts{name: "old", replicas: 1}))
	b.waitConverged(old, 3*time.Minute)

	snap, _, err := b.consul(b.h1).Snapshot().Save((&api.QueryOptions{}).WithContext(b.ctx))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(snap)
	snap.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot: %d bytes", len(data))

	b.reconcilerCmd("delete", "service", "old")
	niu := want{service: "new", replicas: 1}
	b.apply(serviceDoc(serviceOpts{name: "new", replicas: 1}))
	b.waitFor("old removed, new running", 3*time.Minute, func(ctx context.Context) error {
		if err := b.serviceAbsent(ctx, "old"); err != nil {
			return err
		}
		_, err := b.converged(ctx, niu)
		return err
	})

	if err := b.consul(b.h1).Snapshot().Restore((&api.WriteOptions{}).WithContext(b.ctx), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	b.waitFor("Docker follows the restored documents", 3*time.Minute, func(ctx context.Context) error {
		if err := b.serviceAbsent(ctx, "new"); err != nil {
			return err
		}
		if _, err := b.converged(ctx, old); err != nil {
			return err
		}
		_, err := b.converged(ctx, webWant(6))
		return err
	})
	t.Logf("restored state in force %s after the restore", time.Since(begin).Round(10*time.Millisecond))
	for _, h := range b.c.Hosts() {
		if p := b.proc(h); !p.Running() {
			t.Errorf("reconciler on %s exited: %v", h.Name, p.Err())
		}
	}
}

// serviceAbsent checks that no Docker service named name exists.
func (b *bed) serviceAbsent(ctx context.Context, name string) error {
	svcs, err := b.managedServices(ctx)
	if err != nil {
		return err
	}
	if len(svcs[name]) > 0 {
		return fmt.Errorf("service %s still exists", name)
	}
	return nil
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
	return fmt.Sprintf(d.doc, name, vlanName), d.wantErr
}

// TestInvalidDocumentBurst puts 200 invalid Service documents straight
// into KV (as `consul kv put` does) from 8 writers at once, with a broken
// version of web among them and valid changes in the middle: each invalid
// one gets its error in its status, web's last valid version stays in force
// with its tasks untouched, and the valid changes converge.
func TestInvalidDocumentBurst(t *testing.T) {
	b := newBed(t, 3, 3)
	tasks := b.seed()
	side := want{service: "side", replicas: 1}
	b.apply(serviceDoc(serviceOpts{name: "side", replicas: 1}))
	b.waitConverged(side, 3*time.Minute)
	was, err := b.world(b.ctx, "web")
	if err != nil {
		t.Fatal(err)
	}

	kv := b.consul(b.h1).KV()
	put := func(name, doc string) error {
		_, err := kv.Put(&api.KVPair{Key: kvPrefix + "spec/services/" + name, Value: []byte(doc)}, (&api.WriteOptions{}).WithContext(b.ctx))
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
					errs[w] = errors.Join(errs[w], put("web", strings.Replace(webDoc(6), "replicas: 6", "replicas: -6", 1)))
				case n / 2:
					// Valid changes in the middle of the burst.
					errs[w] = errors.Join(errs[w],
						put("side", serviceDoc(serviceOpts{name: "side", replicas: 2})),
						put("during", serviceDoc(serviceOpts{name: "during", replicas: 1})))
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

	b.waitFor("every invalid document has an error status", 3*time.Minute, func(ctx context.Context) error {
		var missing []string
		for i := range n {
			name := fmt.Sprintf("bad-%03d", i)
			st, ok, err := b.status(ctx, "services", name)
			if err != nil {
				return err
			}
			valid, _ := condition(st, "Valid")
			_, wantErr := invalidDoc(name, i)
			if !ok || valid.Status != "False" || !strings.Contains(st.LastError, wantErr) {
				missing = append(missing, fmt.Sprintf("%s (want an error about %s, status %q)", name, wantErr, st.LastError))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d without an error status, e.g. %v", len(missing), missing[:min(5, len(missing))])
		}
		st, _, err := b.status(ctx, "services", "web")
		if err != nil {
			return err
		}
		if valid, _ := condition(st, "Valid"); valid.Status != "False" || !strings.Contains(st.LastError, "replicas") {
			return fmt.Errorf("web's status does not report its broken version: %+v, %q", valid, st.LastError)
		}
		return nil
	})
	for i := range invalidDocs {
		st, _, _ := b.status(b.ctx, "services", fmt.Sprintf("bad-%03d", i))
		t.Logf("bad-%03d: %s", i, st.LastError)
	}

	b.waitFor("the valid changes converged", 3*time.Minute, func(ctx context.Context) error {
		if _, err := b.converged(ctx, want{service: "side", replicas: 2}); err != nil {
			return err
		}
		_, err := b.converged(ctx, want{service: "during", replicas: 1})
		return err
	})
	svcs, err := b.managedServices(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name := range svcs {
		if strings.HasPrefix(name, "bad-") {
			t.Errorf("invalid document %s became a service", name)
		}
	}
	now, err := b.world(b.ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if err := was.same(now); err != nil {
		t.Errorf("web's tasks or the networks changed: %v", err)
	}
	if _, err := b.converged(b.ctx, webWant(6)); err != nil {
		t.Errorf("web after the burst: %v (before: %v)", err, tasks)
	}
}

// TestVLANDeletedInUse deletes the VLAN document while web runs on it: the
// tasks keep running, the networks and links stay, and the VLAN's status
// says what blocks its removal.
func TestVLANDeletedInUse(t *testing.T) {
	b := newBed(t, 3, 3)
	b.seed()
	was, err := b.world(b.ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	b.reconcilerCmd("delete", "vlan", vlanName)
	var msg string
	b.waitFor("the VLAN's status says what blocks removal", 2*time.Minute, func(ctx context.Context) error {
		st, ok, err := b.status(ctx, "vlans", vlanName)
		if err != nil || !ok {
			return fmt.Errorf("status/vlans/%s: %v (present %v)", vlanName, err, ok)
		}
		ready, _ := condition(st, "Ready")
		msg = ready.Message
		if ready.Status != "False" || !strings.Contains(msg, "in use") {
			return fmt.Errorf("Ready %+v", ready)
		}
		return nil
	})
	t.Logf("status/vlans/%s: %s", vlanName, msg)
	// Long enough for several retries of the removal (every 10 s) and for
	// Swarm to act on any change of the nodes' labels.
	b.holds("tasks, networks and links stay", 40*time.Second, 4*time.Second, func(ctx context.Context) error {
		now, err := b.world(ctx, "web")
		if err != nil {
			return err
		}
		return was.same(now)
	})
	if _, err := b.converged(b.ctx, webWant(6)); err != nil {
		t.Errorf("web after the VLAN's deletion: %v", err)
	}
}
