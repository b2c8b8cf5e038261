package reconcile

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// HostNet converges this host's kernel state for its VLANs: the 802.1Q
// sub-interface, promiscuous mode, and the shim with its address and route.
// It owns the links it makes (alias "swarmvlan:<vlan>") and no others.
type HostNet struct {
	k hostKernel

	mu sync.Mutex // one Ensure at a time; guards promisc
	// promisc names the trunks whose promiscuous mode this reconciler
	// switched on; kept in memory only, so after a restart a trunk stays
	// promiscuous rather than being switched off under someone else.
	promisc map[string]bool

	interest atomic.Pointer[hostInterest]

	// watchRcvBuf and watchForce size the subscription sockets; tests
	// shrink them to provoke ENOBUFS.
	watchRcvBuf int
	watchForce  bool
	// subscriptions and resubscribes count Watch's successful subscriptions
	// and the times one was lost, for tests.
	subscriptions atomic.Int64
	resubscribes  atomic.Int64
}

// hostKernel is what HostNet needs from the kernel; netlinkKernel is the
// real one.
type hostKernel interface {
	observe() (hostObserved, error)
	indexOf(name string) (index int, found bool, err error)
	addVLAN(name string, parentIndex, id, mtu int, alias string) error
	addShim(name string, parentIndex, mtu int, alias string) error
	del(index int) error
	setAlias(index int, alias string) error
	setUp(index int) error
	setMTU(index, mtu int) error
	setPromisc(index int, on bool) error
	addAddr(index int, p netip.Prefix) error
	delAddr(index int, p netip.Prefix) error
	addRoute(index int, dst netip.Prefix) error
	delRoute(index int, dst netip.Prefix, scope, proto, metric int) error
	subscribe(done <-chan struct{}, wg *sync.WaitGroup, rcvbuf int, force bool, ev func(hostEvent), lost func(error)) error
	writeCount() int64
	close()
}

func newHostNet(k hostKernel) *HostNet {
	return &HostNet{k: k, promisc: map[string]bool{}, watchRcvBuf: netlinkRcvBuf}
}

// Close releases the netlink handle NewHostNetAt opened; a handle given to
// NewHostNet stays the caller's.
func (h *HostNet) Close() { h.k.close() }

// hostMaxPasses bounds the observe-plan-execute passes of one Ensure. One
// pass normally converges; a second catches what the kernel did on its own
// meanwhile (a shim deleted with its parent).
const hostMaxPasses = 3

// Ensure converges the kernel to exactly want for the links this reconciler
// owns: it creates and repairs what is wanted and removes owned links (and
// their routes) of VLANs no longer wanted. It never touches unowned links,
// except to bring a trunk up and switch promiscuous mode on the parent in
// use; promiscuous mode is switched off again only on a trunk where this
// HostNet switched it on.
//
// The status map has an entry per wanted VLAN. Problems that retrying cannot
// fix (no 802.1Q support, a foreign link holding a wanted name, a missing
// trunk) are reported there only; the error joins the failures worth a retry.
// Once converged, a call with the same want makes no netlink writes; a step
// that failed (an 802.1Q link the kernel refused) is tried again each call.
func (h *HostNet) Ensure(ctx context.Context, want []HostVLAN) (map[string]HostNetStatus, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	failed := map[string]hostFailure{}
	var errs []error
	var have hostObserved
	var plan []linkAction
	for pass := 0; ; pass++ {
		var err error
		if have, err = h.observe(); err != nil {
			return nil, fmt.Errorf("host network: observe: %w", err)
		}
		plan = hostPlan(want, have)
		if !hostPending(plan, failed) {
			break
		}
		if pass == hostMaxPasses {
			errs = append(errs, fmt.Errorf("host network: not converged after %d passes: %s", pass, hostFirstPending(plan, failed)))
			break
		}
		if err := h.execute(ctx, plan, failed, &errs); err != nil {
			return nil, err
		}
	}
	wanted := make(map[string]bool, len(want))
	for _, v := range want {
		wanted[v.Name] = true
	}
	for _, a := range plan {
		if a.Op == linkBlock && !wanted[a.VLAN] {
			errs = append(errs, fmt.Errorf("vlan %q: %s", a.VLAN, a.Why))
		}
	}
	h.interest.Store(hostInterestOf(want, have))
	return hostStatuses(want, plan, failed), errors.Join(errs...)
}

// observe reads the kernel and adds what only memory knows: the trunks whose
// promiscuous mode this reconciler switched on. A trunk that vanished or was
// switched off by someone else is forgotten.
func (h *HostNet) observe() (hostObserved, error) {
	have, err := h.k.observe()
	if err != nil {
		return hostObserved{}, err
	}
	promisc := make(map[string]bool, len(have.Links))
	for _, l := range have.Links {
		promisc[l.Name] = l.Promisc
	}
	have.PromiscSet = make(map[string]bool, len(h.promisc))
	for n := range h.promisc {
		if !promisc[n] {
			delete(h.promisc, n)
			continue
		}
		have.PromiscSet[n] = true
	}
	return have, nil
}

// hostPending says whether plan still writes for a VLAN that has not failed.
func hostPending(plan []linkAction, failed map[string]hostFailure) bool {
	return hostFirstPending(plan, failed) != ""
}

func hostFirstPending(plan []linkAction, failed map[string]hostFailure) string {
	for _, a := range plan {
		if _, bad := failed[a.VLAN]; a.writes() && !bad {
			return a.Why
		}
	}
	return ""
}

// execute runs the plan's writes in order. After a VLAN's first failure its
// later steps are skipped, since they build on the failed one; other VLANs
// carry on. Only a cancelled ctx stops the whole plan.
func (h *HostNet) execute(ctx context.Context, plan []linkAction, failed map[string]hostFailure, errs *[]error) error {
	for _, a := range plan {
		if _, bad := failed[a.VLAN]; !a.writes() || bad {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("host network: %w", err)
		}
		err := h.apply(a)
		if err == nil {
			continue
		}
		reason := a.verb() + ": " + err.Error()
		if errors.Is(err, hostErrNo8021Q) {
			// Terminal on this kernel: reported, not retried.
			reason = hostReasonNo8021Q
		} else if a.VLAN != "" {
			*errs = append(*errs, fmt.Errorf("vlan %q: %s: %w", a.VLAN, a.verb(), err))
		} else {
			*errs = append(*errs, fmt.Errorf("host network: %s: %w", a.verb(), err))
		}
		failed[a.VLAN] = hostFailure{Part: a.Part, Reason: reason}
	}
	return nil
}

// apply executes one step. Steps on a link made earlier in the same plan find
// it by name; a link that is gone is deleted already.
func (h *HostNet) apply(a linkAction) error {
	index := a.Index
	switch a.Op {
	case linkCreateVLAN, linkCreateShim:
		parent, found, err := h.k.indexOf(a.Parent)
		if err != nil {
			return fmt.Errorf("find parent %s: %w", a.Parent, err)
		}
		if !found {
			return fmt.Errorf("parent %s not found", a.Parent)
		}
		if a.Op == linkCreateVLAN {
			return h.k.addVLAN(a.Link, parent, a.VlanID, a.MTU, a.Alias)
		}
		return h.k.addShim(a.Link, parent, a.MTU, a.Alias)
	}
	if index == 0 {
		i, found, err := h.k.indexOf(a.Link)
		if err != nil {
			return fmt.Errorf("find %s: %w", a.Link, err)
		}
		if !found {
			if a.Op == linkDelete {
				return nil
			}
			return fmt.Errorf("link %s not found", a.Link)
		}
		index = i
	}
	switch a.Op {
	case linkDelete:
		return h.k.del(index)
	case linkSetAlias:
		return h.k.setAlias(index, a.Alias)
	case linkSetUp:
		return h.k.setUp(index)
	case linkSetMTU:
		return h.k.setMTU(index, a.MTU)
	case linkSetPromisc:
		if err := h.k.setPromisc(index, a.On); err != nil {
			return err
		}
		if a.Foreign && a.On {
			h.promisc[a.Link] = true
		} else if a.Foreign {
			delete(h.promisc, a.Link)
		}
		return nil
	case linkAddAddr:
		return h.k.addAddr(index, a.Addr)
	case linkDelAddr:
		return h.k.delAddr(index, a.Addr)
	case linkAddRoute:
		return h.k.addRoute(index, a.Addr)
	case linkDelRoute:
		return h.k.delRoute(index, a.Addr, a.Scope, a.Proto, a.Metric)
	}
	return fmt.Errorf("unknown step %d", a.Op)
}

// writes is the number of netlink write requests made so far.
func (h *HostNet) writes() int64 { return h.k.writeCount() }

const (
	hostWatchBackoffMin = 100 * time.Millisecond
	hostWatchBackoffMax = 10 * time.Second
	// hostWatchHealthy is how long a subscription must have lasted for its
	// loss to count as a one-off, subscribed again after the least backoff.
	hostWatchHealthy = time.Second
)

// Watch subscribes to link, address and route notifications in the
// reconciler's namespace and signals on the returned channel (capacity 1,
// coalesced, never blocking the subscriptions) whenever one may concern the
// state the last Ensure converged. It also signals once each subscription is
// in place, since changes before it went unseen, and whenever notifications
// may have been lost (ENOBUFS, any subscription error): it then subscribes
// again, with capped, jittered backoff while that fails. A caller that calls
// Ensure on every signal therefore misses nothing. The channel is closed
// after ctx is done and the subscriptions have ended.
func (h *HostNet) Watch(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	go h.watch(ctx, out)
	return out
}

func (h *HostNet) watch(ctx context.Context, out chan struct{}) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		close(out)
	}()
	notify := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	backoff := hostWatchBackoffMin
	for {
		done := make(chan struct{})
		lost := make(chan struct{}, 1)
		started := time.Now()
		err := h.k.subscribe(done, &wg, h.watchRcvBuf, h.watchForce,
			func(e hostEvent) {
				if h.interest.Load().concerns(e) {
					notify()
				}
			},
			func(error) {
				select {
				case lost <- struct{}{}:
				default:
				}
			})
		if err == nil {
			h.subscriptions.Add(1)
			notify()
			select {
			case <-ctx.Done():
				close(done)
				return
			case <-lost:
			}
			h.resubscribes.Add(1)
			if time.Since(started) >= hostWatchHealthy {
				backoff = hostWatchBackoffMin
			}
		}
		close(done)
		// Notifications may have been missed; a resync costs one Ensure.
		notify()
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, hostWatchBackoffMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
