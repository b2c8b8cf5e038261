package state

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-multierror"

	"swarmvlan/spec"
)

// ErrEmptySpec is returned when a pruning apply would leave no documents.
var ErrEmptySpec = errors.New("refusing to prune every document (no documents given); allow it explicitly to empty the spec")

// SpecDoc is one document to apply: its key (Store.SpecKey) and its bytes.
type SpecDoc struct {
	Key   string
	Value []byte
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// Prune deletes spec keys that the documents do not hold.
	Prune bool
	// DryRun computes the result without writing.
	DryRun bool
	// AllowEmpty lets a pruning apply with no documents delete every spec
	// key; without it such an apply is refused (a wrong directory must not
	// wipe the cluster).
	AllowEmpty bool
	// Equal compares a stored value with a document's (a semantic compare
	// that ignores formatting, say); nil compares bytes.
	Equal func(stored, doc []byte) bool
}

// ApplyResult lists what an apply did (or, with DryRun, would do), by key.
type ApplyResult struct {
	Created, Changed, Unchanged, Pruned []string
	// Txns counts the transactions committed (with DryRun: needed).
	Txns int
}

// Apply makes the spec tree hold docs. It reads the tree once, then writes
// created and changed documents (and deletes pruned keys) in transactions of
// at most MaxTxnOps operations, each operation a check-and-set against the
// ModifyIndex it read: a key edited meanwhile makes its transaction roll
// back and Apply fail with a *TxnError naming it, instead of overwriting the
// edit. Unchanged documents are not rewritten. VLANs are written before
// hosts and services, and pruned in the reverse order, so a transaction
// boundary never leaves a service pointing at a VLAN not yet written.
func (s *Store) Apply(ctx context.Context, docs []SpecDoc, opts ApplyOptions) (ApplyResult, error) {
	var res ApplyResult
	if err := s.checkDocs(docs); err != nil {
		return res, err
	}
	if opts.Prune && len(docs) == 0 && !opts.AllowEmpty {
		return res, fmt.Errorf("apply: %w", ErrEmptySpec)
	}
	equal := opts.Equal
	if equal == nil {
		equal = bytes.Equal
	}
	prefix := s.SpecPrefix()
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return res, fmt.Errorf("apply: read %s: %w", prefix, err)
	}
	res, ops := s.planSpec(pairs, docs, equal, opts.Prune)

	chunks := TxnChunks(ops, MaxTxnOps)
	if opts.DryRun {
		res.Txns = len(chunks)
		return res, nil
	}
	for i, chunk := range chunks {
		ok, resp, _, err := s.client.Txn().Txn(chunk, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return res, fmt.Errorf("apply: transaction %d of %d (%d committed before): %w", i+1, len(chunks), res.Txns, s.denied(OpTxn, prefix, err))
		}
		if err := s.deniedTxn(resp, chunk); err != nil {
			return res, fmt.Errorf("apply: transaction %d of %d rolled back (%d committed before): %w", i+1, len(chunks), res.Txns, err)
		}
		if !ok {
			return res, fmt.Errorf("apply: transaction %d of %d rolled back, keys changed since they were read (%d transactions committed before): %w",
				i+1, len(chunks), res.Txns, newTxnError(resp, chunk, 0))
		}
		res.Txns++
	}
	return res, nil
}

// planSpec computes the operations that make the spec tree, read as pairs,
// hold docs: check-and-set writes of created and changed documents, VLANs
// first, then (with prune) check-and-set deletes of the layout's keys that
// docs do not hold, in the reverse order.
func (s *Store) planSpec(pairs api.KVPairs, docs []SpecDoc, equal func(stored, doc []byte) bool, prune bool) (ApplyResult, api.TxnOps) {
	var res ApplyResult
	stored := make(map[string]*api.KVPair, len(pairs))
	for _, p := range pairs {
		stored[p.Key] = p
	}
	docs = slices.Clone(docs)
	slices.SortFunc(docs, func(a, b SpecDoc) int { return s.compareSpecKeys(a.Key, b.Key) })
	var ops api.TxnOps
	want := make(map[string]bool, len(docs))
	for _, d := range docs {
		want[d.Key] = true
		p := stored[d.Key]
		switch {
		case p == nil:
			res.Created = append(res.Created, d.Key)
			ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: d.Key, Value: d.Value, Index: 0}})
		case equal(p.Value, d.Value):
			res.Unchanged = append(res.Unchanged, d.Key)
		default:
			res.Changed = append(res.Changed, d.Key)
			ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: d.Key, Value: d.Value, Index: p.ModifyIndex}})
		}
	}
	if prune {
		var gone []*api.KVPair
		for _, p := range pairs {
			// Only keys this layout owns: anything else under spec/ was not
			// put there by an apply and is left alone.
			if _, _, ok := s.ParseSpecKey(p.Key); ok && !want[p.Key] {
				gone = append(gone, p)
			}
		}
		slices.SortFunc(gone, func(a, b *api.KVPair) int { return s.compareSpecKeys(b.Key, a.Key) })
		for _, p := range gone {
			res.Pruned = append(res.Pruned, p.Key)
			ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: p.Key, Index: p.ModifyIndex}})
		}
	}
	return res, ops
}

// checkDocs refuses keys outside the spec layout and duplicate keys,
// listing every problem.
func (s *Store) checkDocs(docs []SpecDoc) error {
	var errs *multierror.Error
	seen := make(map[string]bool, len(docs))
	for _, d := range docs {
		if _, _, ok := s.ParseSpecKey(d.Key); !ok {
			errs = multierror.Append(errs, fmt.Errorf("key %q: not a spec key (want %s<kind plural>/<name>)", d.Key, s.SpecPrefix()))
			continue
		}
		if seen[d.Key] {
			errs = multierror.Append(errs, fmt.Errorf("key %q: given twice", d.Key))
		}
		seen[d.Key] = true
	}
	if err := errs.ErrorOrNil(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	return nil
}

// compareSpecKeys orders keys by kind in spec.Kinds order, then by name.
func (s *Store) compareSpecKeys(a, b string) int {
	ka, na, _ := s.ParseSpecKey(a)
	kb, nb, _ := s.ParseSpecKey(b)
	return cmp.Or(cmp.Compare(slices.Index(spec.Kinds, ka), slices.Index(spec.Kinds, kb)), cmp.Compare(na, nb))
}
