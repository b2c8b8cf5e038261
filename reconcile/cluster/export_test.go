package cluster

import (
	"context"

	"swarmvlan/reconcile"
)

// ResyncServicesForTest runs the periodic batch pass over every service once.
func ResyncServicesForTest(ctx context.Context, c *Cluster) reconcile.Outcome {
	return c.reconcileServiceResync(ctx, reconcile.Key{Kind: kindServiceResync, Name: "all"}, nil)
}
