package ipam

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
)

// stickyDoc is a sticky service of three replicas, with Swarm's default
// restart delay (5 s): the leader reserves the slot's address meanwhile.
func stickyDoc(name string) string {
	return strings.Replace(serviceDoc(name, 3, "", false), "  restart: {condition: any, delay: 1s}\n", "  addresses: sticky\n", 1)
}

// slotAddrs maps each running task's slot to its address and host.
func slotAddrs(ctx context.Context, b *bed.Bed, service string) (map[int]bed.Task, error) {
	running, err := b.Running(ctx, service)
	if err != nil {
		return nil, err
	}
	byID := map[string]bed.Task{}
	for _, t := range running {
		byID[t.TaskID] = t
	}
	ts, err := b.Mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", service), filters.Arg("desired-state", "running"))})
	if err != nil {
		return nil, err
	}
	out := map[int]bed.Task{}
	for _, t := range ts {
		if r, ok := byID[t.ID]; ok {
			out[t.Slot] = r
		}
	}
	return out, nil
}

// setAvailability sets the swarm availability of the nodes of hosts.
func setAvailability(s *bed.Bed, hosts []*lab.Host, a swarm.NodeAvailability) error {
	for _, h := range hosts {
		n, _, err := s.Mgr.NodeInspectWithRaw(s.Ctx, h.ID)
		if err != nil {
			return err
		}
		n.Spec.Availability = a
		if err := s.Mgr.NodeUpdate(s.Ctx, n.ID, n.Version, n.Spec); err != nil {
			return fmt.Errorf("node %s: availability %s: %w", h.Name, a, err)
		}
	}
	return nil
}

// checkSticky: a task of a sticky service killed is replaced with its
// slot's address, on the same host and on another one. Which host Swarm
// picks is steered by pausing the others (or the task's own): paused
// nodes keep their tasks and get no new one. One task is replaced at a
// time, so it is unambiguous which task is starting; anything but the
// slot's address is a failure.
func checkSticky(t *testing.T, s *bed.Bed) {
	s.Apply(vlanDoc("cluster"), stickyDoc("st"))
	var slots map[int]bed.Task
	s.WaitFor("sticky service running, slots recorded", 4*time.Minute, func(ctx context.Context) error {
		if _, err := checkCluster(ctx, s, "st", 3, false); err != nil {
			return err
		}
		var err error
		if slots, err = slotAddrs(ctx, s, "st"); err != nil {
			return err
		}
		if len(slots) != 3 {
			return fmt.Errorf("slots %v", slots)
		}
		ls, err := leases(ctx, s)
		if err != nil {
			return err
		}
		for slot, tk := range slots {
			if l := ls[tk.Addr]; l.Service != "st" || l.Slot != slot {
				return fmt.Errorf("lease %s of slot %d records %q slot %d", tk.Addr, slot, l.Service, l.Slot)
			}
		}
		return nil
	})
	hosts := s.Cluster.Hosts()
	t.Cleanup(func() {
		if err := setAvailability(s, hosts, swarm.NodeAvailabilityActive); err != nil {
			t.Error(err)
		}
	})
	reused := 0
	rounds := []struct {
		name     string
		slot     int
		sameHost bool
	}{{"same host", 2, true}, {"another host", 3, false}}
	for _, r := range rounds {
		old := slots[r.slot]
		var oldHost *lab.Host
		var others []*lab.Host
		for _, h := range hosts {
			if h.Name == old.Host {
				oldHost = h
			} else {
				others = append(others, h)
			}
		}
		if oldHost == nil {
			t.Fatalf("slot %d runs on %s, not a host of the bed", r.slot, old.Host)
		}
		paused := []*lab.Host{oldHost}
		if r.sameHost {
			paused = others
		}
		if err := setAvailability(s, paused, swarm.NodeAvailabilityPause); err != nil {
			t.Fatal(err)
		}
		if err := s.Docker(oldHost).ContainerKill(s.Ctx, old.Container, "KILL"); err != nil {
			t.Fatal(err)
		}
		var tk bed.Task
		s.WaitFor(fmt.Sprintf("slot %d replaced (%s)", r.slot, r.name), 3*time.Minute, func(ctx context.Context) error {
			now, err := slotAddrs(ctx, s, "st")
			if err != nil {
				return err
			}
			var ok bool
			if tk, ok = now[r.slot]; !ok || tk.Container == old.Container {
				return fmt.Errorf("slot %d not replaced yet", r.slot)
			}
			slots = now
			return nil
		})
		if err := setAvailability(s, paused, swarm.NodeAvailabilityActive); err != nil {
			t.Fatal(err)
		}
		if (tk.Host == old.Host) != r.sameHost {
			t.Fatalf("slot %d (%s): killed on %s, replaced on %s", r.slot, r.name, old.Host, tk.Host)
		}
		if tk.Addr != old.Addr {
			t.Errorf("slot %d (%s): killed on %s, replaced on %s with %s, its address was %s", r.slot, r.name, old.Host, tk.Host, tk.Addr, old.Addr)
			continue
		}
		reused++
		t.Logf("slot %d (%s): killed on %s, replaced on %s with its address %s", r.slot, r.name, old.Host, tk.Host, tk.Addr)
	}
	for _, hh := range s.Cluster.Hosts() {
		if p := s.Proc(hh); p != nil {
			for _, line := range strings.Split(p.Logs(), "\n") {
				if strings.Contains(line, "sticky") {
					t.Logf("%s host role: %s", hh.Name, line)
				}
			}
		}
	}
	lab.Figure(t, "ipam sticky_reuse_rate", fmt.Sprintf("%d of %d replacements (same host, another host) got their slot's address (%.0f%%)",
		reused, len(rounds), 100*float64(reused)/float64(len(rounds))))
	if _, err := checkCluster(s.Ctx, s, "st", 3, false); err != nil {
		t.Error(err)
	}
	deleteService(s, "st")
}
