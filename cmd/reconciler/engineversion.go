package main

import (
	"context"
	"log/slog"
	"time"

	"swarmvlan/reconcile/engine"
	"swarmvlan/state/backoff"
)

// checkEngine asks the engine for its version until it answers, logs the
// version and the API negotiated, warns on an engine outside the tested
// range and returns an error for one the product refuses. An engine that
// does not answer yet is not an error: the roles wait for it as they do
// for any outage, and this check answers once it is back.
func checkEngine(ctx context.Context, d engine.Docker, log *slog.Logger) error {
	b := backoff.New(time.Second, time.Minute)
	for {
		v, err := d.ServerVersion(ctx)
		if err == nil {
			log.Info("docker engine", "version", v.Engine, "api", v.API, "api_max", v.MaxAPI, "api_min", v.MinAPI, "os", v.OS, "arch", v.Arch)
			warning, err := engine.Support(v.Engine)
			if warning != "" {
				log.Warn(warning)
			}
			return err
		}
		if b.Attempts() == 0 {
			log.Warn("docker engine not answering yet; its version is logged once it does", "err", err)
		}
		if !backoff.Sleep(ctx, b.Next()) {
			return nil
		}
	}
}
