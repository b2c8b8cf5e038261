package state

import (
	"fmt"
	"strings"

	"github.com/hashicorp/consul/api"
)

// MaxTxnOps is the most operations Consul accepts in one transaction.
const MaxTxnOps = 64

// maxTxnBytes keeps a transaction's JSON body under Consul's default
// txn_max_req_len of 512 KiB, with room for the encoding's overhead.
const maxTxnBytes = 384 << 10

// TxnChunks splits ops into transactions of at most maxOps operations (0 or
// more than MaxTxnOps means MaxTxnOps) whose encoded size stays under
// Consul's request limit, keeping their order. Each chunk commits
// atomically; the chunks together do not.
func TxnChunks(ops api.TxnOps, maxOps int) []api.TxnOps {
	if maxOps <= 0 || maxOps > MaxTxnOps {
		maxOps = MaxTxnOps
	}
	var chunks []api.TxnOps
	var cur api.TxnOps
	size := 0
	for _, op := range ops {
		n := opSize(op)
		if len(cur) > 0 && (len(cur) == maxOps || size+n > maxTxnBytes) {
			chunks = append(chunks, cur)
			cur, size = nil, 0
		}
		cur = append(cur, op)
		size += n
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks
}

// opSize estimates an op's share of the request body: values travel
// base64-encoded (4/3 of their size) beside the key and the op's fields.
func opSize(op *api.TxnOp) int {
	if op.KV == nil {
		return 256
	}
	return len(op.KV.Key) + (len(op.KV.Value)+2)/3*4 + 128
}

// TxnOpError is one operation Consul rejected.
type TxnOpError struct {
	// Index is the operation's position in the caller's ops.
	Index int
	// Key is the operation's KV key, if it has one.
	Key string
	// What is Consul's reason.
	What string
}

// TxnError reports the operations that made Consul roll a transaction back.
type TxnError struct {
	Ops []TxnOpError

	// fenceFailed is set when one of the ops Leadership prepends failed.
	fenceFailed bool
}

// Error names up to five rejected ops and why.
func (e *TxnError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "transaction rolled back: %d op(s) rejected", len(e.Ops))
	for i, op := range e.Ops {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(e.Ops)-i)
			break
		}
		fmt.Fprintf(&b, "; op %d (%s): %s", op.Index, op.Key, op.What)
	}
	return b.String()
}

// Keys lists the keys of the rejected operations.
func (e *TxnError) Keys() []string {
	keys := make([]string, 0, len(e.Ops))
	for _, op := range e.Ops {
		keys = append(keys, op.Key)
	}
	return keys
}

// newTxnError maps Consul's errors onto the caller's ops; the first offset
// ops were added by this package (the leader fence) and are not the
// caller's.
func newTxnError(resp *api.TxnResponse, ops api.TxnOps, offset int) *TxnError {
	e := &TxnError{}
	if resp == nil {
		return e
	}
	for _, te := range resp.Errors {
		if te.OpIndex < offset {
			e.fenceFailed = true
			continue
		}
		oe := TxnOpError{Index: te.OpIndex - offset, What: te.What}
		if te.OpIndex < len(ops) && ops[te.OpIndex].KV != nil {
			oe.Key = ops[te.OpIndex].KV.Key
		}
		e.Ops = append(e.Ops, oe)
	}
	return e
}
