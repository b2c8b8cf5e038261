// Package stack runs swarmvlan as users install it on a swarm: the image
// built by deploy/build-image.sh, copied into every host's Engine with
// docker save and docker load, and deploy/stack.yml deployed with the real
// `docker stack deploy`, each lab host's dockerd in a mount namespace of
// its own so the stack's bind mount of /var/run/docker.sock is that host's
// Engine. No reconciler process is started by the test. On it: the seed
// walkthrough, a rolling upgrade to a second image tag, a reboot of a
// host, and the stack's removal, which leaves what runs alone. The harness
// is e2e/bed.
package stack
