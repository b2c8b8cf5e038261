package lab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// detachedHelperEnv makes the test binary, run again by
// TestClusterDetached, start a detached cluster, print its id and exit.
const detachedHelperEnv = "SWARMVLAN_LAB_DETACHED_HELPER"

// TestDetachedHelper is not a test of its own: it is the process that
// TestClusterDetached starts, and it only does something when told to.
func TestDetachedHelper(t *testing.T) {
	if os.Getenv(detachedHelperEnv) != "1" {
		t.Skip("helper process of TestClusterDetached")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := StartClusterDetached(ctx, ClusterOptions{Hosts: 1}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Host(1).StartDetached("sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("cluster-id=%s sleep-pid=%d\n", c.ID, p.Pid())
}

// TestClusterDetached starts a detached cluster from another process that
// then exits, checks that the cluster and a process started in it outlive
// that process and a CleanupStale, and that TeardownCluster removes every
// trace of it.
func TestClusterDetached(t *testing.T) {
	requireClusterTools(t)
	if _, err := ConsulBinary(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDetachedHelper$", "-test.v")
	cmd.Env = append(os.Environ(), detachedHelperEnv+"=1")
	out, runErr := cmd.CombinedOutput()
	var id string
	var sleepPid int
	for _, line := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(line, "cluster-id=%s sleep-pid=%d", &id, &sleepPid); err == nil {
			break
		}
	}
	if id != "" {
		t.Cleanup(func() {
			if err := TeardownCluster(id); err != nil {
				t.Errorf("teardown: %v", err)
			}
		})
	}
	if runErr != nil || id == "" {
		t.Fatalf("helper: %v\n%s", runErr, out)
	}

	info, err := ReadClusterInfo(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Hosts) != 1 || info.Hosts[0].Name != "h1" || !info.Hosts[0].Manager {
		t.Fatalf("cluster info: %+v", info)
	}
	if ids := DetachedClusters(); !containsString(ids, id) {
		t.Errorf("DetachedClusters() = %v, want it to list %s", ids, id)
	}
	// The process that started it is gone; a stale-run sweep (every test
	// cluster does one) must leave it alone.
	if err := CleanupStale(); err != nil {
		t.Logf("CleanupStale: %v", err)
	}
	cli, err := newDockerClient(info.Hosts[0].DockerHost)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	dinfo, err := cli.Info(ctx)
	if err != nil {
		t.Fatalf("dockerd of the detached cluster after its starter exited: %v", err)
	}
	if dinfo.Name != "h1" || dinfo.Swarm.LocalNodeState != "active" {
		t.Errorf("docker info: name %q, swarm %q", dinfo.Name, dinfo.Swarm.LocalNodeState)
	}
	if err := syscall.Kill(sleepPid, 0); err != nil {
		t.Errorf("process started with StartDetached is gone: %v", err)
	} else if sid, _ := getsid(sleepPid); sid != sleepPid {
		t.Errorf("detached process %d is in session %d, want its own", sleepPid, sid)
	}
	if err := getJSON(ctx, &http.Client{Timeout: 5 * time.Second}, "http://"+info.Hosts[0].ConsulAddr+"/v1/status/leader", new(string)); err != nil {
		t.Errorf("consul of the detached cluster: %v", err)
	}

	// A test's cluster is not detached: TeardownCluster refuses it while
	// its test runs, and StartDetached refuses to start in it.
	if err := TeardownCluster("abc"); err == nil {
		t.Error("TeardownCluster accepted a malformed id")
	}

	if err := TeardownCluster(id); err != nil {
		t.Fatal(err)
	}
	if left := RunLeftovers(id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := os.Stat(filepath.Join(labRunRoot, id)); !os.IsNotExist(err) {
		t.Errorf("run directory: %v", err)
	}
	if err := syscall.Kill(sleepPid, 0); err == nil && processState(sleepPid) != "Z" {
		t.Errorf("process %d survived the teardown", sleepPid)
	}
}

// TestStartDetachedRefusedInTestCluster checks that a test's cluster keeps
// every process tied to the test.
func TestStartDetachedRefusedInTestCluster(t *testing.T) {
	c := StartCluster(t, ClusterOptions{Hosts: 1})
	if p, err := c.Host(1).StartDetached("sleep", "1000"); err == nil {
		p.Kill()
		t.Fatal("StartDetached started a process in a test's cluster")
	}
	if err := TeardownCluster(c.ID); err == nil {
		t.Fatal("TeardownCluster tore down a live test's cluster")
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// getsid returns the session id of pid, field 6 of /proc/<pid>/stat.
func getsid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 4 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.Atoi(f[3])
}
