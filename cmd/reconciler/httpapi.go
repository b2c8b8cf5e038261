package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
)

// httpAPI is what the daemon serves over HTTP besides its health: the
// metrics and, on managers, the scale API.
type httpAPI struct {
	metrics *metrics
	// scale is nil for --role host: only managers take scale requests.
	scale *scaleAPI
	// tls is nil when serving plain HTTP.
	tls *tls.Config
	// pprof serves Go's profiles under /debug/pprof/ (--pprof).
	pprof bool
}

// apiFlags are the run flags of the HTTP API.
type apiFlags struct {
	tokenFile, tlsCert, tlsKey             *string
	alertServiceLabel, alertDirectionLabel *string
	pprof                                  *bool
}

// registerAPIFlags adds the HTTP API's flags to run's flag set.
func registerAPIFlags(fs *flag.FlagSet) *apiFlags {
	return &apiFlags{
		tokenFile:           fs.String("token-file", "", "file of scale API bearer tokens, one per line (# comments); also $"+tokensEnv+", comma-separated. Without any token, scaling over HTTP is disabled"),
		tlsCert:             fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM), with --tls-key"),
		tlsKey:              fs.String("tls-key", "", "private key (PEM) of --tls-cert"),
		alertServiceLabel:   fs.String("alert-service-label", "swarmvlan_service", "Alertmanager alert label naming the service to scale"),
		alertDirectionLabel: fs.String("alert-direction-label", "swarmvlan_direction", "Alertmanager alert label holding up or down"),
		pprof:               fs.Bool("pprof", false, "serve Go's runtime profiles (CPU, heap, goroutines) under /debug/pprof/ on --listen, without authentication: for a trusted network or a loopback listener"),
	}
}

// initHTTP builds the metrics and the scale API and hooks the metrics into
// the leader's controller. It fails on unreadable token or TLS files, so a
// misconfigured daemon stops at start rather than refusing every request.
func (d *daemon) initHTTP(f *apiFlags) error {
	m := newMetrics(d.store, d.leading.Load)
	if d.leader != nil {
		d.leader.OnReconcile = m.observeReconcile
		d.leader.OnQueueDepth = m.queueDepthFunc("leader")
	}
	if d.docker != nil {
		m.setDocker(d.docker)
	}
	h := &httpAPI{metrics: m, pprof: *f.pprof}
	if (*f.tlsCert == "") != (*f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key: give both or neither")
	}
	if *f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*f.tlsCert, *f.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert, --tls-key: %w", err)
		}
		h.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if d.role == "manager" || d.role == "all" {
		tokens, err := loadAPITokens(*f.tokenFile, os.Getenv(tokensEnv))
		if err != nil {
			return err
		}
		if len(tokens) == 0 {
			d.log.Warn("no API token configured: scaling over HTTP is disabled", "flag", "--token-file", "env", tokensEnv)
		}
		h.scale = &scaleAPI{
			store:          d.store,
			view:           d.view,
			log:            d.log.With("api", "scale"),
			metrics:        m,
			tokens:         tokenDigests(tokens),
			serviceLabel:   *f.alertServiceLabel,
			directionLabel: *f.alertDirectionLabel,
		}
	}
	d.http = h
	return nil
}

// healthz answers the liveness probe, which is also the local Consul
// agent's leader check: a leader that stops answering it loses the lock.
func healthz(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintln(w, "ok")
}

// healthHandler serves /healthz alone, for a manager without --listen.
func healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	return mux
}

// httpHandler routes /healthz, /readyz, /metrics and, on managers, the
// scale API under /v1/.
func (d *daemon) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !d.ready.Load() {
			http.Error(w, "spec view not yet read from Consul", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok (leader: %v)\n", d.leading.Load())
	})
	mux.Handle("GET /metrics", d.http.metrics.handler())
	if d.http.scale != nil {
		mux.Handle("/v1/", d.http.scale.handler())
	}
	d.gitRoutes(mux)
	d.registerUI(mux)
	if d.http.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
