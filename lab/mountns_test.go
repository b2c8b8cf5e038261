package lab

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMountNamespace: with ClusterOptions.MountNamespace each host's
// /var/run/docker.sock, seen from the host's mount namespace (where its
// dockerd, containerd and containers run), is that host's Engine, and the
// machine's own socket is untouched; a boot empties the host's /run, as a
// real boot's tmpfs does, and the socket answers again; teardown leaves no
// mount behind.
func TestMountNamespace(t *testing.T) {
	requireClusterTools(t)
	machineName, machineErr := exec.Command("docker", "-H", "unix://"+DockerSocketPath, "info", "--format", "{{.Name}}").Output()
	var id string
	t.Run("cluster", func(t *testing.T) {
		c := StartCluster(t, ClusterOptions{Hosts: 2, Managers: 1, ConsulServers: 1, MountNamespace: true})
		id = c.ID
		inHost := func(h *Host, args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			argv := append([]string{"--mount=" + h.mountns.file(), "--net=" + h.Netns, "--uts=" + h.uts, "--"}, args...)
			out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		for _, h := range c.Hosts() {
			out, err := inHost(h, "docker", "-H", "unix://"+DockerSocketPath, "info", "--format", "{{.Name}} {{.Swarm.NodeID}}")
			if err != nil || out != h.Name+" "+h.ID {
				t.Errorf("%s: %s in its mount namespace answers %q (%v), want %q", h.Name, DockerSocketPath, out, err, h.Name+" "+h.ID)
			}
		}
		h2 := c.Host(2)
		if _, err := inHost(h2, "sh", "-c", "echo x > /run/boot-marker"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat("/run/boot-marker"); err == nil {
			t.Error("a file made in h2's /run shows in the machine's /run")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := h2.Boot(ctx); err != nil {
			t.Fatal(err)
		}
		if out, err := inHost(h2, "ls", "-A", "/run"); err != nil || strings.Contains(out, "boot-marker") {
			t.Errorf("h2's /run after boot: %q (%v), want it emptied", out, err)
		}
		if out, err := inHost(h2, "docker", "-H", "unix://"+DockerSocketPath, "info", "--format", "{{.Name}}"); err != nil || out != h2.Name {
			t.Errorf("h2 after boot: %s answers %q (%v)", DockerSocketPath, out, err)
		}
	})
	if id == "" {
		t.Skip("no cluster was started")
	}
	if left := RunLeftovers(id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if machineErr == nil {
		now, err := exec.Command("docker", "-H", "unix://"+DockerSocketPath, "info", "--format", "{{.Name}}").Output()
		if err != nil || string(now) != string(machineName) {
			t.Errorf("the machine's %s answers %q (%v), was %q", DockerSocketPath, now, err, machineName)
		}
	}
}
