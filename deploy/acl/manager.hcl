# swarmvlan's Consul ACL policy for the manager role: reconciler run --role manager.
# reconciler run --role all needs a token holding both the manager and the host policy.
# KV prefix "swarmvlan/"; service names starting with "".
# Made by: reconciler acl-policy --role manager --prefix swarmvlan/
#
#   consul acl policy create -name swarmvlan-manager -rules @manager.hcl
#   consul acl token create -description "swarmvlan manager" -policy-name swarmvlan-manager

# Read every key under the prefix. Listings must see every key: Consul leaves out keys a token may not read
# without refusing, and swarmvlan refuses such a listing rather than take missing documents for deleted ones.
# "list" (read and list) so listings also work where Consul runs with acl.enable_key_list_policy.
# The leader reads documents (spec/), the hosts' reports (state/nodes/), allocations, scale intents and status.
key_prefix "swarmvlan/" {
  policy = "list"
}

# The leader lock, acquired and released with the session. Every leader write is a transaction that
# first checks the lock (read), so a deposed leader writes nothing.
key "swarmvlan/leader" {
  policy = "write"
}

# The installation's ID, created once by the first leader; the Docker objects swarmvlan makes carry it.
key "swarmvlan/state/installation" {
  policy = "write"
}

# Each node's chunk of each VLAN, allocated with check-and-set and released after the node's quarantine.
key_prefix "swarmvlan/state/allocations/" {
  policy = "write"
}

# VLANs in rangePlan.mode cluster: the leader releases the leases of nodes removed from the swarm,
# forgets them after their quarantine and reserves sticky slots' addresses (fenced check-and-set).
key_prefix "swarmvlan/state/leases/" {
  policy = "write"
}

# Scale intents: the scale API the managers serve writes them with check-and-set.
key_prefix "swarmvlan/state/scale/" {
  policy = "write"
}

# The status of each VLAN document (conditions, observed index, details), written when it changes.
key_prefix "swarmvlan/status/vlans/" {
  policy = "write"
}

# The status of each Host document (conditions, observed index, details), written when it changes.
key_prefix "swarmvlan/status/hosts/" {
  policy = "write"
}

# The status of each Service document (conditions, observed index, details), written when it changes.
key_prefix "swarmvlan/status/services/" {
  policy = "write"
}

# The process's Consul session (create, renew, destroy), which holds its keys and is deleted with them when
# the process dies. Sessions belong to the local agent's node, whose name differs per host; a token for one
# host may name it instead: session "<node name>".
session_prefix "" {
  policy = "write"
}

# Read the catalog entries of swarmvlan's registrations on every node (discovery clean-up): Consul hides
# the entries of nodes a token may not read. Write: the leader check (an HTTP check of this process's
# /healthz that the leader lock's session is bound to) is a check of the local agent's node. A token for
# one host may narrow it: node_prefix "" read beside node "<node name>" write.
node_prefix "" {
  policy = "write"
}

# Remove from the catalog the entries of tasks on nodes Swarm has lost (their own agent cannot): a catalog
# delete in a transaction needs service:write on the entry's service name. Reading the catalog needs
# service:read on the same names, which write includes.
service_prefix "" {
  policy = "write"
}
