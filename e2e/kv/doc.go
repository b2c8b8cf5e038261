// Package kv holds the end-to-end tests of what happens to the documents
// in Consul KV: a snapshot restored under running reconcilers, a burst of
// invalid documents written straight into KV, and a VLAN deleted while a
// service runs on it. The harness is e2e/bed.
package kv
