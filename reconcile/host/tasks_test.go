package host

import (
	"reflect"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
)

func TestRunningTasks(t *testing.T) {
	ctr := func(service, name, id, state string, nets map[string]string) container.Summary {
		c := container.Summary{State: state, Labels: map[string]string{
			registrationLabelServiceName: service, registrationLabelTaskName: name, registrationLabelTaskID: id}}
		c.NetworkSettings = &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{}}
		for n, a := range nets {
			c.NetworkSettings.Networks[n] = &network.EndpointSettings{IPAddress: a}
		}
		return c
	}
	got := runningTasks([]container.Summary{
		ctr("web", "web.2.t2", "t2", "running", map[string]string{"vlan80": "172.80.1.3", "bridge": ""}),
		ctr("web", "web.1.t1", "t1", "running", map[string]string{"vlan80": "172.80.1.2"}),
		ctr("edge", "edge.nodeid.t7", "t7", "running", nil),
		ctr("web", "web.3.t3", "t3", "exited", map[string]string{"vlan80": "172.80.1.4"}),
		{State: "running", Labels: map[string]string{}}, // not a task
	})
	want := []RunningTask{
		{ID: "t7", Service: "edge"},
		{ID: "t1", Service: "web", Slot: 1, Addresses: map[string]string{"vlan80": "172.80.1.2"}},
		{ID: "t2", Service: "web", Slot: 2, Addresses: map[string]string{"vlan80": "172.80.1.3"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("runningTasks = %+v\nwant %+v", got, want)
	}
}
