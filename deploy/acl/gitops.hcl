# swarmvlan's Consul ACL policy for the gitops role: reconciler run --role manager --git-url (the GitOps sync), beside the manager policy.
# KV prefix "swarmvlan/"; service names starting with "".
# Made by: reconciler acl-policy --role gitops --prefix swarmvlan/
#
#   consul acl policy create -name swarmvlan-gitops -rules @gitops.hcl
#   consul acl token create -description "swarmvlan gitops" -policy-name swarmvlan-gitops

# Read every key under the prefix. Listings must see every key: Consul leaves out keys a token may not read
# without refusing, and swarmvlan refuses such a listing rather than take missing documents for deleted ones.
# "list" (read and list) so listings also work where Consul runs with acl.enable_key_list_policy.
# The sync compares the spec tree with the commit and reads its own record.
key_prefix "swarmvlan/" {
  policy = "list"
}

# The leader's sync writes and prunes documents (fenced check-and-set transactions) and the in-flight
# marker swarmvlan/spec/.sync of a sync that spans several transactions.
key_prefix "swarmvlan/spec/" {
  policy = "write"
}

# The sync record: the commit in force, the last attempt, its problems, drift corrections.
key "swarmvlan/status/sync" {
  policy = "write"
}

# A manager that receives a push webhook while another leads passes it on through this key.
key "swarmvlan/state/sync/trigger" {
  policy = "write"
}
