// Package secure holds the end-to-end tests of swarmvlan against a Consul
// run the way the people who install it run theirs: ACLs enabled with
// default_policy "deny", and the HTTP API served only over HTTPS with
// verify_incoming. Every daemon role and every command runs with a token of
// the policy `reconciler acl-policy` prints for it, over TLS configured by
// the standard CONSUL_* variables; a token that loses a rule while the
// daemons run removes nothing; a wrong CA or a missing client certificate
// is refused with a message naming the file to look at.
//
// The daemons converge the machine's own Docker Engine in swarm mode; the
// host role runs in a network namespace of its own, so its links never
// touch the machine's. The tests need root, the Engine and the consul
// binary (lab.ConsulBinary).
package secure
