package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// aclRoles are the roles acl-policy knows, in the order the usage lists them.
var aclRoles = []string{"manager", "host", "operator", "gitops"}

// aclRule is one rule of a Consul ACL policy and why the role needs it.
type aclRule struct {
	// resource is the rule's HCL block name: key, key_prefix, session_prefix…
	resource string
	// name is the rule's label (a key, a prefix, a service name prefix).
	name   string
	policy string
	why    string
}

func cmdACLPolicy(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	role := fs.String("role", "", "the policy of this role: manager (run --role manager), host (run --role host), operator (apply, delete, get, status, diff, plan, scale) or gitops (beside manager, with --git-url)")
	servicePrefix := fs.String("service-prefix", "", "the start shared by the Consul service names the Service documents register (spec.consul.service, default the document's name); empty: every name")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	rules, err := aclPolicy(*role, store, *servicePrefix)
	if err != nil {
		return err
	}
	writeACLPolicy(c.stdout, *role, store.Prefix(), *servicePrefix, rules)
	return nil
}

// aclPolicy returns the rules role needs with the store's prefix; services
// is the prefix of the service names the documents register.
func aclPolicy(role string, s *state.Store, services string) ([]aclRule, error) {
	prefix := s.Prefix()
	readAll := aclRule{"key_prefix", prefix, "list",
		"Read every key under the prefix. Listings must see every key: Consul leaves out keys a token may not read\n" +
			"without refusing, and swarmvlan refuses such a listing rather than take missing documents for deleted ones.\n" +
			`"list" (read and list) so listings also work where Consul runs with acl.enable_key_list_policy.`}
	sessions := aclRule{"session_prefix", "", "write",
		"The process's Consul session (create, renew, destroy), which holds its keys and is deleted with them when\n" +
			"the process dies. Sessions belong to the local agent's node, whose name differs per host; a token for one\n" +
			`host may name it instead: session "<node name>".`}
	switch role {
	case "manager":
		rules := []aclRule{
			{"key_prefix", prefix, "list", readAll.why + "\nThe leader reads documents (spec/), the hosts' reports (state/nodes/), allocations, scale intents and status."},
			{"key", s.LeaderKey(), "write",
				"The leader lock, acquired and released with the session. Every leader write is a transaction that\n" +
					"first checks the lock (read), so a deposed leader writes nothing."},
			{"key", s.InstallationKey(), "write",
				"The installation's ID, created once by the first leader; the Docker objects swarmvlan makes carry it."},
			{"key_prefix", strings.TrimSuffix(s.AllocationPrefix(""), "/"), "write",
				"Each node's chunk of each VLAN, allocated with check-and-set and released after the node's quarantine."},
			{"key_prefix", strings.TrimSuffix(s.LeasePrefix(""), "/"), "write",
				"VLANs in rangePlan.mode cluster: the leader releases the leases of nodes removed from the swarm,\n" +
					"forgets them after their quarantine and reserves sticky slots' addresses (fenced check-and-set)."},
			{"key_prefix", s.ScalePrefix(), "write",
				"Scale intents: the scale API the managers serve writes them with check-and-set."},
		}
		for _, k := range spec.Kinds {
			rules = append(rules, aclRule{"key_prefix", s.StatusPrefix() + spec.Plural(k) + "/", "write",
				fmt.Sprintf("The status of each %s document (conditions, observed index, details), written when it changes.", k)})
		}
		return append(rules,
			sessions,
			aclRule{"node_prefix", "", "write",
				"Read the catalog entries of swarmvlan's registrations on every node (discovery clean-up): Consul hides\n" +
					"the entries of nodes a token may not read. Write: the leader check (an HTTP check of this process's\n" +
					"/healthz that the leader lock's session is bound to) is a check of the local agent's node. A token for\n" +
					`one host may narrow it: node_prefix "" read beside node "<node name>" write.`},
			aclRule{"service_prefix", services, "write",
				"Remove from the catalog the entries of tasks on nodes Swarm has lost (their own agent cannot): a catalog\n" +
					"delete in a transaction needs service:write on the entry's service name. Reading the catalog needs\n" +
					"service:read on the same names, which write includes."},
		), nil
	case "host":
		return []aclRule{
			{"key_prefix", prefix, "list", readAll.why + "\nA host reads the documents (spec/), its allocations and its status."},
			{"key_prefix", s.NodePrefix(), "write",
				"This node's liveness key (state/nodes/<swarm node ID>) with its readiness report, held by the session.\n" +
					`A token for one node may name it instead: key "` + s.NodeKey("<swarm node ID>") + `".`},
			{"key_prefix", s.StatusKey(state.SectionNodes, ""), "write",
				"This node's status record (status/nodes/<swarm node ID>), written when it changes."},
			{"key_prefix", s.StatusKey(state.SectionTasks, ""), "write",
				"This node's running tasks and their addresses (status/tasks/<swarm node ID>), for the dashboard,\n" +
					"written when they change."},
			{"key_prefix", strings.TrimSuffix(s.LeasePrefix(""), "/"), "write",
				"VLANs in rangePlan.mode cluster: the IPAM plugin's address leases (state/leases/<vlan>/<address>),\n" +
					"taken, released into quarantine and slot-tagged by this node (check-and-set; the owner rule holds),\n" +
					"watched, and taken again for an address this node's endpoints hold whose lease a rollback lost."},
			sessions,
			{"service_prefix", services, "write",
				"Register this node's running tasks with the local agent, with their health checks, and deregister them\n" +
					"when they end: the agent needs service:write on each registered service name (spec.consul.service,\n" +
					"default the document's name) and service:read, which write includes, to list what it holds."},
		}, nil
	case "operator":
		return []aclRule{
			{"key_prefix", prefix, "list", readAll.why + "\nget, status, diff and plan read documents, status and allocations; apply compares with what is stored."},
			{"key_prefix", s.SpecPrefix(), "write",
				"apply writes and prunes documents (check-and-set transactions); delete removes one."},
			{"key_prefix", s.ScalePrefix(), "write",
				"scale writes a service's scale intent with check-and-set, as the scale API does."},
			{"key_prefix", s.AdoptedPrefix(), "write",
				"adopt records the hand-made networks and services it takes over, by Docker ID."},
		}, nil
	case "gitops":
		return []aclRule{
			{"key_prefix", prefix, "list", readAll.why + "\nThe sync compares the spec tree with the commit and reads its own record."},
			{"key_prefix", s.SpecPrefix(), "write",
				"The leader's sync writes and prunes documents (fenced check-and-set transactions) and the in-flight\n" +
					"marker " + s.SyncMarkerKey() + " of a sync that spans several transactions."},
			{"key", s.SyncStatusKey(), "write",
				"The sync record: the commit in force, the last attempt, its problems, drift corrections."},
			{"key", s.SyncTriggerKey(), "write",
				"A manager that receives a push webhook while another leads passes it on through this key."},
		}, nil
	case "":
		return nil, fmt.Errorf("--role: give one of %s", strings.Join(aclRoles, ", "))
	}
	return nil, fmt.Errorf("--role: must be one of %s, not %q", strings.Join(aclRoles, ", "), role)
}

// writeACLPolicy prints rules as HCL, as `consul acl policy create -rules
// @file` takes it, each rule under a comment saying why.
func writeACLPolicy(w io.Writer, role, prefix, services string, rules []aclRule) {
	name := "swarmvlan-" + role
	what := map[string]string{
		"manager":  "reconciler run --role manager",
		"host":     "reconciler run --role host",
		"operator": "the reconciler commands adopt, apply, delete, diff, get, plan, scale and status",
		"gitops":   "reconciler run --role manager --git-url (the GitOps sync), beside the manager policy",
	}[role]
	fmt.Fprintf(w, "# swarmvlan's Consul ACL policy for the %s role: %s.\n", role, what)
	if role == "manager" || role == "host" {
		fmt.Fprintf(w, "# reconciler run --role all needs a token holding both the manager and the host policy.\n")
	}
	fmt.Fprintf(w, "# KV prefix %q; service names starting with %q.\n", prefix, services)
	fmt.Fprintf(w, "# Made by: reconciler acl-policy --role %s --prefix %s", role, prefix)
	if services != "" {
		fmt.Fprintf(w, " --service-prefix %s", services)
	}
	fmt.Fprintf(w, "\n#\n")
	fmt.Fprintf(w, "#   consul acl policy create -name %s -rules @%s.hcl\n", name, role)
	fmt.Fprintf(w, "#   consul acl token create -description %q -policy-name %s\n", "swarmvlan "+role, name)
	for _, r := range rules {
		fmt.Fprintln(w)
		for _, line := range strings.Split(r.why, "\n") {
			fmt.Fprintf(w, "# %s\n", line)
		}
		fmt.Fprintf(w, "%s %q {\n  policy = %q\n}\n", r.resource, r.name, r.policy)
	}
}
