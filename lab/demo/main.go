// Command demo is a developer tool (go run ./lab/demo up|down, or make demo
// and make demo-down): it brings up three lab hosts on this machine (network
// namespaces, each with its own dockerd and Consul agent, forming one swarm
// and one Consul cluster), starts `reconciler run` on each, applies
// examples/demo/, waits until the service's tasks pass in Consul, and shows
// where to look. The cluster outlives the command; `down` removes it.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/spec"
	"swarmvlan/state"
)

const usage = `usage: go run ./lab/demo up          bring up the demo cluster
       go run ./lab/demo down [ID...]  remove demo clusters (default: every one)
`

// demoDir holds the documents the demo applies, relative to the module root.
const demoDir = "examples/demo"

// convergeTimeout bounds the wait for the demo's tasks to pass in Consul.
const convergeTimeout = 5 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, os.Stdout)
	case "down":
		err = down(os.Args[2:], os.Stdout)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// up brings the demo up, and removes whatever it made if any step fails.
func up(ctx context.Context, w io.Writer) error {
	root, err := lab.ModuleRoot()
	if err != nil {
		return err
	}
	docs, err := readDemo(filepath.Join(root, demoDir))
	if err != nil {
		return err
	}
	if ids := lab.DetachedClusters(); len(ids) > 0 {
		fmt.Fprintf(w, "note: demo cluster(s) %s already up; `make demo-down` removes them\n", strings.Join(ids, ", "))
	}
	binDir, err := os.MkdirTemp("", "swarmvlan-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	fmt.Fprintln(w, "building the reconciler ...")
	built := filepath.Join(binDir, "reconciler")
	if err := goBuild(ctx, root, built); err != nil {
		return err
	}

	fmt.Fprintln(w, "starting 3 hosts (dockerd, Consul server, swarm manager each) ...")
	c, err := lab.StartClusterDetached(ctx, lab.ClusterOptions{Hosts: 3, Image: true}, func(f string, a ...any) {
		fmt.Fprintf(w, "  "+f+"\n", a...)
	})
	if err != nil {
		return err
	}
	if err := upCluster(ctx, w, c, built, docs); err != nil {
		if terr := lab.TeardownCluster(c.ID); terr != nil {
			err = errors.Join(err, terr)
		}
		return err
	}
	return nil
}

// demoDocs is what the demo applies and waits for.
type demoDocs struct {
	dir      string
	service  string // the Service document's name
	consul   string // the name its tasks are registered under
	replicas int
}

// readDemo reads the demo's documents and picks the Service it waits for.
func readDemo(dir string) (demoDocs, error) {
	d := demoDocs{dir: dir}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return d, err
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return d, err
		}
		objs, err := reconcile.ParseDocuments(data)
		if err != nil {
			return d, fmt.Errorf("%s: %w", e.Name(), err)
		}
		for _, o := range objs {
			if s, ok := o.Object.(*spec.Service); ok && s.Spec.Consul != nil && d.service == "" {
				d.service, d.consul = s.Metadata.Name, s.Spec.Consul.Service
				if d.consul == "" {
					d.consul = s.Metadata.Name
				}
				d.replicas = 1
				if s.Spec.Replicas != nil {
					d.replicas = *s.Spec.Replicas
				}
			}
		}
	}
	if d.service == "" {
		return d, fmt.Errorf("%s: no Service with a consul block", dir)
	}
	return d, nil
}

func upCluster(ctx context.Context, w io.Writer, c *lab.Cluster, built string, docs demoDocs) error {
	// The binary lives in the run directory, so the teardown removes it.
	bin := filepath.Join(c.Dir, "reconciler")
	if err := copyFile(built, bin); err != nil {
		return err
	}
	// Each reconciler listens on its host's management address, which
	// this machine reaches, so the dashboard opens in a browser here; a
	// listener beyond loopback wants a login, with this token.
	token, err := uiToken(filepath.Join(c.Dir, "ui-token"))
	if err != nil {
		return err
	}
	for _, h := range c.Hosts() {
		if _, err := h.StartDetached(bin, "run", "--role", "all", "--listen", net.JoinHostPort(h.Addr, dashboardPort), "--ui-token", token); err != nil {
			return err
		}
	}
	h1 := c.Host(1)
	out, err := h1.Exec(ctx, bin, "apply", "-f", docs.dir).CombinedOutput()
	fmt.Fprintf(w, "reconciler apply -f %s (in h1):\n%s", demoDir, indent(string(out)))
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}

	fmt.Fprintf(w, "waiting for %d tasks of %s to pass in Consul ...\n", docs.replicas, docs.service)
	cli, err := api.NewClient(&api.Config{Address: h1.ConsulAddr, Scheme: "http"})
	if err != nil {
		return err
	}
	begin := time.Now()
	addrs, err := waitPassing(ctx, cli, docs.consul, docs.replicas)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "converged in %s\n\n", time.Since(begin).Round(100*time.Millisecond))
	// The leader records the service's state a few seconds after the tasks
	// run; wait for it so the status below tells the same story.
	if err := waitStatusReady(ctx, cli, "swarmvlan/status/services/"+docs.service); err != nil {
		fmt.Fprintf(w, "note: %v\n", err)
	}

	out, err = h1.Exec(ctx, bin, "status").CombinedOutput()
	if err != nil {
		return fmt.Errorf("status: %w: %s", err, out)
	}
	fmt.Fprintf(w, "reconciler status:\n%s\n", indent(string(out)))
	fmt.Fprintf(w, "Consul, /v1/health/service/%s?passing:\n", docs.consul)
	for _, a := range addrs {
		fmt.Fprintf(w, "  %s\n", a)
	}
	printTour(w, c, bin, docs, token)
	return nil
}

// dashboardPort is where each demo host's reconciler serves HTTP.
const dashboardPort = "8480"

// uiToken makes the dashboard's login token and keeps it in path (the
// cluster's run directory, removed with it).
func uiToken(path string) (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", err
	}
	return token, nil
}

// waitPassing waits until exactly n instances of service pass in Consul
// and returns their addresses.
func waitPassing(ctx context.Context, cli *api.Client, service string, n int) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, convergeTimeout)
	defer cancel()
	var last string
	for {
		entries, _, err := cli.Health().Service(service, "", true, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil && len(entries) == n {
			var out []string
			for _, e := range entries {
				out = append(out, fmt.Sprintf("%s:%d  (node %s, task %s)", e.Service.Address, e.Service.Port, e.Node.Node,
					e.Service.Meta[state.MetaTask]))
			}
			sort.Strings(out)
			return out, nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d of %d passing", len(entries), n)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s not converged: %s (%w)", service, last, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// waitStatusReady waits until the status key says Ready, for up to a
// minute.
func waitStatusReady(ctx context.Context, cli *api.Client, key string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		p, _, err := cli.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil && p != nil {
			var st state.Status
			if json.Unmarshal(p.Value, &st) == nil {
				for _, c := range st.Conditions {
					if c.Type == "Ready" && c.Status == "True" {
						return nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not Ready yet", key)
		case <-time.After(time.Second):
		}
	}
}

// printTour says how to look around and how to tear down.
func printTour(w io.Writer, c *lab.Cluster, bin string, docs demoDocs, token string) {
	consul, _ := lab.ConsulBinary()
	h1 := c.Host(1)
	ns := func(h *lab.Host) string { return "sudo nsenter --net=" + h.Netns + " --" }
	dash := func(h *lab.Host) string { return net.JoinHostPort(h.Addr, dashboardPort) }
	fmt.Fprintf(w, `
Demo cluster %s is up: hosts h1, h2, h3 (%s), each a network namespace with
its own dockerd, Consul server and reconciler (run --role all); the VLAN rides
on each host's trunk0, a veth into the bridge %s.

Look around (the same works on h2 and h3):
  %s docker -H %s service ps %s
  %s docker -H %s network inspect %s %s-config
  %s env CONSUL_HTTP_ADDR=127.0.0.1:8500 %s members
  %s ip -d link show; %s ip route
  %s %s status
  curl http://%s/v1/health/service/%s?passing
  tail -f %s/h1/reconciler-1.log

Change something, for example scale through the document:
  sed 's/replicas: %d/replicas: 5/' %s/web.yaml | %s %s apply -f -

Dashboard (every manager serves it; the page says which one leads):
  http://%s/   log in with the token %s (kept in %s/ui-token)
  the same on h2 and h3: %s
  JSON: curl -H 'Authorization: Bearer %s' http://%s/v1/overview
  The hosts' management addresses are reached from this machine only; from
  elsewhere, tunnel: ssh -L %s:%s this-machine, then http://localhost:%s/

Tear down: make demo-down   (or: go run ./lab/demo down %s)
`,
		c.ID, c.Subnet, c.TrunkBridge,
		ns(h1), h1.DockerHost, docs.service,
		ns(h1), h1.DockerHost, "vlan80", "vlan80",
		ns(h1), consul,
		ns(h1), ns(h1),
		ns(h1), bin,
		h1.ConsulAddr, docs.consul,
		c.Dir,
		docs.replicas, demoDir, ns(h1), bin,
		dash(h1), token, c.Dir, strings.Join([]string{"http://" + dash(c.Host(2)) + "/", "http://" + dash(c.Host(3)) + "/"}, ", "),
		token, dash(h1),
		dashboardPort, dash(h1), dashboardPort,
		c.ID)
}

// down tears down the given demo clusters, or every detached one.
func down(ids []string, w io.Writer) error {
	if len(ids) == 0 {
		ids = lab.DetachedClusters()
	}
	if len(ids) == 0 {
		fmt.Fprintln(w, "no demo cluster is up")
		return nil
	}
	var errs []error
	for _, id := range ids {
		if err := lab.TeardownCluster(id); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "demo cluster %s removed\n", id)
	}
	return errors.Join(errs...)
}

// goBuild builds a static reconciler binary at out.
func goBuild(ctx context.Context, root, out string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build reconciler: %w", err)
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, "./cmd/reconciler")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build reconciler: %w\n%s", err, b)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}
