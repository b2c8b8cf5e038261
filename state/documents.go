package state

import (
	"context"
	"fmt"
	"slices"

	"github.com/hashicorp/consul/api"
)

// SpecDocs returns every document in the spec tree, VLANs first, then hosts
// and services (Apply's order), each kind by name. Keys under SpecPrefix
// that are not of the layout (ParseSpecKey refuses them) are left out, as
// Apply leaves them alone.
func (s *Store) SpecDocs(ctx context.Context) ([]SpecDoc, error) {
	return s.specDocsUnder(ctx, s.SpecPrefix())
}

// SpecPairs reads the whole spec tree once, as a watch of it delivers it
// (ModifyIndex included), for a one-off view of the documents in force.
func (s *Store) SpecPairs(ctx context.Context) (api.KVPairs, error) {
	pairs, meta, err := s.client.KV().List(s.SpecPrefix(), (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(s.SpecPrefix(), meta, err); err != nil {
		return nil, fmt.Errorf("spec: list %s: %w", s.SpecPrefix(), err)
	}
	return pairs, nil
}

// SpecDocsOfKind returns the documents of one kind (read as SpecKey reads
// it), by name.
func (s *Store) SpecDocsOfKind(ctx context.Context, kind string) ([]SpecDoc, error) {
	return s.specDocsUnder(ctx, s.SpecKindPrefix(kind))
}

func (s *Store) specDocsUnder(ctx context.Context, prefix string) ([]SpecDoc, error) {
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return nil, fmt.Errorf("spec: list %s: %w", prefix, err)
	}
	docs := make([]SpecDoc, 0, len(pairs))
	for _, p := range pairs {
		if _, _, ok := s.ParseSpecKey(p.Key); ok {
			docs = append(docs, SpecDoc{Key: p.Key, Value: p.Value})
		}
	}
	slices.SortFunc(docs, func(a, b SpecDoc) int { return s.compareSpecKeys(a.Key, b.Key) })
	return docs, nil
}

// SpecKeys lists the keys of every document in the spec tree, in SpecDocs'
// order, without reading their values.
func (s *Store) SpecKeys(ctx context.Context) ([]string, error) {
	prefix := s.SpecPrefix()
	keys, meta, err := s.client.KV().Keys(prefix, "", (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return nil, fmt.Errorf("spec: list keys %s: %w", prefix, err)
	}
	keys = slices.DeleteFunc(keys, func(k string) bool {
		_, _, ok := s.ParseSpecKey(k)
		return !ok
	})
	slices.SortFunc(keys, s.compareSpecKeys)
	return keys, nil
}

// GetSpec returns the bytes stored at SpecKey(kind, name); found is false
// when there is no such document.
func (s *Store) GetSpec(ctx context.Context, kind, name string) (value []byte, found bool, err error) {
	key := s.SpecKey(kind, name)
	pair, _, err := s.client.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, false, fmt.Errorf("spec %s: read: %w", key, s.denied(OpKVRead, key, err))
	}
	if pair == nil {
		return nil, false, nil
	}
	return pair.Value, true, nil
}

// DeleteSpec removes the document at SpecKey(kind, name) and reports
// whether there was one. The check and the delete are one transaction, so
// "deleted" is never said of a document that someone else removed first.
func (s *Store) DeleteSpec(ctx context.Context, kind, name string) (bool, error) {
	key := s.SpecKey(kind, name)
	ops := api.TxnOps{
		// A get inside a transaction fails, and rolls it back, when the
		// key does not exist.
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: key}},
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: key}},
	}
	ok, resp, _, err := s.client.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("spec %s: delete: %w", key, s.denied(OpTxn, key, err))
	}
	if ok {
		return true, nil
	}
	if err := s.deniedTxn(resp, ops); err != nil {
		return false, fmt.Errorf("spec %s: delete: %w", key, err)
	}
	if resp != nil && len(resp.Errors) == 1 && resp.Errors[0].OpIndex == 0 {
		return false, nil
	}
	return false, fmt.Errorf("spec %s: delete: %w", key, newTxnError(resp, ops, 0))
}
