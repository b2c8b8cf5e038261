package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"

	"github.com/docker/docker/api/types/swarm"
)

// nodeLabelPlan returns the labels a node should carry given which managed
// VLANs are ready on it, and whether that differs from have. Only labels
// under spec.NodeLabelPrefix are touched: readiness labels of VLANs no longer
// managed are removed, every other label is kept as it is.
func nodeLabelPlan(have map[string]string, ready map[string]bool, vlans []string) (map[string]string, bool) {
	want := make(map[string]string, len(have)+len(vlans))
	for k, v := range have {
		if !strings.HasPrefix(k, spec.NodeLabelPrefix) {
			want[k] = v
		}
	}
	for _, vlan := range vlans {
		if ready[vlan] {
			want[spec.NodeLabelPrefix+vlan] = spec.NodeLabelReady
		}
	}
	if len(want) != len(have) {
		return want, true
	}
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return want, true
		}
	}
	return want, false
}

// nodeMaxConflictRetries bounds the retries after a node version conflict.
const nodeMaxConflictRetries = 5

// EnsureNodeLabels sets io.swarmvlan.vlan.<vlan>=ready on every node where
// ready[nodeID][vlan] is true, for each managed VLAN in vlans, and removes
// it everywhere else, including labels of VLANs not in vlans. Other labels
// are left alone. Updates pass the node's version and retry a version
// conflict. A nil ready map is refused: it means no readiness view, and
// taking that as "nothing is ready" would make Swarm stop every task on the
// VLANs; an empty map is an explicit "nothing is ready". Every node is
// tried; the failures are joined.
func EnsureNodeLabels(ctx context.Context, d engine.Docker, ready map[string]map[string]bool, vlans []string) error {
	if ready == nil {
		return errors.New("node labels: no readiness view; refusing to change labels")
	}
	nodes, err := d.NodeList(ctx, engine.Filter())
	if err != nil {
		return fmt.Errorf("node labels: list nodes: %w", err)
	}
	var errs []error
	for _, n := range nodes {
		if err := nodeEnsureLabels(ctx, d, n, ready[n.ID], vlans); err != nil {
			errs = append(errs, fmt.Errorf("node %s (%s): %w", n.ID, n.Description.Hostname, err))
		}
	}
	return errors.Join(errs...)
}

// nodeEnsureLabels converges one node, re-reading it after a conflict.
func nodeEnsureLabels(ctx context.Context, d engine.Docker, n swarm.Node, ready map[string]bool, vlans []string) error {
	for attempt := 0; ; attempt++ {
		labels, changed := nodeLabelPlan(n.Spec.Labels, ready, vlans)
		if !changed {
			return nil
		}
		spec := n.Spec
		spec.Labels = labels
		err := d.NodeUpdate(ctx, n.ID, n.Version, spec)
		if err == nil {
			return nil
		}
		if !engine.IsOutOfSequence(err) || attempt >= nodeMaxConflictRetries {
			return fmt.Errorf("update labels: %w", err)
		}
		if n, err = d.NodeInspect(ctx, n.ID); err != nil {
			return fmt.Errorf("inspect after conflict: %w", err)
		}
	}
}
