package host

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"swarmvlan/reconcile/kernel"
	"swarmvlan/spec"
	"swarmvlan/state"
	"swarmvlan/state/backoff"
	"sync"
	"sync/atomic"
	"time"
)

// Net converges this host's kernel state for its VLANs: the 802.1Q
// sub-interface, promiscuous mode, and the shim with its address and route.
// It owns the links it makes (alias "swarmvlan:<vlan>") and no others.
type Net struct {
	k Kernel

	mu sync.Mutex // one Ensure at a time; guards promisc
	// promisc names the trunks whose promiscuous mode this reconciler
	// switched on; kept in memory only, so after a restart a trunk stays
	// promiscuous rather than being switched off under someone else.
	promisc map[string]bool

	interest atomic.Pointer[linkInterest]
	// last is the kernel as the latest Ensure left it.
	last atomic.Pointer[kernel.Observed]

	// watchRcvBuf and watchForce size the subscription sockets; tests
	// shrink them to provoke ENOBUFS.
	watchRcvBuf int
	watchForce  bool
	// subscriptions and resubscribes count Watch's successful subscriptions
	// and the times one was lost, for tests.
	subscriptions atomic.Int64
	resubscribes  atomic.Int64
}

// Kernel is what Net needs from the kernel; Netlink is the real
// one.
type Kernel interface {
	Observe() (kernel.Observed, error)
	IndexOf(name string) (index int, found bool, err error)
	AddVLAN(name string, parentIndex, id, mtu int, alias string) error
	AddShim(name string, parentIndex, mtu int, alias string) error
	AddIPvlanShim(name string, parentIndex, mtu int, mode, alias string) error
	Del(index int) error
	SetAlias(index int, alias string) error
	SetUp(index int) error
	SetMTU(index, mtu int) error
	SetPromisc(index int, on bool) error
	AddAddr(index int, p netip.Prefix) error
	DelAddr(index int, p netip.Prefix) error
	AddRoute(index int, dst netip.Prefix) error
	DelRoute(index int, dst netip.Prefix, scope, proto, metric int) error
	Subscribe(done <-chan struct{}, wg *sync.WaitGroup, rcvbuf int, force bool, ev func(kernel.Event), lost func(error)) error
	WriteCount() int64
	Close()
}

// NewNet returns the host network reconciler acting through k.
func NewNet(k Kernel) *Net {
	return &Net{k: k, promisc: map[string]bool{}, watchRcvBuf: kernel.RcvBuf}
}

// Close closes the kernel adapter (see Netlink.Close).
func (h *Net) Close() { h.k.Close() }

// maxPasses bounds the observe-plan-execute passes of one Ensure. One
// pass normally converges; a second catches what the kernel did on its own
// meanwhile (a shim deleted with its parent).
const maxPasses = 3

// Ensure converges the kernel to exactly want for the links this reconciler
// owns: it creates and repairs what is wanted and removes owned links (and
// their routes) of VLANs no longer wanted. It never touches unowned links,
// except to bring a trunk up and switch promiscuous mode on the parent in
// use; promiscuous mode is switched off again only on a trunk where this
// Net switched it on.
//
// The status map has an entry per wanted VLAN. Problems that retrying cannot
// fix (no 802.1Q support, a foreign link holding a wanted name, a missing
// trunk) are reported there only; the error joins the failures worth a retry.
// Once converged, a call with the same want makes no netlink writes; a step
// that failed (an 802.1Q link the kernel refused) is tried again each call.
func (h *Net) Ensure(ctx context.Context, want []VLAN) (map[string]NetStatus, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	failed := map[string]linkFailure{}
	var errs []error
	var have kernel.Observed
	var plan []linkAction
	for pass := 0; ; pass++ {
		var err error
		if have, err = h.observe(); err != nil {
			return nil, fmt.Errorf("host network: observe: %w", err)
		}
		plan = planLinks(want, have)
		if !planPending(plan, failed) {
			break
		}
		if pass == maxPasses {
			errs = append(errs, fmt.Errorf("host network: not converged after %d passes: %s", pass, firstPending(plan, failed)))
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
	h.interest.Store(interestOf(want, have))
	h.last.Store(&have)
	return linkStatuses(want, plan, failed), errors.Join(errs...)
}

// HandMadeShims lists, as the latest Ensure observed them, the macvlan
// links on the named parents that swarmvlan did not make.
func (h *Net) HandMadeShims(parents map[string]bool) []state.NodeShim {
	have := h.last.Load()
	if have == nil || len(parents) == 0 {
		return nil
	}
	return handMadeShims(*have, parents)
}

// observe reads the kernel and adds what only memory knows: the trunks whose
// promiscuous mode this reconciler switched on. A trunk that vanished or was
// switched off by someone else is forgotten.
func (h *Net) observe() (kernel.Observed, error) {
	have, err := h.k.Observe()
	if err != nil {
		return kernel.Observed{}, err
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

// planPending says whether plan still writes for a VLAN that has not failed.
func planPending(plan []linkAction, failed map[string]linkFailure) bool {
	return firstPending(plan, failed) != ""
}

func firstPending(plan []linkAction, failed map[string]linkFailure) string {
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
func (h *Net) execute(ctx context.Context, plan []linkAction, failed map[string]linkFailure, errs *[]error) error {
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
		if errors.Is(err, kernel.ErrNo8021Q) {
			// Terminal on this kernel: reported, not retried.
			reason = reasonNo8021Q
		} else if a.VLAN != "" {
			*errs = append(*errs, fmt.Errorf("vlan %q: %s: %w", a.VLAN, a.verb(), err))
		} else {
			*errs = append(*errs, fmt.Errorf("host network: %s: %w", a.verb(), err))
		}
		failed[a.VLAN] = linkFailure{Part: a.Part, Reason: reason}
	}
	return nil
}

// apply executes one step. Steps on a link made earlier in the same plan find
// it by name; a link that is gone is deleted already.
func (h *Net) apply(a linkAction) error {
	index := a.Index
	switch a.Op {
	case linkCreateVLAN, linkCreateShim:
		parent, found, err := h.k.IndexOf(a.Parent)
		if err != nil {
			return fmt.Errorf("find parent %s: %w", a.Parent, err)
		}
		if !found {
			return fmt.Errorf("parent %s not found", a.Parent)
		}
		if a.Op == linkCreateVLAN {
			return h.k.AddVLAN(a.Link, parent, a.VlanID, a.MTU, a.Alias)
		}
		if a.Kind == spec.DriverIPvlan {
			return h.k.AddIPvlanShim(a.Link, parent, a.MTU, a.Mode, a.Alias)
		}
		return h.k.AddShim(a.Link, parent, a.MTU, a.Alias)
	}
	if index == 0 {
		i, found, err := h.k.IndexOf(a.Link)
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
		return h.k.Del(index)
	case linkSetAlias:
		return h.k.SetAlias(index, a.Alias)
	case linkSetUp:
		return h.k.SetUp(index)
	case linkSetMTU:
		return h.k.SetMTU(index, a.MTU)
	case linkSetPromisc:
		if err := h.k.SetPromisc(index, a.On); err != nil {
			return err
		}
		if a.Foreign && a.On {
			h.promisc[a.Link] = true
		} else if a.Foreign {
			delete(h.promisc, a.Link)
		}
		return nil
	case linkAddAddr:
		return h.k.AddAddr(index, a.Addr)
	case linkDelAddr:
		return h.k.DelAddr(index, a.Addr)
	case linkAddRoute:
		return h.k.AddRoute(index, a.Addr)
	case linkDelRoute:
		return h.k.DelRoute(index, a.Addr, a.Scope, a.Proto, a.Metric)
	}
	return fmt.Errorf("unknown step %d", a.Op)
}

// writes is the number of netlink write requests made so far.
func (h *Net) writes() int64 { return h.k.WriteCount() }

const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 10 * time.Second
	// watchHealthy is how long a subscription must have lasted for its
	// loss to count as a one-off, subscribed again after the least backoff.
	watchHealthy = time.Second
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
func (h *Net) Watch(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	go h.watch(ctx, out)
	return out
}

func (h *Net) watch(ctx context.Context, out chan struct{}) {
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
	bo := backoff.New(watchBackoffMin, watchBackoffMax)
	for {
		done := make(chan struct{})
		lost := make(chan struct{}, 1)
		started := time.Now()
		err := h.k.Subscribe(done, &wg, h.watchRcvBuf, h.watchForce,
			func(e kernel.Event) {
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
			if time.Since(started) >= watchHealthy {
				bo.Reset()
			}
		}
		close(done)
		// Notifications may have been missed; a resync costs one Ensure.
		notify()
		if !backoff.Sleep(ctx, bo.Next()) {
			return
		}
	}
}
