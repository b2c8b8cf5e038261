package host

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/docker/docker/api/types/container"
)

// RunningTask is one running task container on a node with its addresses,
// as the node's host role reports it in status/tasks/<node ID>: the leader
// sees the tasks of every node but their VLAN addresses only on its own
// (swarm leaves node-local networks' addresses to each node's engine).
type RunningTask struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Slot    int    `json:"slot,omitempty"`
	// Addresses maps each network the container is on to its address.
	Addresses map[string]string `json:"addresses,omitempty"`
}

// TaskReport is the details of status/tasks/<node ID>.
type TaskReport struct {
	// Summary is the line `reconciler status` shows.
	Summary  string        `json:"summary"`
	Hostname string        `json:"hostname"`
	Tasks    []RunningTask `json:"tasks"`
}

// NewTaskReport is the report of hostname's running tasks.
func NewTaskReport(hostname string, tasks []RunningTask) *TaskReport {
	return &TaskReport{Summary: fmt.Sprintf("%d task container(s) running", len(tasks)), Hostname: hostname, Tasks: tasks}
}

// runningTasks lists the task containers among ctrs with their addresses,
// in service, slot and ID order. Pure.
func runningTasks(ctrs []container.Summary) []RunningTask {
	out := []RunningTask{}
	for _, c := range ctrs {
		id, service := c.Labels[registrationLabelTaskID], c.Labels[registrationLabelServiceName]
		if id == "" || service == "" || c.State != "running" {
			continue
		}
		t := RunningTask{ID: id, Service: service}
		t.Slot, _ = strconv.Atoi(registrationSlot(c.Labels[registrationLabelTaskName], service, id))
		if c.NetworkSettings != nil {
			for name, ep := range c.NetworkSettings.Networks {
				if ep != nil && ep.IPAddress != "" {
					if t.Addresses == nil {
						t.Addresses = map[string]string{}
					}
					t.Addresses[name] = ep.IPAddress
				}
			}
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Slot != b.Slot {
			return a.Slot < b.Slot
		}
		return a.ID < b.ID
	})
	return out
}

// Running returns the task containers the last Sync saw running on this
// node (nil before the first).
func (r *Registrar) Running() []RunningTask {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}
