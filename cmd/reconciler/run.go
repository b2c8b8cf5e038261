package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/ipam"
	"swarmvlan/reconcile/overview"
	"swarmvlan/state"
	"swarmvlan/state/backoff"
)

// daemon is the state of one `reconciler run` process.
type daemon struct {
	role    string
	log     *slog.Logger
	store   *state.Store
	view    *reconcile.View
	leader  *reconcile.Controller
	cluster *cluster.Cluster
	docker  engine.Docker
	// fenced is the leader's view of docker: writes only under a provable
	// leadership (set while leading).
	fenced  *fencedDocker
	leading atomic.Bool
	ready   atomic.Bool
	http    *httpAPI
	ui      *overview.Handler

	// hookOnce wraps the leader controller's OnReconcile hook once, and
	// termStarted is set at the start of each leadership term until its
	// first reconcile is logged.
	hookOnce    sync.Once
	termStarted atomic.Bool

	leaderOpts state.LeaderOptions

	// hostEnqueue feeds the host role's agent, when it runs.
	hostEnqueue func([]reconcile.Key)

	// git is the GitOps sync, when --git-url is set.
	git *gitSync

	// ipamSocket is where the host role serves the IPAM plugin while the
	// node has a cluster-mode VLAN.
	ipamSocket string
}

func cmdRun(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	role := fs.String("role", "all", "manager (leader-elected cluster reconcilers), host (this node's kernel and Docker state) or all")
	listen := fs.String("listen", "", "HTTP address for /healthz, /readyz, /metrics and the scale API (empty: none; a manager then serves /healthz alone on an ephemeral loopback port, for its leader check)")
	api := registerAPIFlags(fs)
	gitFlags := registerGitFlags(fs)
	ui := registerUIFlags(fs)
	logFormat := fs.String("log-format", "text", "text or json")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	sessionTTL := fs.Duration("session-ttl", 10*time.Second, "TTL of the Consul session that holds this node's liveness key (Consul's minimum is 10s); the leader lock's session is bound to a health check instead")
	lockDelay := fs.Duration("lock-delay", state.DefaultLeaderLockDelay, "Consul lock delay after the leader's session is invalidated")
	resync := fs.Duration("resync", 5*time.Minute, "period of the full reconcile pass that catches drift")
	workers := fs.Int("workers", 4, "reconcile workers per role")
	dockerHost := fs.String("docker-host", "", "Docker Engine address (default: DOCKER_HOST or the local socket)")
	nodeName := fs.String("node-name", envOr("SWARMVLAN_NODE_NAME", ""), "name this process gives itself in the leader lock and logs (default: the hostname)")
	nodeDownGrace := fs.Duration("node-down-grace", time.Minute, "how long a node must be down in Swarm before the leader removes its tasks' entries from Consul's catalog")
	memLimit := fs.String("memory-limit", defaultMemoryLimit, "soft limit of the Go runtime's memory (as 100MiB or 1GiB; 0: none): past it the garbage collector runs sooner, so the memory a pass over every service needed for a moment is handed back; $GOMEMLIMIT, when set, wins over the default")
	ipamSocket := fs.String("ipam-socket", ipam.SocketPath, "the unix socket the host role serves swarmvlan's IPAM plugin on while the node has a VLAN in rangePlan.mode cluster (the Engine finds plugins under /run/docker/plugins/)")
	// A bad variable is reported after the command line is read, so run -h
	// still shows the help.
	envErr := flagsFromEnv(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: reconciler run [flags]\n\n"+
			"Every flag can also be set with the environment variable in brackets\n"+
			"(--session-ttl is $SWARMVLAN_SESSION_TTL); a flag given on the command line\n"+
			"wins. Scale API tokens can also come from $%s (comma-separated).\n\n", tokensEnv)
		fs.PrintDefaults()
	}
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if envErr != nil {
		return envErr
	}
	switch *role {
	case "manager", "host", "all":
	default:
		return fmt.Errorf("--role: must be manager, host or all, not %q", *role)
	}
	log, err := newLogger(*logFormat, *logLevel, c.stderr)
	if err != nil {
		return err
	}
	if err := applyMemoryLimit(fs, *memLimit, log); err != nil {
		return err
	}
	c.onRefused = newRefusalLog(log, time.Minute).note
	store, err := c.store()
	if err != nil {
		return err
	}
	hostname := *nodeName
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	d := &daemon{
		role:       *role,
		ipamSocket: *ipamSocket,
		log:        log,
		store:      store,
		view:       reconcile.NewView(store.SpecPrefix()),
		leaderOpts: state.LeaderOptions{
			SessionTTL: *sessionTTL,
			LockDelay:  *lockDelay,
			Value:      []byte(hostname),
		},
	}
	d.docker, err = engine.New(*dockerHost)
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	defer d.docker.Close()
	if *role == "manager" || *role == "all" {
		d.fenced = &fencedDocker{Docker: d.docker, log: log.With("controller", "leader")}
		d.cluster = cluster.New(cluster.Config{
			Store: store, Docker: d.fenced, View: d.view, Log: log.With("controller", "leader"),
			Workers: *workers, Resync: *resync, NodeDownGrace: *nodeDownGrace,
		})
		d.leader = d.cluster.Controller()
	}
	if err := d.initHTTP(api); err != nil {
		return err
	}
	if err := d.initGit(gitFlags, hostname); err != nil {
		return err
	}
	var ln, healthLn net.Listener
	if *listen != "" {
		if ln, err = net.Listen("tcp", *listen); err != nil {
			return fmt.Errorf("listen %s: %w", *listen, err)
		}
		defer ln.Close()
	}
	if d.cluster != nil {
		// The leader lock's session is bound to the local agent's check of
		// /healthz, so a manager always serves it: without --listen, alone
		// on a loopback port. The agent must share the host's network
		// (CONSUL_HTTP_ADDR is the local agent).
		checked, tls := ln, d.http.tls != nil
		if checked == nil {
			if healthLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				return fmt.Errorf("listen for the leader check: %w", err)
			}
			defer healthLn.Close()
			checked, tls = healthLn, false
		}
		d.leaderOpts.Check = &state.LeaderCheck{URL: healthURL(checked.Addr(), tls), Owner: hostname, TLSSkipVerify: true}
	}

	bi := readBuildInfo()
	log.Info("starting", "role", *role, "prefix", store.Prefix(), "listen", *listen, "version", bi.Version, "commit", bi.Commit)
	if !store.HasToken() {
		log.Info("no Consul token given (CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, --consul-token): with ACLs on, requests use the agent's default token or the anonymous one")
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return checkEngine(ctx, d.docker, log.With("check", "engine")) })
	if *role == "host" || *role == "all" {
		if err := d.startHost(ctx, g, *resync); err != nil {
			return err
		}
	}
	g.Go(func() error {
		return ignoreCanceled(reconcile.WatchSpec(ctx, store, d.view, d.http.metrics.watchOptions(store.SpecPrefix()), d.enqueue, log.With("watch", "spec")))
	})
	g.Go(func() error {
		select {
		case <-d.view.Synced():
			d.ready.Store(true)
			log.Info("spec view synced")
		case <-ctx.Done():
		}
		return nil
	})
	if *role == "manager" || *role == "all" {
		g.Go(func() error { return d.campaign(ctx) })
	}
	d.startUI(ctx, g, ui, ln, hostname)
	if ln != nil {
		d.log.Info("serving HTTP", "addr", ln.Addr().String(), "tls", d.http.tls != nil)
		g.Go(func() error { return d.serveHTTP(ctx, ln, d.httpHandler(), d.http.tls) })
	}
	if healthLn != nil {
		d.log.Info("serving /healthz for the leader check", "addr", healthLn.Addr().String())
		g.Go(func() error { return d.serveHTTP(ctx, healthLn, healthHandler(), nil) })
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

func (d *daemon) enqueue(ks []reconcile.Key) {
	if d.cluster != nil {
		d.cluster.Enqueue(ks)
	}
	if d.hostEnqueue != nil {
		d.hostEnqueue(ks)
	}
}

// campaign contends for the leader lock forever; while it holds the lock it
// runs the leader's controller under the leadership context.
func (d *daemon) campaign(ctx context.Context) error {
	bo := backoff.New(time.Second, 30*time.Second)
	for ctx.Err() == nil {
		lead, err := d.store.Campaign(ctx, d.leaderOpts)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait := bo.Next()
			d.log.Warn("campaign", "err", err, "retry_in", wait.Round(time.Millisecond))
			backoff.Sleep(ctx, wait)
			continue
		}
		bo.Reset()
		d.log.Info("leading", "session", lead.Session())
		d.logFirstReconcile()
		d.leading.Store(true)
		d.fenced.lead.Store(lead)
		stopGit := d.startGitSync(lead)
		err = d.cluster.Run(lead)
		stopGit()
		d.fenced.lead.Store(nil)
		d.leading.Store(false)
		if ctx.Err() != nil {
			// Shutting down: give the lock up now rather than after the
			// session TTL, so another manager takes over at once.
			lead.Resign()
			return nil
		}
		d.log.Warn("leadership lost", "err", err)
	}
	return nil
}

// logFirstReconcile logs the first reconcile of the leadership term that
// starts now: that line, not "leading", is when a new leader starts acting
// (a failover's length is read from it). It wraps whatever OnReconcile hook
// is set by then, once, so metrics keep theirs.
func (d *daemon) logFirstReconcile() {
	d.hookOnce.Do(func() {
		prev := d.leader.OnReconcile
		d.leader.OnReconcile = func(kind string, took time.Duration, err error) {
			if prev != nil {
				prev(kind, took, err)
			}
			if d.termStarted.CompareAndSwap(true, false) {
				d.log.Info("first reconcile as leader", "kind", kind, "took", took.Round(time.Microsecond), "err", err)
			}
		}
	})
	d.termStarted.Store(true)
}

// healthURL is the /healthz URL of a listener for the local agent's check:
// an unspecified address (":8480") is reached on loopback.
func healthURL(addr net.Addr, tls bool) string {
	host, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz"
}

// serveHTTP serves h on ln, over TLS when cfg is set, until ctx is done.
func (d *daemon) serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, cfg *tls.Config) error {
	addr := ln.Addr().String()
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("listen %s: %w", addr, err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	}
}

func newLogger(format, level string, w interface{ Write([]byte) (int, error) }) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: must be text or json, not %q", format)
}

// flagEnvPrefix starts the environment variable of every run flag:
// --session-ttl is SWARMVLAN_SESSION_TTL, so a stack file or a systemd
// environment file carries any setting. A flag on the command line wins.
const flagEnvPrefix = "SWARMVLAN_"

// flagEnv is the environment variable of flag name.
func flagEnv(name string) string {
	return flagEnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// flagsFromEnv sets every flag of fs whose variable is set, and names the
// variable in each flag's help (run -h shows the mapping). A value the
// flag refuses is an error naming the variable.
func flagsFromEnv(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := flagEnv(f.Name)
		f.Usage += " [$" + env + "]"
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("$%s (--%s): %q: %w", env, f.Name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
