// Command reconciler is swarmvlan's one binary: the daemon (run) that
// converges Docker, the kernel and Consul toward the documents in Consul KV,
// and the operator commands that write, compare and read those documents.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"swarmvlan/state"
)

const usage = `reconciler: declarative macvlan networking for Docker Swarm, driven by Consul KV

Usage:
  reconciler run      [--role manager|host|all] [--listen ADDR]   the daemon
  reconciler validate -f PATH...                                  check documents, list every problem
  reconciler apply    -f PATH... [--prune] [--allow-empty] [--dry-run]
  reconciler diff     -f PATH...                                  what apply would change (shows hand edits too)
  reconciler get      KIND [NAME]                                 print documents from KV
  reconciler delete   KIND NAME                                   delete a document
  reconciler status                                               every object and its status
  reconciler scale    SERVICE up|down|N [--reason TEXT]           scale within spec.scaling, as the scale API does
  reconciler plan     [VLAN] [-f PATH]... [-o table|json]         range plan now and as it would be; writes nothing
  reconciler version  [-o text|json] [--client]                   build, Go and Docker Engine versions
  reconciler probe    [--url URL]                                 exit 0 if a daemon's health URL answers 200 (container health checks)
  reconciler acl-policy --role manager|host|operator|gitops [--service-prefix S] the Consul ACL policy a role needs (HCL)
  reconciler convert  -f compose.yml [-f override.yml]... [--vlan NETWORK[=VLAN]]... [-o DIR] [--strict]
                                                                  Service documents from compose files; keys that do not map to stderr
  reconciler adopt    [--dry-run] [--vlan-name-from config|swarm]  take a hand-made setup over as it is: documents and records

PATH is a file, a directory (every .yaml, .yml and .json in it) or - for stdin.
KIND is vlan, service or host (or their plurals).

Consul is found through its standard environment (CONSUL_HTTP_ADDR,
CONSUL_HTTP_TOKEN, CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT,
CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, ...) or the flags --consul-addr
(https://HOST:PORT implies TLS) and --consul-token. Every command takes --prefix (default swarmvlan/, or
SWARMVLAN_PREFIX).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := runMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitError carries an exit code without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func runMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmds := map[string]func(context.Context, *cli, []string) error{
		"run":        cmdRun,
		"validate":   cmdValidate,
		"apply":      cmdApply,
		"diff":       cmdDiff,
		"get":        cmdGet,
		"delete":     cmdDelete,
		"status":     cmdStatus,
		"scale":      cmdScale,
		"plan":       cmdPlan,
		"version":    cmdVersion,
		"probe":      cmdProbe,
		"acl-policy": cmdACLPolicy,
		"convert":    cmdConvert,
		"adopt":      cmdAdopt,
	}
	fn, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "reconciler: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	c := &cli{name: args[0], stdin: stdin, stdout: stdout, stderr: stderr}
	err := fn(ctx, c, args[1:])
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintf(stderr, "reconciler %s: %v\n", args[0], err)
		return 1
	}
}

// cli holds what every command shares: streams and the Consul flags.
type cli struct {
	name           string
	stdin          io.Reader
	stdout, stderr io.Writer

	prefix, consulAddr, consulToken, datacenter string
	// onRefused, if set, is the store's Config.OnRefused.
	onRefused func(error)
}

// flags returns a flag set with the common Consul flags registered.
func (c *cli) flags() *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	prefix := os.Getenv("SWARMVLAN_PREFIX")
	if prefix == "" {
		prefix = "swarmvlan/"
	}
	fs.StringVar(&c.prefix, "prefix", prefix, "Consul KV prefix of swarmvlan's keys")
	fs.StringVar(&c.consulAddr, "consul-addr", "", "Consul HTTP address (default: CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	fs.StringVar(&c.consulToken, "consul-token", "", "Consul ACL token (default: CONSUL_HTTP_TOKEN)")
	fs.StringVar(&c.datacenter, "datacenter", "", "Consul datacenter (default: the agent's)")
	return fs
}

func (c *cli) store() (*state.Store, error) {
	return state.New(state.Config{Prefix: c.prefix, Address: c.consulAddr, Token: c.consulToken, Datacenter: c.datacenter, OnRefused: c.onRefused})
}

// stringList is a repeatable string flag (-f a -f b).
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// parse parses args, allowing flags after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
