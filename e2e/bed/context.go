package bed

import "context"

// WithContext returns the bed with ctx in place of its Ctx, for a test
// that runs longer than one test's timeout: the cluster, the reconcilers
// and the clients are the bed's.
func (b *Bed) WithContext(ctx context.Context) *Bed {
	sub := *b
	sub.Ctx = ctx
	return &sub
}
