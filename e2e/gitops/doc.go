// Package gitops holds the end-to-end tests of the GitOps sync: a real git
// server (Debian's git-http-backend behind net/http/cgi, in the root
// namespace) and a lab cluster whose managers run `reconciler run
// --git-url`; commits pushed, webhooks posted to the managers, hand edits
// in Consul, a force-push, the repository away, and the leader killed in
// the middle of a sync. The harness is e2e/bed.
package gitops
