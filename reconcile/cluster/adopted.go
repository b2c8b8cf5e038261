package cluster

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// A service taken over from a hand-made setup (`reconciler adopt`) keeps
// its tasks: Swarm replaces a task whenever its TaskTemplate changes
// (container labels and the order of the environment included), so while
// the document is the one written at adoption the leader changes only
// what replaces no task. The readiness labels come first, on the nodes
// that run the service's tasks (the node-label reconcile puts them there
// once each host reports the VLAN ready); then the service-level labels,
// the readiness placement constraints (which do not replace a task whose
// node satisfies them) and the replica count. The rest of the TaskTemplate
// stays byte-equal until the document changes; then the service is
// converged like any other.

// errAdoptedWaiting says an adopted service waits for the readiness
// labels of the nodes its tasks run on.
var errAdoptedWaiting = errors.New("adopted service waits for readiness labels")

// svcAdopted reports whether have is a service adopted for in's document,
// whose document has not changed since.
func svcAdopted(in ServiceInput, have *swarm.Service) bool {
	if have == nil || in.Service == nil {
		return false
	}
	rec, ok := in.Adopted[have.ID]
	return ok && rec.Service == in.Service.Metadata.Name && rec.SpecHash != "" && rec.SpecHash == spec.AdoptionHash(in.Service)
}

// svcAdoptedSpec is have with want's service-level labels, the readiness
// constraints want's placement carries and want's replica count; every
// other part of have, the TaskTemplate above all, is kept as it is.
func svcAdoptedSpec(want, have swarm.ServiceSpec) swarm.ServiceSpec {
	out := have
	out.Labels = svcCopyMap(have.Labels)
	for k, v := range want.Labels {
		out.Labels[k] = v
	}
	var cons []string
	if have.TaskTemplate.Placement != nil {
		cons = append(cons, have.TaskTemplate.Placement.Constraints...)
	}
	added := false
	if want.TaskTemplate.Placement != nil {
		for _, c := range want.TaskTemplate.Placement.Constraints {
			if strings.Contains(c, spec.NodeLabelPrefix) && !svcContains(cons, c) {
				cons = append(cons, c)
				added = true
			}
		}
	}
	if added {
		var p swarm.Placement
		if have.TaskTemplate.Placement != nil {
			p = *have.TaskTemplate.Placement
		}
		p.Constraints = cons
		out.TaskTemplate.Placement = &p
	}
	if want.Mode.Replicated != nil && want.Mode.Replicated.Replicas != nil && have.Mode.Replicated != nil {
		r := *want.Mode.Replicated.Replicas
		out.Mode = swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &r}}
	}
	return out
}

// svcApplyAdopted converges an adopted service (see above) and returns its
// ID and a status message. It returns errAdoptedWaiting, changing
// nothing, while a node running one of its tasks lacks a readiness label
// the new constraints require.
func svcApplyAdopted(ctx context.Context, d engine.Docker, want swarm.ServiceSpec, have *swarm.Service) (string, string, error) {
	upd := svcAdoptedSpec(want, have.Spec)
	if reflect.DeepEqual(upd, have.Spec) {
		return have.ID, "", nil
	}
	if missing, err := svcUnlabelledNodes(ctx, d, have.ID, svcReadinessVLANs(upd)); err != nil {
		return have.ID, "", err
	} else if len(missing) > 0 {
		return have.ID, "adopted: waiting for readiness labels on " + strings.Join(missing, ", "), errAdoptedWaiting
	}
	if err := d.ServiceUpdate(ctx, have.ID, have.Version, upd); err != nil {
		return have.ID, "", fmt.Errorf("update adopted service: %w", refused(err))
	}
	return have.ID, "adopted: labels, readiness constraints and replicas set; the task template is kept", nil
}

// svcUnlabelledNodes names the nodes running a task of the service that
// lack the readiness label of one of vlans ("node (vlan)"), sorted.
func svcUnlabelledNodes(ctx context.Context, d engine.Docker, serviceID string, vlans []string) ([]string, error) {
	if len(vlans) == 0 {
		return nil, nil
	}
	tasks, err := d.TaskList(ctx, engine.Filter("service", serviceID, "desired-state", "running"))
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	nodes, err := d.NodeList(ctx, engine.Filter())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	byID := map[string]swarm.Node{}
	for _, n := range nodes {
		byID[n.ID] = n
	}
	seen := map[string]bool{}
	var missing []string
	for _, t := range tasks {
		n, ok := byID[t.NodeID]
		if t.NodeID == "" || !ok {
			continue
		}
		for _, v := range vlans {
			if n.Spec.Labels[spec.NodeLabelPrefix+v] == spec.NodeLabelReady {
				continue
			}
			s := fmt.Sprintf("%s (%s)", n.Description.Hostname, v)
			if !seen[s] {
				seen[s] = true
				missing = append(missing, s)
			}
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// adoptedNetworkOK reports whether n is the adopted network of vlan in
// role, by the records under state/adopted/networks.
func adoptedNetworkOK(adopted map[string]state.AdoptedNetwork, vlan, role, id string) bool {
	rec, ok := adopted[id]
	return ok && rec.VLAN == vlan && rec.Role == role
}

// ServiceDrift lists the fields (up to three levels deep,
// "TaskTemplate.ContainerSpec.Privileges") where have differs from want,
// leaving out what Docker fills in by itself, as drift detection compares
// them. want must refer to networks and secrets by ID, as Docker stores
// them.
func ServiceDrift(want, have swarm.ServiceSpec) []string { return svcDrift(want, have) }

// removeAdoptedSwarmNetworks removes the swarm networks adopted for a VLAN
// whose document was deleted, as RemoveSwarmNetwork removes swarmvlan's
// own: only once nothing uses them, found by the ID recorded at adoption
// (they carry no labels). Until then the status says what uses them; the
// nodes' config networks, which Docker keeps while a swarm network is
// made from them, go after.
func removeAdoptedSwarmNetworks(ctx context.Context, d engine.Docker, adopted map[string]state.AdoptedNetwork, vlan string) (state.NetworkStatus, error) {
	st := state.NetworkStatus{State: state.NetworkAbsent}
	ids := make([]string, 0, 1)
	for id, rec := range adopted {
		if rec.VLAN == vlan && rec.Role == state.AdoptedSwarmNetwork {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		have, err := d.NetworkInspect(ctx, id)
		if engine.IsNotFound(err) {
			continue
		}
		st = state.NetworkStatus{Name: adopted[id].Name, ID: id}
		if err != nil {
			return st.Failed(err), fmt.Errorf("vlan %q: inspect adopted swarm network %s: %w", vlan, adopted[id].Name, err)
		}
		users, err := networkSwarmUsers(ctx, d, &have)
		if err != nil {
			return st.Failed(err), fmt.Errorf("vlan %q: swarm network users: %w", vlan, err)
		}
		if len(users) > 0 {
			st.State, st.Message, st.Requeue = state.NetworkInUse, "in use by "+networkUsersText(users), true
			return st, nil
		}
		if st, err = engine.RemoveNetwork(ctx, d, st, id, vlan); err != nil || st.State != state.NetworkAbsent {
			return st, err
		}
	}
	return st, nil
}

// removeAdopted removes the swarm networks adopted for the deleted VLAN
// name, reading the adoption records.
func (c *Cluster) removeAdopted(ctx context.Context, name string) (state.NetworkStatus, error) {
	if c.cfg.Store == nil {
		return state.NetworkStatus{State: state.NetworkAbsent}, nil
	}
	adopted, err := c.cfg.Store.AdoptedNetworksList(ctx)
	if err != nil {
		return state.NetworkStatus{Name: name}.Failed(err), err
	}
	return removeAdoptedSwarmNetworks(ctx, c.cfg.Docker, adopted, name)
}

// svcOfDeleted finds the service of a deleted Service document: by the
// document's name, or, for one with a Docker name of its own
// (spec.dockerName, as adopted services have), by its owner labels.
func svcOfDeleted(ctx context.Context, d engine.Docker, name string) (swarm.Service, error) {
	have, err := d.ServiceInspect(ctx, name)
	if !engine.IsNotFound(err) {
		return have, err
	}
	s, lerr := svcByOwner(ctx, d, name)
	switch {
	case lerr != nil:
		return swarm.Service{}, lerr
	case s == nil:
		return swarm.Service{}, err
	}
	return *s, nil
}
