package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// scaleOutcome is what one accepted scale request did; it is also the scale
// API's answer.
type scaleOutcome struct {
	Service string `json:"service"`
	// Replicas is the count in force afterwards, Previous the one before.
	Replicas int `json:"replicas"`
	Previous int `json:"previous"`
	Min      int `json:"min"`
	Max      int `json:"max"`
}

// changed says whether the request moved the count.
func (o scaleOutcome) changed() bool { return o.Replicas != o.Previous }

// applyScale decides req against the service's recorded intent and writes
// the result with check-and-set, retrying on conflict, so concurrent
// requests through any manager (or the CLI) never lose one. A refusal
// changes nothing and is returned as such; err is for Consul trouble.
func applyScale(ctx context.Context, store *state.Store, svc *spec.Service, req cluster.ScaleRequest) (scaleOutcome, *cluster.ScaleRefusal, error) {
	name := svc.Metadata.Name
	out := scaleOutcome{Service: name}
	if sc := svc.Spec.Scaling; sc != nil {
		out.Min, out.Max = sc.Min, sc.Max
	}
	var refusal *cluster.ScaleRefusal
	recorded := false
	intent, err := store.UpdateScaleIntent(ctx, name, func(cur *state.ScaleIntent, found bool) (*state.ScaleIntent, error) {
		// fn runs again after a lost race: nothing from a previous round
		// may leak into this one.
		refusal, recorded = nil, found
		out.Previous = cluster.EffectiveReplicas(svc, intentCount(*cur, found))
		next, r := cluster.DecideScale(svc, *cur, found, req, time.Now())
		if r != nil {
			refusal = r
			return nil, nil
		}
		if next == *cur {
			return nil, nil
		}
		recorded = true
		return &next, nil
	})
	if err != nil {
		return out, nil, err
	}
	if refusal != nil {
		out.Replicas = out.Previous
		return out, refusal, nil
	}
	out.Replicas = cluster.EffectiveReplicas(svc, intentCount(intent, recorded))
	return out, nil, nil
}

// intentCount is the recorded count for EffectiveReplicas: nil when the
// service was never scaled, so spec.replicas is in force.
func intentCount(si state.ScaleIntent, found bool) *int {
	if !found {
		return nil
	}
	n := si.Replicas
	return &n
}

// errServiceNotFound is returned by readService for a missing document.
var errServiceNotFound = errors.New("not found")

// readService reads, validates and defaults a Service document from KV.
func readService(ctx context.Context, store *state.Store, name string) (*spec.Service, error) {
	value, found, err := store.GetSpec(ctx, spec.KindService, name)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", name, err)
	}
	if !found {
		return nil, fmt.Errorf("service %q: %w", name, errServiceNotFound)
	}
	docs, err := reconcile.ParseDocuments(value)
	if err != nil {
		return nil, fmt.Errorf("service %q: the document in KV is invalid:\n%w", name, err)
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("service %q: the key holds %d documents, want 1", name, len(docs))
	}
	svc, ok := docs[0].Object.(*spec.Service)
	if !ok || svc.Metadata.Name != name {
		return nil, fmt.Errorf("service %q: the key holds %s %q", name, docs[0].Object.GetKind(), docs[0].Object.GetName())
	}
	return svc, nil
}

// cmdScale is `reconciler scale SERVICE up|down|N`. It writes the scale
// intent straight to Consul (Consul's ACLs decide who may), through the
// same decision and check-and-set as the HTTP API.
func cmdScale(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	note := fs.String("reason", "", "why, recorded with the decision")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: reconciler scale SERVICE up|down|N")
	}
	name := pos[0]
	req := cluster.ScaleRequest{Source: cluster.ScaleSourceCLI, Note: *note}
	switch pos[1] {
	case cluster.ScaleUp, cluster.ScaleDown:
		req.Direction = pos[1]
	default:
		n, err := strconv.Atoi(pos[1])
		if err != nil || n < 0 {
			return fmt.Errorf("%q: want up, down or a replica count", pos[1])
		}
		req.Replicas = &n
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	svc, err := readService(ctx, store, name)
	if err != nil {
		return err
	}
	out, refusal, err := applyScale(ctx, store, svc, req)
	if err != nil {
		return err
	}
	if refusal != nil {
		fmt.Fprintf(c.stderr, "reconciler scale: refused: %s\n", refusal.Reason)
		return exitError{code: 1}
	}
	if !out.changed() {
		fmt.Fprintf(c.stdout, "%s: unchanged at %d replicas (min %d, max %d)\n", name, out.Replicas, out.Min, out.Max)
		return nil
	}
	fmt.Fprintf(c.stdout, "%s: %d -> %d replicas (min %d, max %d)\n", name, out.Previous, out.Replicas, out.Min, out.Max)
	return nil
}
