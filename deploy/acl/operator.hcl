# swarmvlan's Consul ACL policy for the operator role: the reconciler commands adopt, apply, delete, diff, get, plan, scale and status.
# KV prefix "swarmvlan/"; service names starting with "".
# Made by: reconciler acl-policy --role operator --prefix swarmvlan/
#
#   consul acl policy create -name swarmvlan-operator -rules @operator.hcl
#   consul acl token create -description "swarmvlan operator" -policy-name swarmvlan-operator

# Read every key under the prefix. Listings must see every key: Consul leaves out keys a token may not read
# without refusing, and swarmvlan refuses such a listing rather than take missing documents for deleted ones.
# "list" (read and list) so listings also work where Consul runs with acl.enable_key_list_policy.
# get, status, diff and plan read documents, status and allocations; apply compares with what is stored.
key_prefix "swarmvlan/" {
  policy = "list"
}

# apply writes and prunes documents (check-and-set transactions); delete removes one.
key_prefix "swarmvlan/spec/" {
  policy = "write"
}

# scale writes a service's scale intent with check-and-set, as the scale API does.
key_prefix "swarmvlan/state/scale/" {
  policy = "write"
}

# adopt records the hand-made networks and services it takes over, by Docker ID.
key_prefix "swarmvlan/state/adopted/" {
  policy = "write"
}
