package state

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/consul/api"
)

// Meta keys every Consul registration of a swarmvlan task carries. A
// registration without MetaTask is not swarmvlan's and is never changed or
// removed.
const (
	// MetaTask is the swarm task ID; its presence marks the registration as
	// swarmvlan's.
	MetaTask = "swarmvlan-task"
	// MetaService is the Service document's name.
	MetaService = "swarmvlan-service"
	// MetaSlot is the task's replica slot (replicated services only; a
	// global service's tasks have none).
	MetaSlot = "swarmvlan-slot"
	// MetaNode is the swarm node ID of the host whose agent registered the
	// task.
	MetaNode = "swarmvlan-node"
	// MetaVLAN is the VLAN whose address is registered.
	MetaVLAN = "swarmvlan-vlan"
	// MetaHost is the host's name, for operators reading the catalog.
	MetaHost = "swarmvlan-host"
	// MetaCheck is a fingerprint of the health check definition. The
	// agent's service listing does not include checks, so the fingerprint
	// is how a changed check is told from an unchanged one without reading
	// every check back.
	MetaCheck = "swarmvlan-check"
)

// Agent is the Consul agent the store talks to, seen as the host role needs
// it: the services registered with it. Registrations made through an agent
// belong to that agent's node; the agent keeps them in the catalog (anti-
// entropy) and Consul removes them with the node.
type Agent struct {
	agent *api.Agent
	store *Store
}

// LocalAgent is the agent at the store's address. For the host role that
// must be the node's own agent: each host registers its own tasks, so a
// host that dies takes only its own registrations with it.
func (s *Store) LocalAgent() *Agent { return &Agent{agent: s.client.Agent(), store: s} }

// Services returns every service registered with the agent, by service ID,
// swarmvlan's and others alike.
func (a *Agent) Services(ctx context.Context) (map[string]*api.AgentService, error) {
	svcs, err := a.agent.ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul agent: list services: %w", a.store.denied(OpAgentServices, "local agent", err))
	}
	return svcs, nil
}

// Register registers reg with the agent, or replaces the registration with
// its ID, checks included: a check left out of reg is removed.
func (a *Agent) Register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := a.agent.ServiceRegisterOpts(reg, opts); err != nil {
		return fmt.Errorf("consul agent: register service %s: %w", reg.ID, a.store.denied(OpAgentRegister, "service "+reg.Name, err))
	}
	return nil
}

// Deregister removes the agent's service serviceID and its checks. A
// service the agent does not know is already where Deregister would take
// it: that is no error.
func (a *Agent) Deregister(ctx context.Context, serviceID string) error {
	err := a.agent.ServiceDeregisterOpts(serviceID, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	if err == nil || errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil
	}
	return fmt.Errorf("consul agent: deregister service %s: %w", serviceID, a.store.denied(OpAgentDeregister, "service ID "+serviceID, err))
}

// CatalogTasks returns the catalog's entries of swarmvlan tasks (those
// carrying MetaTask and MetaNode), on every node of the datacenter. The
// catalog has no listing of all entries, so this is one request for the
// service names and one per service.
func (s *Store) CatalogTasks(ctx context.Context) ([]*api.CatalogService, error) {
	cat := s.client.Catalog()
	// Consul leaves out what the token may not read (services of other
	// names, nodes); that is safe here, since only entries seen are ever
	// removed.
	names, _, err := cat.Services((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("catalog: list services: %w", s.denied(OpCatalogRead, "services", err))
	}
	filter := fmt.Sprintf("ServiceMeta[%q] != \"\" and ServiceMeta[%q] != \"\"", MetaTask, MetaNode)
	var out []*api.CatalogService
	for name := range names {
		entries, _, err := cat.Service(name, "", (&api.QueryOptions{Filter: filter}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("catalog: list service %s: %w", name, s.denied(OpCatalogRead, "service "+name, err))
		}
		for _, e := range entries {
			if e.ServiceMeta[MetaTask] != "" && e.ServiceMeta[MetaNode] != "" {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// DeregisterCatalogEntry removes entry (as CatalogTasks returned it) from
// the catalog, with its checks, fenced like Txn: a deposed leader gets
// ErrNotLeader and removes nothing. This is for entries whose own agent is
// gone (a lost node): a live agent would put them back by anti-entropy.
// An entry already gone is no error.
//
// The fence works because Consul's transactions take catalog operations
// beside KV ones; a plain catalog deregister cannot carry the session
// check. With ACLs the transaction needs service:write on the entry's
// service name rather than the node:write a plain deregister needs.
func (l *Leadership) DeregisterCatalogEntry(ctx context.Context, entry *api.CatalogService) error {
	op := &api.ServiceTxnOp{
		Verb: api.ServiceDelete,
		Node: entry.Node,
		// Consul wants the name beside the ID, for the ACL check.
		Service: api.AgentService{ID: entry.ServiceID, Service: entry.ServiceName},
	}
	if err := l.Txn(ctx, api.TxnOps{{Service: op}}); err != nil {
		return fmt.Errorf("catalog: deregister %s on node %s: %w", entry.ServiceID, entry.Node, err)
	}
	return nil
}
