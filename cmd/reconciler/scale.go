package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/spec"
	"swarmvlan/state"
)

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
	out, refusal, err := cluster.ApplyScale(ctx, store, svc, req)
	if err != nil {
		return err
	}
	if refusal != nil {
		fmt.Fprintf(c.stderr, "reconciler scale: refused: %s\n", refusal.Reason)
		return exitError{code: 1}
	}
	if !out.Changed() {
		fmt.Fprintf(c.stdout, "%s: unchanged at %d replicas (min %d, max %d)\n", name, out.Replicas, out.Min, out.Max)
		return nil
	}
	fmt.Fprintf(c.stdout, "%s: %d -> %d replicas (min %d, max %d)\n", name, out.Previous, out.Replicas, out.Min, out.Max)
	return nil
}
