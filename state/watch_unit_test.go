package state

import (
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestNextIndex(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, got uint64
		early     bool
		want      indexStep
	}{
		{"first answer is news", 0, 42, false, indexStep{next: 42, wait: 42, deliver: true}},
		{"first answer with index 0 is treated as 1", 0, 0, false, indexStep{next: 1, wait: 1, deliver: true}},
		{"same index: timeout, nothing to do", 42, 42, false, indexStep{next: 42, wait: 42}},
		{"same index, early: look again without blocking", 42, 42, true, indexStep{next: 42, wait: 0}},
		{"index grew: news", 42, 43, false, indexStep{next: 43, wait: 43, deliver: true}},
		{"index grew, early: news", 42, 43, true, indexStep{next: 43, wait: 43, deliver: true}},
		{"index went backwards: reset and resync", 42, 7, false, indexStep{reset: true}},
		{"index went backwards, early: reset and resync", 42, 7, true, indexStep{reset: true}},
		{"index 0 after a real index: backwards", 42, 0, false, indexStep{reset: true}},
		{"index 0 after waiting on 1 (an empty table): nothing", 1, 0, false, indexStep{next: 1, wait: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextIndex(tc.prev, tc.got, tc.early); got != tc.want {
				t.Errorf("nextIndex(%d, %d, %v) = %+v, want %+v", tc.prev, tc.got, tc.early, got, tc.want)
			}
		})
	}
	t.Run("after a reset the next answer is delivered", func(t *testing.T) {
		step := nextIndex(42, 7, false)
		if step.wait != 0 {
			t.Fatalf("reset waits on %d, want a non-blocking query", step.wait)
		}
		if got := nextIndex(step.next, 7, false); !got.deliver || got.next != 7 {
			t.Errorf("answer after reset = %+v, want delivery at 7", got)
		}
	})
}

func TestTxnChunks(t *testing.T) {
	ops := func(n, valueSize int) api.TxnOps {
		out := make(api.TxnOps, n)
		for i := range out {
			out[i] = &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("k%04d", i), Value: make([]byte, valueSize)}}
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		ops       api.TxnOps
		max       int
		wantSizes []int
	}{
		{"empty", nil, 0, nil},
		{"one", ops(1, 10), 0, []int{1}},
		{"exactly 64", ops(64, 10), 0, []int{64}},
		{"65 spills one", ops(65, 10), 0, []int{64, 1}},
		{"1000 in 16", ops(1000, 10), 0, append(repeat(64, 15), 40)},
		{"63 for a fenced leader", ops(130, 10), 63, []int{63, 63, 4}},
		{"too large max is capped", ops(70, 10), 500, []int{64, 6}},
		{"large values split by size", ops(10, 100<<10), 0, []int{2, 2, 2, 2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chunks := TxnChunks(tc.ops, tc.max)
			var sizes []int
			var order []string
			for _, c := range chunks {
				sizes = append(sizes, len(c))
				for _, op := range c {
					order = append(order, op.KV.Key)
				}
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tc.wantSizes) {
				t.Errorf("chunk sizes %v, want %v", sizes, tc.wantSizes)
			}
			for i, op := range tc.ops {
				if i >= len(order) || order[i] != op.KV.Key {
					t.Fatalf("op %d out of order or lost", i)
				}
			}
		})
	}
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}
