package spec

import "testing"

func TestAdoptionHash(t *testing.T) {
	base := func() *Service {
		return &Service{APIVersion: APIVersion, Kind: KindService, Metadata: ObjectMeta{Name: "stack-web"},
			Spec: ServiceSpec{Image: "web:1", DockerName: "stack_web", Networks: []string{"vlan40-net"}, Replicas: new(3)}}
	}
	h := AdoptionHash(base())
	same := base()
	same.Spec.Replicas = new(5)
	same.Spec.Scaling = &Scaling{Min: 1, Max: 6}
	same.Spec.Consul = &ConsulService{Port: 8080}
	if got := AdoptionHash(same); got != h {
		t.Errorf("replicas, scaling and consul changed the hash: %s != %s", got, h)
	}
	other := base()
	other.Spec.Env = map[string]string{"A": "1"}
	if AdoptionHash(other) == h {
		t.Error("a new environment variable did not change the hash")
	}
}

func TestDockerNames(t *testing.T) {
	v := &VLAN{Metadata: ObjectMeta{Name: "vlan40"}}
	if v.ConfigNetworkDockerName() != "vlan40-config" || v.NetworkDockerName() != "vlan40" {
		t.Errorf("default names %q %q", v.ConfigNetworkDockerName(), v.NetworkDockerName())
	}
	v.Spec.Docker = &VLANDockerNames{ConfigNetwork: "vlan40_net", Network: "swarm-vlan40_net"}
	if v.ConfigNetworkDockerName() != "vlan40_net" || v.NetworkDockerName() != "swarm-vlan40_net" {
		t.Errorf("names %q %q", v.ConfigNetworkDockerName(), v.NetworkDockerName())
	}
	s := &Service{Metadata: ObjectMeta{Name: "stack-web"}}
	if s.DockerServiceName() != "stack-web" {
		t.Error(s.DockerServiceName())
	}
	s.Spec.DockerName = "stack_web"
	if s.DockerServiceName() != "stack_web" {
		t.Error(s.DockerServiceName())
	}
}
