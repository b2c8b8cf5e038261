# swarmvlan's Consul ACL policy for the host role: reconciler run --role host.
# reconciler run --role all needs a token holding both the manager and the host policy.
# KV prefix "swarmvlan/"; service names starting with "".
# Made by: reconciler acl-policy --role host --prefix swarmvlan/
#
#   consul acl policy create -name swarmvlan-host -rules @host.hcl
#   consul acl token create -description "swarmvlan host" -policy-name swarmvlan-host

# Read every key under the prefix. Listings must see every key: Consul leaves out keys a token may not read
# without refusing, and swarmvlan refuses such a listing rather than take missing documents for deleted ones.
# "list" (read and list) so listings also work where Consul runs with acl.enable_key_list_policy.
# A host reads the documents (spec/), its allocations and its status.
key_prefix "swarmvlan/" {
  policy = "list"
}

# This node's liveness key (state/nodes/<swarm node ID>) with its readiness report, held by the session.
# A token for one node may name it instead: key "swarmvlan/state/nodes/<swarm node ID>".
key_prefix "swarmvlan/state/nodes/" {
  policy = "write"
}

# This node's status record (status/nodes/<swarm node ID>), written when it changes.
key_prefix "swarmvlan/status/nodes/" {
  policy = "write"
}

# This node's running tasks and their addresses (status/tasks/<swarm node ID>), for the dashboard,
# written when they change.
key_prefix "swarmvlan/status/tasks/" {
  policy = "write"
}

# VLANs in rangePlan.mode cluster: the IPAM plugin's address leases (state/leases/<vlan>/<address>),
# taken, released into quarantine and slot-tagged by this node (check-and-set; the owner rule holds),
# watched, and taken again for an address this node's endpoints hold whose lease a rollback lost.
key_prefix "swarmvlan/state/leases/" {
  policy = "write"
}

# The process's Consul session (create, renew, destroy), which holds its keys and is deleted with them when
# the process dies. Sessions belong to the local agent's node, whose name differs per host; a token for one
# host may name it instead: session "<node name>".
session_prefix "" {
  policy = "write"
}

# Register this node's running tasks with the local agent, with their health checks, and deregister them
# when they end: the agent needs service:write on each registered service name (spec.consul.service,
# default the document's name) and service:read, which write includes, to list what it holds.
service_prefix "" {
  policy = "write"
}
