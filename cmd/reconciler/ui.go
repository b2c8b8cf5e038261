package main

import (
	"context"
	"flag"
	"net"
	"net/http"
	"strings"

	"golang.org/x/sync/errgroup"

	"swarmvlan/reconcile/overview"
)

// uiFlags are the run flags of the dashboard.
type uiFlags struct {
	tokens *string
}

// registerUIFlags adds the dashboard's flags to run's flag set.
func registerUIFlags(fs *flag.FlagSet) *uiFlags {
	return &uiFlags{
		tokens: fs.String("ui-token", "", "tokens (comma-separated) that log in to the dashboard at / on --listen; without one, a loopback listener serves it to anyone and any other listener takes the scale API tokens, or serves no dashboard when there are none. Prefer the environment variable to the command line"),
	}
}

// startUI builds the dashboard served at / on ln (managers only) and runs
// its watches in g.
func (d *daemon) startUI(ctx context.Context, g *errgroup.Group, f *uiFlags, ln net.Listener, manager string) {
	if d.cluster == nil || ln == nil {
		return
	}
	var apiTokens = d.http.scale.tokens
	var uiTokens []string
	for _, t := range strings.Split(*f.tokens, ",") {
		if t = strings.TrimSpace(t); t != "" {
			uiTokens = append(uiTokens, t)
		}
	}
	access := overview.AccessFor(ln.Addr().String(), tokenDigests(uiTokens), apiTokens, d.http.tls != nil)
	if !access.Open && len(access.Tokens) == 0 {
		d.log.Warn("dashboard off: the listener is not on loopback and no token is set", "flag", "--ui-token")
	}
	src := overview.NewSource(d.store, manager, d.log.With("ui", "dashboard"))
	d.ui = overview.NewHandler(src, access)
	g.Go(func() error { return src.Run(ctx) })
}

// registerUI adds the dashboard's routes to mux, when it is served.
func (d *daemon) registerUI(mux *http.ServeMux) {
	if d.ui != nil {
		d.ui.Register(mux)
	}
}
